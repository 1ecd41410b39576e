"""The HiGHS back end (highspy 1.16): pass the arrays whole, stop as soon as the sign is known.

Verdict rules (docs/METHOD.md §5.5 and §5.7), for ``min margin`` with a cutoff at ``tol``:

* ``robust`` only from the final status of a finished solve: *Infeasible* under the cutoff (no
  point has margin below ``tol``), or *Optimal* with objective ``> tol`` (the tree was exhausted
  under the cutoff; with ``cutoff=None``, the proven dual bound must also exceed ``tol``).  Never
  from an interrupted or timed-out solve, never from "objective bound reached", never at exactly 0.
* ``counterexample`` whenever the solver returns a primal point with objective ``< 0`` (the caller
  validates it in float64 against the torch model).  The early stop uses the option
  ``objective_target = 0`` (measured: HiGHS stops at the first incumbent strictly below it, and the
  target includes the objective offset); it needs no Python callback in the solver loop.
* ``timeout`` when the time limit ended the solve without either; ``unknown`` otherwise.

A cutoff (``objective_bound``) invalidates HiGHS's reported dual bound as a bound on the true
minimum (measured: a completed solve reported a dual bound of 1.6 for a true minimum of 2e-6), but
``min(dual bound, cutoff)`` stays valid; that is what ``objective_bound`` reports.
"""
from __future__ import annotations

import dataclasses
import math
import time

import highspy
import numpy as np

from . import COUNTEREXAMPLE, ROBUST, TIMEOUT, UNKNOWN, SolveResult
from .encode import MilpArrays, assignment_violation, complete_assignment
from .quiet import new_highs

_MS = highspy.HighsModelStatus
_CUTOFF_DEFAULT = object()  # sentinel: "use tol as the cutoff"


def _options(h: highspy.Highs, time_limit: float, seed: int, cutoff, is_mip: bool,
             stop_on_negative: bool, feasibility_tol: float | None = None) -> None:
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)  # parallelism is across inputs (docs/ARCHITECTURE.md)
    h.setOptionValue("random_seed", int(seed))
    h.setOptionValue("time_limit", float(max(time_limit, 0.0)))
    if feasibility_tol is not None:
        h.setOptionValue("primal_feasibility_tolerance", float(feasibility_tol))
        h.setOptionValue("mip_feasibility_tolerance", float(feasibility_tol))
    if not is_mip:
        # For an LP, objective_bound/objective_target are simplex stopping rules whose status
        # ("objective bound reached") docs/METHOD.md §5.7 does not accept as a proof: solve it plainly.
        return
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 0.0)
    # HiGHS 1.16's feasibility-jump heuristic runs before the root LP without looking at the clock:
    # on a plain-trained CIFAR-10 net at eps 1/255 (988k nonzeros, 1,180 binaries) a 10 s limit
    # ended after 46 s, 30 of them in that heuristic; without it, after 11 s. The MILPs here have
    # trivially feasible points (any input's forward pass), so it finds nothing the search does not.
    h.setOptionValue("mip_heuristic_run_feasibility_jump", False)
    if cutoff is not None:
        h.setOptionValue("objective_bound", float(cutoff))
    if stop_on_negative:
        h.setOptionValue("objective_target", 0.0)


def _pass_arrays(h: highspy.Highs, milp: MilpArrays) -> None:
    A = milp.A.tocsc()
    A.sort_indices()
    status = h.passModel(
        int(milp.n_cols), int(milp.n_rows), int(A.nnz),
        int(highspy.MatrixFormat.kColwise), int(highspy.ObjSense.kMinimize), float(milp.offset),
        np.ascontiguousarray(milp.c, dtype=np.float64),
        np.ascontiguousarray(milp.col_lower, dtype=np.float64),
        np.ascontiguousarray(milp.col_upper, dtype=np.float64),
        np.ascontiguousarray(milp.row_lower, dtype=np.float64),
        np.ascontiguousarray(milp.row_upper, dtype=np.float64),
        A.indptr.astype(np.int32), A.indices.astype(np.int32),
        np.ascontiguousarray(A.data, dtype=np.float64),
        np.ascontiguousarray(milp.integrality, dtype=np.int32))
    if status == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS rejected the MILP arrays (passModel returned kError)")


def _run(h: highspy.Highs):
    status = h.run()
    if status == highspy.HighsStatus.kError and h.getModelStatus() == _MS.kNotset:
        # The process-wide HiGHS scheduler was first started with another thread count (e.g. by a
        # bounds LP with threads=0); HiGHS refuses threads=1 until that scheduler is dropped.
        highspy.Highs.resetGlobalScheduler(True)
        status = h.run()
    return status


def _seed(h: highspy.Highs, milp: MilpArrays, seed_point) -> None:
    values = complete_assignment(milp, seed_point)
    h.setSolution(int(milp.n_cols), np.arange(milp.n_cols, dtype=np.int32), values)


def _primal(h: highspy.Highs, milp: MilpArrays):
    """(objective, input point) of the solver's best primal solution, or (None, None)."""
    info = h.getInfo()
    if info.primal_solution_status != int(highspy.SolutionStatus.kSolutionStatusFeasible):
        return None, None
    values = np.asarray(h.getSolution().col_value, dtype=np.float64)
    # The objective of the values actually returned: after setSolution, HiGHS 1.16 was seen to
    # report an improved objective alongside the seed's column values.
    return float(milp.objective(values)), milp.input_point(values)


def _verdict(model_status, objective, proven_bound, tol: float, cut_at_tol: bool) -> str:
    if objective is not None and objective < 0:
        return COUNTEREXAMPLE
    if model_status == _MS.kInfeasible:
        # Infeasible only proves robustness when the cutoff made it so.
        return ROBUST if cut_at_tol else UNKNOWN
    if model_status == _MS.kOptimal and objective is not None and objective > tol:
        # Under the cutoff the finished tree held nothing below tol; without it the proven bound
        # itself must clear tol.
        return ROBUST if cut_at_tol or (proven_bound is not None and proven_bound > tol) else UNKNOWN
    if model_status == _MS.kTimeLimit:
        return TIMEOUT
    return UNKNOWN


def _proven_bound(model_status, dual_bound: float, objective, cutoff, is_mip: bool):
    """A lower bound on the true minimum that the solver's final state supports, or None."""
    if not is_mip:
        return objective if model_status == _MS.kOptimal else None
    if cutoff is not None:
        # Nodes pruned by the cutoff held nothing below it, so min(dual, cutoff) stays valid.
        if model_status in (_MS.kInfeasible, _MS.kOptimal, _MS.kTimeLimit, _MS.kObjectiveTarget):
            return float(min(dual_bound, cutoff)) if not math.isnan(dual_bound) else None
        return None
    if model_status in (_MS.kOptimal, _MS.kTimeLimit, _MS.kObjectiveTarget) and math.isfinite(dual_bound):
        return float(dual_bound)
    return None


def _bounds_hold(milp: MilpArrays, x) -> bool:
    """Whether the encoding admits the network's own assignment at ``x`` (default: the box centre).

    An Infeasible status under the cutoff proves robustness only if the MILP without the cutoff
    is feasible; invalid pre-activation bounds would make it infeasible and fake a proof.  This
    one-point check costs a forward pass and catches bounds that exclude that point."""
    if milp.network is None:
        return True
    if x is None:
        x = (milp.col_lower[milp.input_cols] + milp.col_upper[milp.input_cols]) / 2
    values = complete_assignment(milp, x)
    return assignment_violation(milp, values) <= 1e-6 * (1.0 + float(np.max(np.abs(values), initial=0.0)))


def lp_relaxation(milp: MilpArrays) -> MilpArrays:
    """``milp`` with every binary relaxed to the interval [0, 1]."""
    return dataclasses.replace(milp, integrality=np.zeros_like(milp.integrality), n_binaries=0)


def run_lp(lp: MilpArrays, time_limit: float | None = None) -> highspy.Highs:
    """HiGHS after solving the LP ``lp`` (no integrality) within ``time_limit`` seconds, for the
    caller to read its status, primal and duals."""
    h = new_highs()
    _options(h, 1e9 if time_limit is None else max(time_limit, 1e-3), 0, None, False, False)
    _pass_arrays(h, lp)
    _run(h)
    return h


def solve_lp_relaxation(milp: MilpArrays, time_limit: float | None = None) -> np.ndarray | None:
    """The column values of an optimal point of ``milp``'s LP relaxation (binaries in [0, 1]), or
    None when HiGHS does not reach optimality within ``time_limit`` seconds."""
    h = run_lp(lp_relaxation(milp), time_limit)
    if h.getModelStatus() != _MS.kOptimal:
        return None
    return np.asarray(h.getSolution().col_value, dtype=np.float64)


def solve_highs(milp: MilpArrays, time_limit: float, tol: float = 1e-6, seed_point=None,
                stop_on_negative: bool = True, cutoff=_CUTOFF_DEFAULT, random_seed: int = 0,
                feasibility_tol: float | None = None) -> SolveResult:
    """Decide the sign of ``min milp`` with HiGHS within ``time_limit`` seconds.

    ``cutoff`` defaults to ``tol`` (prune everything that cannot go below ``tol``); ``None``
    solves to optimality (used to check the encoding against brute force).  ``seed_point`` is an
    input point, completed to a full assignment by the network's forward pass and offered as
    the first incumbent.  ``feasibility_tol`` overrides HiGHS's primal/MIP feasibility tolerances
    (default 1e-6): rows may be violated by that much, which can lower the optimum by about as
    much — conservative for "robust", and counterexamples are validated by the caller anyway.
    """
    if cutoff is _CUTOFF_DEFAULT:
        cutoff = tol
    is_mip = milp.n_binaries > 0
    start = time.perf_counter()
    h = new_highs()
    _options(h, time_limit, random_seed, cutoff, is_mip, stop_on_negative, feasibility_tol)
    _pass_arrays(h, milp)
    if seed_point is not None and is_mip:
        _seed(h, milp, seed_point)
    _run(h)
    model_status = h.getModelStatus()
    objective, x = _primal(h, milp)
    dual_bound = float(h.getInfo().mip_dual_bound) if is_mip else math.nan
    proven = _proven_bound(model_status, dual_bound, objective, cutoff, is_mip)
    cut_at_tol = is_mip and cutoff is not None and cutoff >= tol
    status = _verdict(model_status, objective, proven, tol, cut_at_tol)
    solver_status = h.modelStatusToString(model_status)
    if status == ROBUST and not _bounds_hold(milp, seed_point):
        status, proven = UNKNOWN, None
        solver_status += " (but the bounds exclude the network's own point: invalid bounds)"
    return SolveResult(
        status=status,
        objective_value=objective,
        objective_bound=proven,
        x=x,
        solve_time=time.perf_counter() - start,
        solver_status=solver_status,
    )
