"""The reference back end: the same MilpArrays through PuLP (CBC by default, any PuLP solver by name).

PuLP cannot prune at a cutoff portably, so the MILP is solved to optimality within the time limit.
Verdicts follow docs/METHOD.md §5.5: ``robust`` only when PuLP reports a proven optimum
(``sol_status == LpSolutionOptimal``, not merely ``status == Optimal``: CBC's "Stopped on time"
with an incumbent is reported as status Optimal / sol_status IntegerFeasible) whose objective
exceeds ``tol``; ``counterexample`` when any returned solution has objective ``< 0``.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pulp

from .. import HamverifyError
from . import COUNTEREXAMPLE, ROBUST, TIMEOUT, UNKNOWN, SolveResult
from .encode import MilpArrays

_HAS_SOLUTION = (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)


def make_solver(solver_name: str, time_limit: float):
    """A PuLP solver instance by name, or HamverifyError naming the available ones."""
    available = pulp.listSolvers(onlyAvailable=True)
    limit = max(float(time_limit), 0.01)
    try:
        with warnings.catch_warnings():
            # PuLP 3.3 flags its bundled CBC (our default) as deprecated in favour of PuLP 4.0's
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                solver = pulp.getSolver(solver_name, msg=False, timeLimit=limit, gapRel=0.0, gapAbs=0.0)
            except TypeError:  # a solver class without gap options: its defaults then
                solver = pulp.getSolver(solver_name, msg=False, timeLimit=limit)
    except pulp.PulpSolverError:
        solver = None
    if solver is None or not solver.available():
        raise HamverifyError(f"PuLP solver {solver_name!r} is not available; available: {', '.join(available)}")
    return solver


def _variables(prob: pulp.LpProblem, milp: MilpArrays) -> list:
    lower = [None if not np.isfinite(v) else float(v) for v in milp.col_lower]
    upper = [None if not np.isfinite(v) else float(v) for v in milp.col_upper]
    cats = [pulp.LpInteger if flag else pulp.LpContinuous for flag in milp.integrality]
    return [prob.add_variable(f"v{j}", lower[j], upper[j], cats[j]) for j in range(milp.n_cols)]


def _row_expressions(milp: MilpArrays, variables: list):
    A = milp.A.tocsr()
    for i in range(milp.n_rows):
        span = slice(A.indptr[i], A.indptr[i + 1])
        terms = zip((variables[j] for j in A.indices[span]), A.data[span].tolist())
        yield pulp.LpAffineExpression(list(terms)), float(milp.row_lower[i]), float(milp.row_upper[i])


def build_problem(milp: MilpArrays) -> tuple[pulp.LpProblem, list]:
    """The PuLP model of ``milp`` and its variables (column order)."""
    prob = pulp.LpProblem("hamverify_margin", pulp.LpMinimize)
    variables = _variables(prob, milp)
    nz = np.flatnonzero(milp.c)
    prob.setObjective(pulp.LpAffineExpression([(variables[j], float(milp.c[j])) for j in nz],
                                              constant=float(milp.offset)))
    for expr, lo, up in _row_expressions(milp, variables):
        if lo == up:
            prob.addConstraint(pulp.LpConstraint(expr, pulp.LpConstraintEQ, rhs=lo))
            continue
        if np.isfinite(lo):
            prob.addConstraint(pulp.LpConstraint(expr, pulp.LpConstraintGE, rhs=lo))
        if np.isfinite(up):
            prob.addConstraint(pulp.LpConstraint(expr, pulp.LpConstraintLE, rhs=up))
    return prob, variables


def _verdict(status: int, sol_status: int, objective, tol: float, elapsed: float, time_limit: float) -> str:
    if objective is not None and objective < 0:
        return COUNTEREXAMPLE
    if sol_status == pulp.LpSolutionOptimal and status == pulp.LpStatusOptimal:
        return ROBUST if objective is not None and objective > tol else UNKNOWN
    if status in (pulp.LpStatusInfeasible, pulp.LpStatusUnbounded):
        return UNKNOWN  # without a cutoff an infeasible MILP means invalid bounds, not robustness
    return TIMEOUT if elapsed >= time_limit else UNKNOWN


def solve_pulp(milp: MilpArrays, time_limit: float, tol: float = 1e-6,
               solver_name: str = "PULP_CBC_CMD") -> SolveResult:
    """Solve ``min milp`` to optimality with a PuLP solver and return the shared verdict."""
    solver = make_solver(solver_name, time_limit)
    start = time.perf_counter()
    prob, variables = build_problem(milp)
    solve_start = time.perf_counter()
    prob.solve(solver)
    elapsed = time.perf_counter() - solve_start
    objective, x = None, None
    if prob.sol_status in _HAS_SOLUTION:
        values = np.array([np.nan if v.varValue is None else v.varValue for v in variables], dtype=np.float64)
        if np.all(np.isfinite(values)):
            objective, x = milp.objective(values), milp.input_point(values)
    proven_optimal = prob.sol_status == pulp.LpSolutionOptimal and prob.status == pulp.LpStatusOptimal
    return SolveResult(
        status=_verdict(prob.status, prob.sol_status, objective, tol, elapsed, time_limit),
        objective_value=objective,
        objective_bound=objective if proven_optimal else None,
        x=x,
        solve_time=time.perf_counter() - start,
        solver_status=f"{pulp.LpStatus[prob.status]} / {pulp.LpSolution[prob.sol_status]}",
    )
