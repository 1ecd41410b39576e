"""Deciding VNN-COMP instances (an ONNX network and a VNN-LIB property), one or a batch.

The property is violated (``sat``) iff some input ``x`` in a disjunct's box makes the network's
outputs satisfy that disjunct's rows ``C y <= d``.  Per input box (:class:`~hamverify.vnnlib.Region`):

0. a network whose output does not depend on the input (an affine map with zero weights, e.g. an
   ONNX graph with a constant output) is evaluated once at the box centre: ``sat`` if that point is
   a validated counterexample, ``unsat`` if every disjunct's largest row exceeds ``d + tol``;
1. then the cascade of ``verify`` (:mod:`hamverify.cascade`), one objective per disjunct (its
   largest violation ``max_r (C y - d)_r``): *bounds* (symbolic; a disjunct is proven infeasible
   when the sound lower bound of one of its rows exceeds ``d + tol``; rows whose sound upper
   bounds are <= 0 on the whole box give a sat point) -> *attack* (margin PGD with the APGD-like
   schedule of :class:`~hamverify.attacks.MarginPGD` on every open disjunct's violation) ->
   *alpha* (alpha-CROWN) and *bab* (branch and bound), when every open disjunct is one row
   ``c (Y_label - Y_j) <= d`` -> *milp*;
2. MILP (HiGHS) for the rest: the network's Tjeng et al. encoding over the box plus a column ``t``
   with ``C y - d <= t`` for the disjunct's rows, minimizing ``t`` under the cutoff ``tol``:
   *robust* (a final solver status, see :func:`hamverify.milp.highs.solve_highs`) proves the
   disjunct infeasible; a point with ``t < 0`` is a candidate counterexample.

``mode="disjunction"`` (the default) puts all of a box's open disjuncts into one MILP with a binary
per disjunct (``sum_k s_k = 1``, rows ``C_k y - d_k <= t + M_k (1 - s_k)``, big-M from the bounds);
``mode="per-disjunct"`` solves one MILP per disjunct, the least constrained first.  Measured with
``benchmarks/vnnlib_modes.py`` (2 cores, both modes alternated in one process, 60 s timeout) on
VNN-COMP-style MNIST robustness instances (9 one-row disjuncts "Y_j >= Y_label" per image) of
small trained MLPs, counting only instances that reached the MILP:

=====================  =========  ======================  ======================
network, eps           instances  per-disjunct: total s   disjunction: total s
                                  (timeouts at 60 s)      (timeouts at 60 s)
=====================  =========  ======================  ======================
784-64-64-10, 0.03     5          8.2                     7.9
784-64-64-10, 0.04     3          61.7 (hardest 48.1)     25.6 (hardest 13.5)
784-64-64-10, 0.05     2          60.7 (1 timeout)        60.7 (1 timeout)
784-100-100-10, 0.035  5          175.2 (2 timeouts)      137.7 (1 timeout)
=====================  =========  ======================  ======================

(Times are whole instances: PGD, bounds, encoding and solves.)  The joint MILP was at most ~10%
slower on the easy instances and up to 3.5x faster on the hard ones, where it also decided one
instance the other mode timed out on: one branch-and-bound tree over the shared ReLU binaries
replaces one tree per disjunct, each branching on them again.

Soundness rules: ``sat`` only with a counterexample that (a) lies in the box in float32 (it is
rounded to float32 values inside the box, which are what gets reported), (b) satisfies every row of
its disjunct on the float64 IR (``C y <= d``), and (c) satisfies them on onnxruntime's float32
output within ``ORT_ATOL``.  ``unsat`` only when every disjunct of every box is proven infeasible by
sound bounds (symbolic, alpha-CROWN), by a BaB that proved every subdomain, or by a final solver
status.  Anything else is ``timeout`` (the budget ran out) or ``unknown``.

torch, onnx, onnxruntime and highspy are imported only where they are used, so that a process
deciding one instance starts fast (``benchmarks/startup.py``).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import os
import pathlib
import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import HamverifyError
from . import cascade
from .cascade import DEFAULT_STAGE_NAMES, Budget, CascadeConfig, Found, Outcome, parse_stages
from .vnnlib import Region, VnnlibSpec, parse_vnnlib

RESULTS = ("sat", "unsat", "timeout", "unknown", "error")
MODES = ("disjunction", "per-disjunct")
ORT_ATOL = 1e-5  # float32 onnxruntime outputs may exceed a row by this much (float64 may not at all)
PGD_BATCH = 256  # PGD starting points per box (at most), spread over its disjuncts
PGD_WORK = 2e8  # multiply-adds per PGD step: fewer starting points for larger networks
PGD_SHARE = 0.1  # of the remaining budget, at most, for the falsification stage (at least 1 s)
PGD_STEPS = 100
POLISH_STEPS = 60  # margin PGD steps from a solver's point


@dataclass
class InstanceResult:
    result: str  # one of RESULTS
    time: float = 0.0
    x: np.ndarray | None = None  # counterexample (flat, float32 values), sat only
    y: np.ndarray | None = None  # onnxruntime's outputs at x, sat only
    reason: str = ""
    decided_by: str = ""  # constant | trivial | bounds | attack | alpha | bab | milp
    milp_solves: int = 0
    stage_times: dict = dataclasses.field(default_factory=dict)  # seconds per cascade stage, all boxes

    def vnncomp_text(self) -> str:
        """VNN-COMP's result file: ``unsat``/``timeout``/``unknown``, or ``sat`` and the assignment."""
        if self.result != "sat":
            return self.result + "\n"
        lines = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.x)]
        lines += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(self.y)]
        return "sat\n(" + "\n ".join(lines) + ")\n"


# ----------------------------------------------------------------------------------- counterexamples

def float32_in_box(x, lo, hi) -> np.ndarray | None:
    """``x`` rounded to float32 values inside [lo, hi] (as float64), or None if none exist there."""
    x = np.clip(np.asarray(x, dtype=np.float64).ravel(), lo, hi)
    x32 = x.astype(np.float32)
    up = x32.astype(np.float64) > hi
    x32[up] = np.nextafter(x32[up], np.float32(-np.inf))
    down = x32.astype(np.float64) < lo
    x32[down] = np.nextafter(x32[down], np.float32(np.inf))
    out = x32.astype(np.float64)
    return out if np.all((out >= lo) & (out <= hi)) else None


def _violation_module(module, disjuncts):
    """A torch module whose output ``[0, -v_0, ..., -v_{K-1}]`` turns each disjunct's largest
    violation ``v_k = max_r (C_k y - d_k)_r`` into the margin ``z_0 - z_{k+1}`` that
    :class:`~hamverify.attacks.MarginPGD` minimizes (label 0, target k + 1); padded rows are
    ``-inf``, never the max."""
    import torch

    K = len(disjuncts)
    rmax = max(1, max(C.shape[0] for C, _ in disjuncts))
    m = disjuncts[0][0].shape[1] if disjuncts[0][0].ndim == 2 else 0
    Cp = np.zeros((K, rmax, m))
    dp = np.full((K, rmax), np.inf)
    for k, (C, d) in enumerate(disjuncts):
        Cp[k, :C.shape[0]], dp[k, :C.shape[0]] = C, d
    dtype = next(module.parameters()).dtype

    class Violations(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = module
            self.register_buffer("C", torch.from_numpy(Cp).to(dtype))
            self.register_buffer("d", torch.from_numpy(dp).to(dtype))

        def forward(self, x):
            y = self.net(x.reshape(x.shape[0], -1))
            v = (torch.einsum("krm,bm->bkr", self.C, y) - self.d).max(dim=2).values
            return torch.cat([torch.zeros_like(v[:, :1]), -v], dim=1)

    return Violations().eval()


class Checker:
    """Evaluates an imported ONNX network in float64 (IR) and float32 (onnxruntime); the torch
    copies and the onnxruntime session are built on first use (a proof by the bounds needs neither)."""

    def __init__(self, imported, proto):
        self.imported = imported
        self.proto = proto
        self.net = imported.net
        self._session = None
        self._modules = None
        self.weights = sum(int(np.prod(a.W.shape)) for a in self.net.affines)  # dense entries

    @property
    def session(self):
        if self._session is None:
            from .onnx_io import onnx_session
            self._session = onnx_session(self.proto)
        return self._session

    def torch_modules(self):
        """(float32, float64) torch copies of the IR, without gradients on the weights."""
        if self._modules is None:
            from .ir_module import IRModule
            m64 = IRModule(self.net).eval()
            m32 = IRModule(self.net).float().eval()
            for m in (m32, m64):
                for p in m.parameters():
                    p.requires_grad_(False)
            self._modules = (m32, m64)
        return self._modules

    @property
    def module(self):
        return self.torch_modules()[1]

    def ort(self, x: np.ndarray) -> np.ndarray:
        from .onnx_io import onnx_run
        return onnx_run(self.session, np.asarray(x).reshape(self.imported.input_dims)).astype(np.float64).ravel()

    def validate(self, x, lo, hi, C, d) -> tuple[np.ndarray, np.ndarray] | None:
        """(x in float32 values, onnxruntime outputs) if ``x`` is a real counterexample, else None."""
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float64).ravel()
        if not np.all(np.isfinite(x)):
            return None
        p = float32_in_box(x, lo, hi)
        if p is None:
            return None
        if C.shape[0] and np.max(C @ self.net.forward(p)[0] - d) > 0:
            return None
        y = self.ort(p)
        if C.shape[0] and np.max(C @ y - d) > ORT_ATOL:
            return None
        return p, y

    def attack(self, lo, hi, disjuncts, starts=None, steps: int = PGD_STEPS, seed: int = 0,
               deadline: float = np.inf) -> list[tuple[int, np.ndarray, float]]:
        """Margin PGD (MarginPGD's APGD-like schedule, every disjunct a target, restarts batched)
        minimizing each disjunct's largest violation; returns [(k, x, violation)], best first
        (the violation in float64 on the IR; the caller validates the point).

        ``starts``: optional [(k, x)] starting points (e.g. a solver's point to polish): then no
        random restarts, each start tried for every disjunct."""
        import torch

        from .attacks import MarginPGD
        K = len(disjuncts)
        if K == 0:
            return []
        m32, m64 = self.torch_modules()
        model, model64 = _violation_module(m32, disjuncts), _violation_module(m64, disjuncts)
        if starts:
            start_points = np.stack([np.clip(np.asarray(p, dtype=np.float64).ravel(), lo, hi) for _, p in starts])
            start_points = np.where(np.isfinite(start_points), start_points, (lo + hi) / 2)
            restarts = 0
        else:
            batch = int(min(PGD_BATCH, max(K, PGD_WORK // max(self.weights, 1))))
            restarts = max(1, batch // K - 1)
            start_points = ((lo + hi) / 2)[None]  # the centre, besides the random restarts
        gen = torch.Generator().manual_seed(int(seed))
        attack = MarginPGD(steps=steps, restarts=restarts, generator=gen, stop_margin=1e-4)
        res = attack.attack_box(model, lo, hi, 0, targets=list(range(1, K + 1)), starts=start_points,
                                deadline=None if not np.isfinite(deadline) else deadline,
                                input_shape=(len(lo),), model64=model64)
        if res.point is None or res.target is None:
            return []
        point = np.asarray(res.point, dtype=np.float64).ravel()
        y = self.net.forward(point)[0]
        out = []
        for k, (C, d) in enumerate(disjuncts):
            v = float(np.max(C @ y - d, initial=-np.inf))
            out.append((k, point, v))
        out.sort(key=lambda t: t[2])
        return out


# ----------------------------------------------------------------------------------------- MILPs

def _pad_cols(M, n):
    M = sp.csr_matrix(M)
    return sp.csr_matrix((M.data, M.indices, M.indptr), shape=(M.shape[0], n))


def spec_milp(base, logits, disjuncts, lower, upper):
    """The base encoding plus ``t`` and the disjunct rows; objective ``min t``.

    One disjunct: rows ``C y - d <= t``.  Several: one binary ``s_k`` per disjunct, ``sum s = 1``
    and ``C_k y - d_k <= t + M_k (1 - s_k)``.  ``lower``/``upper``: per disjunct, sound bounds of
    ``C_k y - d_k`` over the box (``t >= max_k... `` bounds and big-M values come from them).
    The result carries no network (solve_highs then neither seeds nor re-checks the bounds; the
    caller checks the base encoding at the box centre itself)."""
    n0 = base.n_cols
    K = len(disjuncts)
    t_col = n0
    n = n0 + 1 + (K if K > 1 else 0)
    # t >= max_r (C y - d)_r for the chosen disjunct >= the smallest of the disjuncts' row maxima
    t_lo = float(min(np.max(lo, initial=-np.inf) for lo in lower))
    if K > 1 and not (np.isfinite(t_lo) and all(np.isfinite(u).all() for u in upper)):
        raise HamverifyError("the disjunction's big-M values need finite bounds")
    blocks, rlo, rhi = [_pad_cols(base.A, n)], [base.row_lower], [base.row_upper]
    for k, (C, d) in enumerate(disjuncts):
        r = C.shape[0]
        CL = _pad_cols(sp.csr_matrix(C) @ logits.matrix, n).tolil()
        CL[:, t_col] = -1.0
        rhs = d - C @ logits.constant
        if K > 1:
            big_m = np.maximum(upper[k] - t_lo, 0.0)
            CL[:, n0 + 1 + k] = big_m.reshape(-1, 1)
            rhs = rhs + big_m
        blocks.append(CL.tocsr())
        rlo.append(np.full(r, -np.inf))
        rhi.append(rhs)
    col_lower = [base.col_lower, [t_lo]]
    col_upper = [base.col_upper, [np.inf]]
    integrality = [base.integrality, [0]]
    if K > 1:
        choose = sp.csr_matrix((np.ones(K), (np.zeros(K, dtype=int), n0 + 1 + np.arange(K))), shape=(1, n))
        blocks.append(choose)
        rlo.append([1.0])
        rhi.append([1.0])
        col_lower.append(np.zeros(K))
        col_upper.append(np.ones(K))
        integrality.append(np.ones(K))
    c = np.zeros(n)
    c[t_col] = 1.0
    integ = np.concatenate(integrality).astype(np.uint8)
    return dataclasses.replace(
        base, c=c, offset=0.0, A=sp.vstack(blocks, format="csr"),
        row_lower=np.concatenate(rlo).astype(np.float64), row_upper=np.concatenate(rhi).astype(np.float64),
        col_lower=np.concatenate(col_lower).astype(np.float64),
        col_upper=np.concatenate(col_upper).astype(np.float64),
        integrality=integ, n_binaries=int(integ.sum()), network=None, max_columns=None)


def constant_output(net) -> bool:
    """The network's output does not depend on its input: some affine map has only zero weights
    (e.g. an ONNX graph whose output is a constant, imported as zero weights)."""
    for aff in net.affines:
        W = aff.W
        if (W.count_nonzero() if sp.issparse(W) else np.count_nonzero(W)) == 0:
            return True
    return False


def _encoding_admits(base, x) -> bool:
    """The base encoding admits the network's own assignment at ``x`` (guards against bounds that
    would fake an infeasibility proof; the same check solve_highs makes for verification)."""
    from .milp.encode import assignment_violation, complete_assignment
    values = complete_assignment(base, x)
    return assignment_violation(base, values) <= 1e-6 * (1.0 + float(np.max(np.abs(values), initial=0.0)))


# -------------------------------------------------------------------------------------- one instance

class _Found(Exception):
    def __init__(self, x, y, by):
        self.x, self.y, self.by = x, y, by


def _margin_row(C: np.ndarray, d: np.ndarray):
    """(a, b, c, d) when the disjunct is the single row ``c (y_a - y_b) <= d`` with c > 0, else None."""
    if C.shape[0] != 1:
        return None
    row = C[0]
    nz = np.flatnonzero(row)
    if nz.size != 2 or row[nz[0]] != -row[nz[1]]:
        return None
    a, b = (nz[0], nz[1]) if row[nz[0]] > 0 else (nz[1], nz[0])
    return int(a), int(b), float(row[a]), float(d[0])


class _BoxProblem:
    """One input box of a VNN-LIB property for ``hamverify.cascade``: an objective per disjunct k
    (its largest violation ``max_r (C_k y - d_k)_r``; infeasible when a row's lower bound exceeds
    ``d + tol``), validated in float32 on the IR and onnxruntime (``Checker.validate``)."""

    def __init__(self, checker: Checker, region: Region, mode: str, tol: float, seed: int, stats: dict):
        self.checker, self.mode, self.tol, self._seed, self.stats = checker, mode, tol, seed, stats
        self.net = checker.net
        self.lo, self.hi = region.lo, region.hi
        self.disjuncts = list(region.disjuncts)
        self._lower = self._upper = None

    def keys(self) -> list:
        return list(range(len(self.disjuncts)))

    def _row_bounds(self, bounds):
        from .bounds import specification_lower_bounds
        lower, upper = [], []
        for C, d in self.disjuncts:
            lower.append(specification_lower_bounds(self.net, self.lo, self.hi, bounds, C) - d)
            upper.append(-specification_lower_bounds(self.net, self.lo, self.hi, bounds, -C) - d)
        self._lower, self._upper = lower, upper
        return lower, upper

    def lower_bounds(self, bounds) -> dict:
        lower, _ = self._row_bounds(bounds)
        return {k: float(np.max(lower[k])) for k in self.keys()}

    def sure_violations(self, bounds) -> list:
        # A disjunct whose rows hold everywhere on the box (sound upper bounds <= 0; e.g. constant
        # rows): any point of the box, validated as usual.
        return [(k, (self.lo + self.hi) / 2) for k in self.keys() if np.max(self._upper[k]) <= 0]

    def note_bounds(self, stage, bounds, values) -> None:
        pass

    def validate(self, point, key):
        C, d = self.disjuncts[key]
        found = self.checker.validate(point, self.lo, self.hi, C, d)
        return None if found is None else Found(found[0], key, found)

    def _try(self, cands):
        for k, x, v in cands:
            if v <= 0:
                found = self.validate(x, k)
                if found is not None:
                    return found
        return None

    def attacks(self):
        return [("attack", self._attack)]

    def _attack(self, open_keys, budget):
        # The first attack of a process imports torch (1-2 s on a loaded machine): not the attack's
        # time, which it would eat whole (measured: a one-input net at the box edge left unknown).
        self.checker.torch_modules()
        from .attacks import MarginPGD  # noqa: F401
        deadline = min(budget.deadline, time.monotonic() + max(1.0, PGD_SHARE * budget.left()))
        sub = [self.disjuncts[k] for k in open_keys]
        cands = self.checker.attack(self.lo, self.hi, sub, seed=self._seed, deadline=deadline)[:32]
        return self._try([(open_keys[k], x, v) for k, x, v in cands])

    def polish(self, point, key, deadline):
        cands = self.checker.attack(self.lo, self.hi, self.disjuncts, starts=[(key, point)], steps=POLISH_STEPS,
                                    deadline=deadline)
        return self._try(cands)

    def margin_form(self, keys):
        rows = {}
        label = None
        for k in keys:
            form = _margin_row(*self.disjuncts[k])
            if form is None or (label is not None and form[0] != label):
                return None
            label = form[0]
            rows[k] = (form[1], form[2], form[3])
        return (label, rows) if rows else None

    def bab_validator(self):
        form = self.margin_form(self.keys())

        def validate(p):
            for k, (t, _, _) in (form[1].items() if form else []):
                found = self.validate(p, k)
                if found is not None:
                    z = self.net.forward(found.point)[0]
                    return found.point, float(z[form[0]] - z[t])
            return None
        return validate

    def torch_models(self):
        return self.checker.torch_modules()

    def seed(self) -> int:
        return int(self._seed)

    def milp(self, open_keys, bounds, budget, times) -> Outcome:
        from .milp.encode import encode_network
        from .milp.highs import solve_highs
        net, lo, hi, deadline = self.net, self.lo, self.hi, budget.deadline
        if self._lower is None or self._upper is None:
            self._row_bounds(bounds)
        lower, upper = self._lower, self._upper
        open_ = sorted(open_keys, key=lambda k: float(np.max(lower[k])))  # the least constrained first
        if budget.expired():
            return Outcome("timeout", reason="budget spent before the MILP encoding")
        base, logits = encode_network(net, lo, hi, bounds)
        if not _encoding_admits(base, (lo + hi) / 2):
            return Outcome("unknown", reason="the bounds exclude the network's own point at the box centre")
        finite = all(np.isfinite(lower[k]).all() and np.isfinite(upper[k]).all() for k in open_)
        joint = self.mode == "disjunction" and len(open_) > 1 and finite  # big-M needs finite bounds
        groups = [open_] if joint else [[k] for k in open_]
        reasons = []
        for group in groups:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                return Outcome("timeout", reason="budget spent in the milp stage")
            milp = spec_milp(base, logits, [self.disjuncts[k] for k in group], [lower[k] for k in group],
                             [upper[k] for k in group])
            res = solve_highs(milp, remaining, tol=self.tol, seed_point=None)
            self.stats["milp_solves"] += 1
            if res.status == "counterexample":
                y = net.forward(res.x)[0]
                viol = [float(np.max(self.disjuncts[k][0] @ y - self.disjuncts[k][1], initial=-np.inf)) for k in group]
                order = [group[i] for i in np.argsort(viol)]
                found = self._try([(k, res.x, -np.inf) for k in order])
                if found is None:
                    # The solver's point carries its tolerances: polish it on the network.
                    cands = self.checker.attack(lo, hi, self.disjuncts, starts=[(k, res.x) for k in order],
                                                steps=POLISH_STEPS, deadline=deadline + 0.5)
                    found = self._try(cands)
                if found is not None:
                    return Outcome("falsified", decided_by="milp", found=found)
                reasons.append(f"disjunct {group}: solver point (t = {res.objective_value:.3g}) not confirmed "
                               f"on the network")
            elif res.status == "robust":
                continue
            elif (res.status != "timeout" and res.x is not None and res.objective_value is not None
                  and res.objective_value <= self.tol):
                # min t in [0, tol]: not a proof either way; but VNN-LIB's <= is not strict, so a
                # point where the rows hold with equality (t = 0, e.g. at the box's edge) is a
                # counterexample -- if the validator confirms it on the network.
                found = self._try([(k, res.x, -np.inf) for k in group])
                if found is not None:
                    return Outcome("falsified", decided_by="milp", found=found)
                reasons.append(f"disjunct {group}: {res.solver_status}, min t = {res.objective_value:.3g} "
                               f"in [0, tol]")
            elif res.status == "timeout":
                return Outcome("timeout", reason="MILP time limit")
            else:
                reasons.append(f"disjunct {group}: {res.solver_status}")
        if reasons:
            return Outcome("unknown", reason="; ".join(reasons))
        return Outcome("proved", decided_by="milp")


# The order of the stages: an unsat of several boxes is "decided by" the latest stage any box needed.
_STAGE_ORDER = ("trivial", "constant", "bounds", "lp", "alpha", "bab", "local", "milp")


def _decide_region(checker: Checker, region: Region, deadline: float, mode: str, tol: float, seed: int,
                   stats: dict, stages: tuple = DEFAULT_STAGE_NAMES) -> str:
    """'unsat' (every disjunct proven infeasible), 'timeout' or 'unknown'; raises _Found on sat."""
    net = checker.net
    lo, hi = region.lo, region.hi
    disjuncts = list(region.disjuncts)

    def try_points(cands, by):
        for k, x, v in cands:
            if v <= 0:
                found = checker.validate(x, lo, hi, *disjuncts[k])
                if found is not None:
                    raise _Found(*found, by)

    if constant_output(net) and np.isfinite(lo).all() and np.isfinite(hi).all():
        # the output is the same at every input of the box: evaluate it once
        centre = (lo + hi) / 2
        y = net.forward(centre)[0]
        viol = [float(np.max(C @ y - d, initial=-np.inf)) for C, d in disjuncts]
        try_points([(k, centre, viol[k]) for k in np.argsort(viol, kind="stable")], "constant")
        if all(v > tol for v in viol):  # exact: no point of the box gives another output
            stats["constant"] = True
            stats["by"].append("constant")
            return "unsat"
        stats["reasons"].append("constant output: it misses a disjunct by at most the tolerance (unsat not "
                                "proven)" if min(viol) > 0 else "constant output: the counterexample is not "
                                "confirmed on the network (or the box holds no float32 value)")
        return "unknown"
    for k, (C, d) in enumerate(disjuncts):
        if C.shape[0] == 0:  # the output constraint is "true": any point of the box
            try_points([(k, (lo + hi) / 2, -np.inf)], "trivial")
            stats["reasons"].append("the input box holds no float32 value")
            return "unknown"
    budget = Budget(max(deadline - time.monotonic(), 0.0))
    budget.deadline = deadline
    problem = _BoxProblem(checker, region, mode, tol, seed, stats)
    cfg = CascadeConfig(tightening="symbolic", stages=stages, tol=tol)
    out = cascade.run_cascade(problem, budget, cfg)
    for name, t in out.stage_times.items():
        stats["times"][name] = stats["times"].get(name, 0.0) + t
    if out.verdict == "falsified":
        raise _Found(out.found.payload[0], out.found.payload[1], out.decided_by)
    if out.verdict == "proved":
        stats["by"].append(out.decided_by)
        return "unsat"
    if out.reason:
        stats["reasons"].append(out.reason)
    return "timeout" if out.verdict == "timeout" else "unknown"


def solve_instance(onnx_path, vnnlib_path, timeout: float = 300.0, mode: str = "disjunction",
                   tol: float = 1e-6, seed: int = 0, stages=DEFAULT_STAGE_NAMES) -> InstanceResult:
    """Decide one instance; input errors raise HamverifyError (one line), a network that is not
    piecewise linear (``onnx_io.NonLinearModel``) is ``unknown``.  ``stages``: the cascade's
    optional stages (``hamverify.cascade.STAGES``; default ``DEFAULT_STAGE_NAMES``: all but ``local``)."""
    from .onnx_io import NonLinearModel, import_onnx, load_onnx_proto
    if mode not in MODES:
        raise HamverifyError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    if not timeout > 0:
        raise HamverifyError(f"timeout must be > 0 seconds, got {timeout}")
    t0 = time.monotonic()
    deadline = t0 + float(timeout)
    proto, label = load_onnx_proto(onnx_path)
    try:
        imported = import_onnx(proto, label=label)
    except NonLinearModel as exc:  # a network this verifier cannot decide, not a broken input
        return InstanceResult("unknown", time.monotonic() - t0, reason=str(exc))
    spec = parse_vnnlib(vnnlib_path)
    return decide(imported, proto, spec, deadline, mode=mode, tol=tol, seed=seed, t0=t0, stages=stages)


def decide(imported, proto, spec: VnnlibSpec, deadline: float, mode: str = "disjunction", tol: float = 1e-6,
           seed: int = 0, t0: float | None = None, stages=DEFAULT_STAGE_NAMES, checker: Checker | None = None) -> InstanceResult:
    """Decide ``spec`` on the imported network.  ``checker``: a :class:`Checker` (subclass) to
    validate counterexamples with instead of ``Checker(imported, proto)`` (VNN-LIB 2.0 queries,
    :mod:`hamverify.vnnlib2`: several networks, strict rows)."""
    t0 = time.monotonic() if t0 is None else t0
    net = imported.net
    if spec.n_inputs != net.input_size or spec.n_outputs != net.num_classes:
        raise HamverifyError(f"{spec.source}: declares {spec.n_inputs} inputs and {spec.n_outputs} outputs; "
                             f"the network {imported.source} has {net.input_size} and {net.num_classes}")
    checker = Checker(imported, proto) if checker is None else checker
    stages = parse_stages(stages)
    stats = {"milp_solves": 0, "reasons": [], "by": [], "times": {}}
    verdicts = []
    with _one_torch_thread():
        try:
            for region in spec.regions():
                if time.monotonic() >= deadline:
                    verdicts.append("timeout")
                    break
                verdict = _decide_region(checker, region, deadline, mode, tol, seed, stats, stages)
                verdicts.append(verdict)
                if verdict == "timeout":
                    break
        except _Found as found:
            return InstanceResult("sat", time.monotonic() - t0, found.x, found.y, decided_by=found.by,
                                  milp_solves=stats["milp_solves"], stage_times=stats["times"])
    elapsed = time.monotonic() - t0
    if all(v == "unsat" for v in verdicts):  # also: no cases at all (the property cannot be violated)
        by = max(stats["by"], key=_STAGE_ORDER.index) if stats["by"] else ("bounds" if verdicts else "trivial")
        return InstanceResult("unsat", elapsed, decided_by=by, milp_solves=stats["milp_solves"],
                              stage_times=stats["times"])
    result = "timeout" if "timeout" in verdicts else "unknown"
    return InstanceResult(result, elapsed, reason="; ".join(stats["reasons"]), milp_solves=stats["milp_solves"],
                          stage_times=stats["times"])


@contextlib.contextmanager
def _one_torch_thread():
    """One torch thread while deciding (parallelism is across instances), restored afterwards.
    torch is not imported for this: if nothing has imported it yet, OMP_NUM_THREADS=1 (unless set)
    makes a later import start with one thread."""
    torch = sys.modules.get("torch")
    if torch is None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- batches

def read_instances(csv_path) -> list[tuple[str, str, float]]:
    """Rows ``onnx,vnnlib,timeout`` (no header; paths relative to the CSV's folder)."""
    csv_path = pathlib.Path(csv_path)
    if not csv_path.is_file():
        raise HamverifyError(f"instances file not found: {csv_path}")
    rows = []
    with open(csv_path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if len(row) != 3:
                raise HamverifyError(f"{csv_path}:{n}: expected onnx,vnnlib,timeout, got {len(row)} fields")
            try:
                timeout = float(row[2])
            except ValueError:
                raise HamverifyError(f"{csv_path}:{n}: timeout {row[2]!r} is not a number") from None
            if not timeout > 0:
                raise HamverifyError(f"{csv_path}:{n}: timeout must be > 0, got {row[2]}")
            rows.append((row[0], row[1], timeout))
    if not rows:
        raise HamverifyError(f"{csv_path}: no instances")
    return rows


def read_results(results_path) -> dict[tuple[str, str], list[str]]:
    """Completed rows by (onnx, vnnlib), each ``[onnx, vnnlib, result, time, detail]``.

    ``detail`` (the fifth column) is the reason of an ``error`` / ``unknown`` / ``timeout`` row, or the
    counterexample file of a ``sat`` row (relative to the results file's folder); files written
    before it existed have four columns (read with an empty detail).  A torn last line (no final
    newline) is ignored."""
    path = pathlib.Path(results_path)
    done: dict[tuple[str, str], list[str]] = {}
    if not path.is_file():
        return done
    with open(path, newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # the last row was cut off while being written
    for row in csv.reader(io.StringIO(text)):
        if len(row) in (4, 5) and row[2] in RESULTS:
            try:
                float(row[3])
            except ValueError:
                continue
            done[(row[0], row[1])] = row[:4] + [row[4] if len(row) == 5 else ""]
    return done


def _write_rows(path: pathlib.Path, rows: list[list[str]]):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    os.replace(tmp, path)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def cex_path(results_path, onnx: str, vnnlib: str) -> pathlib.Path:
    """``<results>.cex/<network>__<spec>__<hash>.txt``: the whole file names of the network and the
    spec (less ``.onnx`` / ``.vnnlib`` / ``.gz``) and a short hash of both paths as the instances
    file writes them, so that two instances never share a file (``prop_7_0.03`` / ``prop_7_0.05``,
    or one spec name in two folders)."""
    def stem(s: str) -> str:
        name = pathlib.PurePath(s).name
        for ext in (".gz", ".onnx", ".vnnlib"):
            if name.lower().endswith(ext):
                name = name[:-len(ext)]
        return re.sub(r"[^A-Za-z0-9._+=-]", "_", name)[:80] or "_"

    digest = hashlib.sha256(f"{onnx}\0{vnnlib}".encode()).hexdigest()[:10]
    return pathlib.Path(str(results_path) + ".cex") / f"{stem(onnx)}__{stem(vnnlib)}__{digest}.txt"


def run_instance_row(root: str, onnx: str, vnnlib: str, timeout: float, mode: str, stages=DEFAULT_STAGE_NAMES):
    """One batch row in a worker: (onnx, vnnlib, result, seconds, result text, reason)."""
    t0 = time.monotonic()
    try:
        res = solve_instance(pathlib.Path(root) / onnx, pathlib.Path(root) / vnnlib, timeout, mode=mode,
                             stages=stages)
        return onnx, vnnlib, res.result, res.time, res.vnncomp_text(), res.reason
    except HamverifyError as exc:
        return onnx, vnnlib, "error", time.monotonic() - t0, "error\n", str(exc)
    except MemoryError:
        return onnx, vnnlib, "error", time.monotonic() - t0, "error\n", "out of memory"
    except Exception as exc:  # one broken instance must not end the batch
        return onnx, vnnlib, "error", time.monotonic() - t0, "error\n", f"{type(exc).__name__}: {exc}"


def run_batch(instances_csv, results_csv, workers: int = 1, timeout: float | None = None,
              mode: str = "disjunction", retry_errors: bool = True, log=print, stages=DEFAULT_STAGE_NAMES) -> list[list[str]]:
    """Decide every instance of a VNN-COMP ``instances.csv``; rows already in ``results_csv`` are
    kept (resume), except ``error`` rows, which are decided again unless ``retry_errors`` is False.
    Rows are ``onnx,vnnlib,result,seconds,detail`` (see :func:`read_results`).  New rows are
    appended as they finish; at the end the file is rewritten in the instances' order.  ``sat``
    counterexamples go to ``<results>.cex/`` (:func:`cex_path`).  Returns the rows."""
    from joblib import Parallel, delayed
    if mode not in MODES:
        raise HamverifyError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    stages = parse_stages(stages)  # a bad list fails here, once, not in every row
    instances = read_instances(instances_csv)
    root = str(pathlib.Path(instances_csv).resolve().parent)
    results_path = pathlib.Path(results_csv)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_results(results_path)
    keys, todo = [], []
    retried = 0
    for onnx, vnnlib, t in instances:
        if (onnx, vnnlib) in keys:
            continue
        keys.append((onnx, vnnlib))
        row = done.get((onnx, vnnlib))
        if row is not None and row[2] == "error" and retry_errors:
            retried += 1
            row = None
        if row is None:
            todo.append((onnx, vnnlib, timeout if timeout is not None else t))
    if len(todo) < len(keys):
        log(f"resuming: {len(keys) - len(todo)} of {len(keys)} instances already in {results_path}")
    if retried:
        log(f"retrying {retried} instance(s) that ended in an error")
    _write_rows(results_path, list(done.values()))  # drops a torn last line before appending
    tasks = (delayed(run_instance_row)(root, o, v, t, mode, stages) for o, v, t in todo)
    results = (Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered")(tasks) if workers > 1
               else (run_instance_row(root, o, v, t, mode, stages) for o, v, t in todo))
    with open(results_path, "a", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        for onnx, vnnlib, result, seconds, text, message in results:
            detail = _one_line(message)
            if result == "sat":
                cex = cex_path(results_path, onnx, vnnlib)
                write_text_atomic(cex, text)
                detail = os.path.relpath(cex, results_path.parent)
            row = [onnx, vnnlib, result, f"{seconds:.3f}", detail]
            writer.writerow(row)
            f.flush()
            done[(onnx, vnnlib)] = row  # a retried row replaces its error in the final rewrite
            log(f"{onnx} {vnnlib}: {result} ({seconds:.2f}s)" + (f" - {detail}" if detail else ""))
    ordered = [done[k] for k in keys] + [row for k, row in done.items() if k not in set(keys)]
    _write_rows(results_path, ordered)
    return [done[k] for k in keys]


def write_text_atomic(path, text: str):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


__all__ = ["InstanceResult", "MODES", "RESULTS", "cex_path", "constant_output", "decide", "float32_in_box",
           "read_instances", "read_results", "run_batch", "solve_instance", "spec_milp", "write_text_atomic"]

if __name__ == "__main__":  # pragma: no cover
    print(solve_instance(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 60).vnncomp_text())
