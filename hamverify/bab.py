"""Branch and bound (issue 13, item 4): a complete search over ReLU splits (or input splits) that
decides, per target class ``j``, whether ``z_label - z_j > tol`` on the whole input box.

The box is partitioned into subdomains.  A ReLU split of an unstable neuron ``k`` of layer ``i``
gives two children, ``z_i[k] >= 0`` and ``z_i[k] <= 0``; an input split halves one coordinate of
the box.  Every subdomain is bounded by ``bounds.alpha.alpha_crown`` under its split constraints
(intermediate bounds rebuilt from the parent's, clamped by the splits, slopes warm-started from the
parent's), and the search keeps a best-first queue of the subdomains whose margin lower bound is
still ``<= tol`` for some target.  A target is *robust* when every subdomain of the partition has
closed it:

* a margin lower bound ``> tol`` from the α bounds (sound on the subdomain, ``bounds/alpha.py``);
* the subdomain is empty (contradictory splits: ``AlphaResult.infeasible``);
* an exact LP of the subdomain (a leaf with no unstable neuron left: the network is affine on it,
  the split constraints are linear) whose *dual-certified* bound (``bounds.lp.certified_lower_bound``)
  exceeds ``tol`` -- or, after BaB stalls, an exact MILP of the subdomain proven by HiGHS's final
  status under the cutoff ``tol`` (the rules of ``milp/highs.py``).

The subdomain MILP is exact: every neuron whose sign the subdomain fixes (a split, or one that is
stable under the subdomain's bounds but not under the box's) is encoded as an unstable neuron
whose binary is fixed to its phase (``delta = 1`` forces ``a = z >= 0``, ``delta = 0`` forces
``a = 0 >= z``), so the MILP's feasible inputs are exactly the subdomain's, every other unstable
neuron gets the subdomain's (tighter) big-M, and the stably-signed ones substitute as in
``milp/encode.py``.  HiGHS's one-point "bounds hold at the box centre" check of ``solve_highs``
does not apply to a subdomain (its centre need not lie in it); the subdomain's bounds come from
``split_bounds``, whose soundness ``tests/test_bounds_alpha.py`` checks on samples.

*counterexample* only for a point of the box that the validator (``validate``, e.g.
``Verifier.validate_counterexample``; else the IR's float64 forward pass) confirms: candidates are
every new subdomain's concretizing input corners (where the α bound's linear function is lowest),
the LP / MILP points, and a short ``MarginPGD`` from the worst subdomain's corner every few
branchings.  Everything else is *timeout* (the deadline passed) or *unknown* (a leaf whose exact
margin lies in ``[0, tol]``, a solver point the validator rejects, the domain limit without the
MILP fallback, ...).

When BaB stalls -- the queue holds more than ``max_domains`` subdomains or ``milp_after`` of the
time is spent -- the remaining subdomains of each open target go to the MILP (one per subdomain,
worst first, when at most ``milp_max_domains`` remain; else one MILP of the whole box with the
root bounds), each solve limited to the time that is left.

Precision: bounds are float64 (``alpha_crown`` recomputes its optimized bounds in float64); the
torch copies of the network used by the attack are never trusted for a verdict.
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from . import HamverifyError
from .bounds.alpha import _dense_weights, alpha_crown
from .bounds.interval import LayerBounds, box_vectors
from .bounds.lp import certified_lower_bound
from .bounds.symbolic import relu_relaxation, symbolic_bounds
from .milp import COUNTEREXAMPLE, ROBUST, TIMEOUT, UNKNOWN
from .milp.encode import MilpArrays, encode_network, margin_objective
from .network import Network

BRANCHING = ("babsr", "widest", "intercept", "input")
# Dual-certified LP bounds are padded outward by this much (relative), as in bounds/lp.py.
LP_PADDING = 1e-7
# Seconds kept back from every solver time limit: HiGHS overshoots its limit by up to ~1 s (verify.py).
SOLVER_SLACK = 1.0
# Below this width an input split is not halved further (the subdomain goes to the MILP / unknown).
MIN_INPUT_WIDTH = 1e-7


# -- results ------------------------------------------------------------------------------------


@dataclass
class BabStats:
    """Counters of one ``branch_and_bound`` call (times in seconds)."""

    domains: int = 0  # subdomains bounded, the root included
    branched: int = 0  # subdomains split into two
    max_depth: int = 0
    max_queue: int = 0
    infeasible: int = 0  # children with contradictory splits (empty)
    leaves: int = 0  # subdomains with no unstable neuron left (closed by the exact LP or stuck)
    lp_solves: int = 0
    milp_solves: int = 0
    attacks: int = 0
    candidates: int = 0  # points sent to the validator
    fallback: str = ""  # why the MILP fallback ran ("" = it did not)
    time: float = 0.0
    time_bounds: float = 0.0
    time_lp: float = 0.0
    time_milp: float = 0.0
    time_attack: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class BabResult:
    """Outcome of ``branch_and_bound``.

    ``status``: "robust" (every target proven), "counterexample" (a validated point), else
    "timeout" (the deadline passed) or "unknown".  ``verdicts[j]`` / ``decided_by[j]`` per target
    ("bounds": the root bound; "bab": subdomain bounds and exact leaf LPs; "milp": the fallback
    took part; "attack" / "corner" / "lp": where a counterexample came from).  ``lower_bounds[j]``:
    a proven lower bound of ``min_box z_label - z_j`` (min over the partition's bounds; only
    meaningful for robust targets, ``-inf`` where none is known).  ``counterexample``: the validated
    point (flat float64, inside the box), with its validated margin and the target it beats.
    """

    status: str
    verdicts: dict[int, str]
    decided_by: dict[int, str]
    lower_bounds: dict[int, float]
    counterexample: np.ndarray | None = None
    cex_margin: float | None = None
    cex_target: int | None = None
    reason: str = ""
    stats: BabStats = field(default_factory=BabStats)


# -- subdomains ---------------------------------------------------------------------------------


@dataclass
class _Domain:
    """A subdomain: the box ``[lo, hi]`` and ReLU splits, with the open targets' bounds."""

    splits: list  # per ReLU layer: None (no split) or int8 array, +1 active / -1 inactive / 0 free
    lo: np.ndarray
    hi: np.ndarray
    bounds: list[LayerBounds]  # intermediate bounds valid on the subdomain
    targets: np.ndarray  # open targets, sorted
    lbs: np.ndarray  # their margin lower bounds (all <= tol)
    alpha: list[np.ndarray] | None  # per layer (len(targets), n) slopes (float32), for the children
    depth: int
    branch: tuple[int, int] | None  # (layer, neuron), (-1, input coordinate), or None: a leaf
    point: np.ndarray | None  # the worst target's concretizing corner

    @property
    def key(self) -> float:
        return float(self.lbs.min())


def _masks(splits, from_layer: int = 0) -> dict:
    return {i: (s == 1, s == -1) for i, s in enumerate(splits) if s is not None and i >= from_layer}


class _Torch(torch.nn.Module):
    """The IR as a torch module (dense weights, cached by ``bounds.alpha``), for the attack."""

    def __init__(self, net: Network, dtype: torch.dtype):
        super().__init__()
        self.Ws, self.bs = _dense_weights(net, dtype)
        self.register_buffer("_dtype_probe", torch.zeros(1, dtype=dtype))

    def forward(self, x):
        h = x.reshape(x.shape[0], -1)
        for i, (W, b) in enumerate(zip(self.Ws, self.bs)):
            h = h @ W.T + b
            if i < len(self.Ws) - 1:
                h = torch.relu(h)
        return h


def _rows_times(A: np.ndarray, W) -> np.ndarray:
    """Dense rows ``A`` times an affine map's ``W`` (CSR or dense)."""
    if sp.issparse(W):
        return np.ascontiguousarray((W.T.tocsr() @ A.T).T)
    return A @ W


def _backward(net: Network, lo, hi, bounds: list[LayerBounds], alpha, C: np.ndarray):
    """The α-CROWN back-substitution of ``C @ logits``, keeping what BaB needs.

    Returns (coefficients of every row on each ReLU layer's *output*, the final coefficients on
    the input, the constant, the concretizing corners (rows, d): the input minimizing each row's
    linear lower bound).  ``alpha[i]``: (rows, n_i) lower-line slopes (clamped to [0, 1]).
    """
    last = net.affines[-1]
    A = _rows_times(C, last.W)
    const = C @ last.b
    coefs = [None] * len(bounds)
    for i in reversed(range(len(bounds))):
        coefs[i] = A
        r = relu_relaxation(bounds[i])
        low = np.broadcast_to(r.lower_slope, A.shape).copy()
        if alpha is not None:
            u = bounds[i].unstable
            low[:, u] = np.clip(np.asarray(alpha[i], dtype=np.float64)[:, u], 0.0, 1.0)
        pos, neg = np.maximum(A, 0.0), np.minimum(A, 0.0)
        const = const + neg @ r.upper_intercept
        A = pos * low + neg * r.upper_slope
        const = const + A @ net.affines[i].b
        A = _rows_times(A, net.affines[i].W)
    corners = np.where(A > 0, lo, hi)
    return coefs, A, const, corners


def _relu_scores(kind: str, bounds: list[LayerBounds], coefs) -> list[np.ndarray]:
    """Branching scores per ReLU layer (``-inf`` where a neuron cannot be split)."""
    out = []
    for b, A in zip(bounds, coefs):
        unstable = b.unstable
        s = np.full(b.lower.size, -np.inf)
        if unstable.any():
            l, u = b.lower[unstable], b.upper[unstable]
            if kind == "widest":
                s[unstable] = u - l
            elif kind == "intercept":
                s[unstable] = u * (-l) / (u - l)
            else:  # babsr-like: the intercept the chord costs the bound, weighted by the coefficient
                Au = A[:, unstable]
                intercept = (np.maximum(-Au, 0.0) * (u * (-l) / (u - l))).sum(axis=0)
                # Backup (tiny weight): neurons whose coefficient is positive everywhere still
                # cost the bound through the lower line; ordered by |coefficient| x width.
                backup = (np.abs(Au).sum(axis=0) * (u - l))
                s[unstable] = intercept + 1e-6 * backup
        out.append(s)
    return out


# -- LP / MILP of a subdomain ---------------------------------------------------------------------


def _exact_encoding(net: Network, dom: _Domain, box_bounds: list[LayerBounds], input_mode: bool) -> MilpArrays:
    """The subdomain's exact MILP (module doc): fixed binaries for the neurons whose sign only the
    subdomain fixes, the subdomain's bounds as big-M for the others.  ``box_bounds``: bounds valid on
    the subdomain's whole box (in input mode: the subdomain's own)."""
    enc, fixed = [], []
    for i, (b, ref) in enumerate(zip(dom.bounds, box_bounds)):
        split = dom.splits[i] if dom.splits[i] is not None else np.zeros(b.lower.size, dtype=np.int8)
        box_stable = (ref.lower >= 0) | (ref.upper <= 0)
        if input_mode:
            box_stable = np.ones_like(box_stable)
        act = (split == 1) | (~box_stable & (split == 0) & (b.lower >= 0))
        ina = (split == -1) | (~box_stable & (split == 0) & (b.upper <= 0) & ~act)
        fix = act | ina
        lower, upper = b.lower.copy(), b.upper.copy()
        lower[fix] = np.minimum(lower[fix], -1.0)  # any negative value: the fixed binary decides
        upper[fix] = np.maximum(upper[fix], 1e-9)  # the output column's range [0, u] stays valid
        enc.append(LayerBounds(lower, upper))
        phase = np.full(b.lower.size, -1, dtype=np.int8)
        phase[act], phase[ina] = 1, 0
        fixed.append(phase)
    milp, logits = encode_network(net, dom.lo, dom.hi, enc)
    col_lower, col_upper = milp.col_lower.copy(), milp.col_upper.copy()
    integrality = milp.integrality.copy()
    for cols, phase in zip(milp.relu_columns, fixed):
        p = phase[cols.unstable]
        sel = p >= 0
        bc = cols.binary_cols[sel]
        col_lower[bc] = col_upper[bc] = p[sel].astype(np.float64)
        integrality[bc] = 0  # a continuous column with equal bounds: fixed, and not a binary
    milp = dataclasses.replace(milp, col_lower=col_lower, col_upper=col_upper, integrality=integrality,
                               n_binaries=int(integrality.sum()))
    return milp, logits


def _solve_lp(milp: MilpArrays, time_limit: float):
    """The LP relaxation of ``milp``: (dual-certified lower bound -- ``+inf`` for a certified-empty
    LP, ``-inf`` when none --, primal input point or None, primal objective or None)."""
    import highspy

    from .milp.highs import _options, _pass_arrays, _run
    from .milp.quiet import new_highs

    lp = dataclasses.replace(milp, integrality=np.zeros_like(milp.integrality), n_binaries=0)
    h = new_highs()
    _options(h, max(time_limit, 1e-3), 0, None, False, False)
    _pass_arrays(h, lp)
    _run(h)
    if h.getModelStatus() == highspy.HighsModelStatus.kInfeasible:
        # Not a proof by itself (a solver claim): only a Farkas ray whose Lagrangian bound of
        # "min 0" is positive, recomputed here in float64, proves that the subdomain is empty.
        _, has_ray, ray = h.getDualRay()
        if has_ray:
            y = np.asarray(ray, dtype=np.float64)
            scale = float(np.abs(y).max(initial=0.0))
            if scale > 0:
                zero = np.zeros(lp.n_cols)
                if max(certified_lower_bound(lp, zero, y / scale), certified_lower_bound(lp, zero, -y / scale)) > 1e-7:
                    return math.inf, None, None
        return -math.inf, None, None
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return -math.inf, None, None
    sol = h.getSolution()
    values = np.asarray(sol.col_value, dtype=np.float64)
    point, objective = lp.input_point(values), float(lp.objective(values))
    if not sol.dual_valid:
        return -math.inf, point, objective
    bound = certified_lower_bound(lp, lp.c, np.asarray(sol.row_dual, dtype=np.float64)) + lp.offset
    return bound - LP_PADDING * (1.0 + abs(bound)), point, objective


def _solve_milp(milp: MilpArrays, time_limit: float, tol: float):
    """``solve_highs``'s verdict rules (cutoff at ``tol``, stop on the first negative incumbent),
    without its box-centre check (see the module doc).  Returns (status, objective bound, point, objective)."""
    import highspy

    from .milp.highs import _options, _pass_arrays, _primal, _proven_bound, _run, _verdict
    from .milp.quiet import new_highs

    is_mip = milp.n_binaries > 0
    h = new_highs()
    _options(h, max(time_limit, 1e-3), 0, tol if is_mip else None, is_mip, is_mip)
    _pass_arrays(h, milp)
    _run(h)
    status = h.getModelStatus()
    objective, x = _primal(h, milp)
    dual = float(h.getInfo().mip_dual_bound) if is_mip else math.nan
    proven = _proven_bound(status, dual, objective, tol if is_mip else None, is_mip)
    verdict = _verdict(status, objective, proven, tol, is_mip)
    return verdict, proven, x, objective, h.modelStatusToString(status)


# -- the search ---------------------------------------------------------------------------------


class _Search:
    def __init__(self, net, lo, hi, label, targets, deadline, bounds, model, model64, validate, branching,
                 max_domains, attack, milp_fallback, milp_after, milp_max_domains, steps, root_steps, lr, tol,
                 lp, attack_every, alpha_init, seed):
        self.net, self.lo, self.hi, self.label = net, lo, hi, label
        self.targets = targets
        self.t0 = time.monotonic()
        self.deadline = deadline
        self.box_bounds = bounds
        self.validate_fn = validate
        self.branching = branching
        self.input_mode = branching == "input"
        self.max_domains, self.attack_on, self.milp_fallback = max_domains, attack, milp_fallback
        self.milp_after, self.milp_max_domains = milp_after, milp_max_domains
        self.steps, self.root_steps, self.lr, self.tol = steps, root_steps, lr, tol
        self.lp, self.attack_every = lp, attack_every
        self.alpha_init = alpha_init
        self.seed = seed
        self.stats = BabStats()
        self.queue: list = []
        self.counter = itertools.count()
        self.closed_lb = {int(j): math.inf for j in targets}
        self.stuck: dict[int, tuple[str, str]] = {}  # target -> (verdict, reason)
        self.used_milp: set[int] = set()
        self.unresolved: set[int] = set()
        self.current: _Domain | None = None
        self.cex = None  # (point, margin, target, source)
        self.timed_out = False
        self._model, self._model64 = model, model64
        self._attack = None

    # -- time ---------------------------------------------------------------------------------
    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
            return True
        return False

    # -- counterexamples ----------------------------------------------------------------------
    def _validate(self, point) -> tuple[np.ndarray, float] | None:
        self.stats.candidates += 1
        p = np.clip(np.asarray(point, dtype=np.float64).ravel(), self.lo, self.hi)
        if self.validate_fn is not None:
            found = self.validate_fn(p)
            if found is None:
                return None
            q, m = found
            q = np.asarray(q, dtype=np.float64).ravel()
            if q.shape != self.lo.shape or np.any(q < self.lo) or np.any(q > self.hi) or not m < 0:
                return None
            return q, float(m)
        z = self.net.forward(p)[0]
        m = float(z[self.label] - np.delete(z, self.label).max())
        return (p, m) if m < 0 else None

    def try_points(self, points, source: str) -> bool:
        """Validate the points whose float64 IR margin is negative for some class; True on success."""
        if self.cex is not None or points is None:
            return self.cex is not None
        P = np.clip(np.atleast_2d(np.asarray(points, dtype=np.float64)), self.lo, self.hi)
        z = self.net.forward(P)
        m = z[:, [self.label]] - z
        m[:, self.label] = np.inf
        worst = m.min(axis=1)
        for r in np.argsort(worst):
            if not worst[r] < 0:
                break
            found = self._validate(P[r])
            if found is not None:
                q, margin = found
                zq = self.net.forward(q)[0]
                mq = zq[self.label] - zq
                mq[self.label] = np.inf
                self.cex = (q, margin, int(np.argmin(mq)), source)
                return True
        return False

    def attack(self, dom: _Domain) -> bool:
        if not self.attack_on or self.cex is not None:
            return self.cex is not None
        from .attacks.margin import MarginPGD

        t = time.monotonic()
        if self._attack is None:
            if self._model is None:
                self._model = _Torch(self.net, torch.float32)
            if self._model64 is None:
                self._model64 = _Torch(self.net, torch.float64)
            gen = torch.Generator().manual_seed(int(self.seed))
            self._attack = MarginPGD(steps=20, restarts=1, generator=gen)
        res = self._attack.attack_box(self._model, dom.lo, dom.hi, self.label, [int(j) for j in dom.targets],
                                      starts=dom.point, deadline=self.deadline,
                                      input_shape=self.net.input_shape, model64=self._model64)
        self.stats.attacks += 1
        self.stats.time_attack += time.monotonic() - t
        return res.found and self.try_points(res.point.ravel(), "attack")

    # -- bounding ----------------------------------------------------------------------------
    def _close(self, targets, lbs):
        for j, v in zip(targets, lbs):
            self.closed_lb[int(j)] = min(self.closed_lb[int(j)], float(v))

    def bound(self, splits, lo, hi, parent: _Domain | None, new_layer: int, depth: int) -> _Domain | None:
        """Bound one subdomain; None when it is closed (empty, or every target above tol)."""
        t = time.monotonic()
        targets = self.targets if parent is None else parent.targets
        alpha_init = self.alpha_init if parent is None else parent.alpha
        steps = self.root_steps if parent is None else self.steps
        if parent is None:
            res = alpha_crown(self.net, lo, hi, self.label, bounds=self.box_bounds, targets=targets, steps=steps,
                              lr=self.lr, deadline=self.deadline, stop_at=self.tol, alpha_init=alpha_init)
        elif self.input_mode:
            prior = symbolic_bounds(self.net, lo, hi, prior=parent.bounds)
            res = alpha_crown(self.net, lo, hi, self.label, bounds=prior, targets=targets, steps=steps,
                              lr=self.lr, deadline=self.deadline, stop_at=self.tol, alpha_init=alpha_init)
        else:
            res = alpha_crown(self.net, lo, hi, self.label, bounds=parent.bounds, splits=_masks(splits, new_layer),
                              targets=targets, steps=steps, lr=self.lr, deadline=self.deadline, stop_at=self.tol,
                              alpha_init=alpha_init)
        self.stats.domains += 1
        self.stats.max_depth = max(self.stats.max_depth, depth)
        if res.infeasible:
            self.stats.infeasible += 1
            self.stats.time_bounds += time.monotonic() - t
            self._close(targets, [math.inf] * len(targets))
            return None
        lbs = res.margins[targets]
        open_ = ~(lbs > self.tol)
        self._close(targets[~open_], lbs[~open_])
        if not open_.any():
            self.stats.time_bounds += time.monotonic() - t
            return None
        rows = np.flatnonzero(open_)
        tg, lb = targets[open_], lbs[open_]
        alpha = None if res.alpha is None else [a[rows].astype(np.float32) for a in res.alpha]
        C = np.zeros((tg.size, self.net.num_classes))
        C[:, self.label] = 1.0
        C[np.arange(tg.size), tg] = -1.0
        coefs, A_x, _, corners = _backward(self.net, lo, hi, res.bounds, alpha, C)
        branch = self._choose(res.bounds, coefs, A_x, lo, hi)
        self.stats.time_bounds += time.monotonic() - t
        dom = _Domain(splits, lo, hi, res.bounds, tg, lb, alpha, depth, branch, corners[int(np.argmin(lb))])
        self.try_points(corners, "corner")
        return dom

    def _choose(self, bounds, coefs, A_x, lo, hi):
        if self.input_mode:
            width = hi - lo
            score = np.abs(A_x).sum(axis=0) * width
            score[width < MIN_INPUT_WIDTH] = -np.inf
            if not any(b.unstable.any() for b in bounds) or not np.isfinite(score.max()):
                return None  # affine on the box (the α bound is exact), or nothing left to halve
            k = int(np.argmax(score))
            if score[k] <= 0:
                k = int(np.argmax(np.where(width >= MIN_INPUT_WIDTH, width, -np.inf)))
            return (-1, k)
        scores = _relu_scores(self.branching, bounds, coefs)
        best = max(((float(s.max()), i) for i, s in enumerate(scores) if s.size), default=(-np.inf, -1))
        if not np.isfinite(best[0]):
            return None
        i = best[1]
        return (i, int(np.argmax(scores[i])))

    def children(self, dom: _Domain):
        layer, k = dom.branch
        if layer < 0:
            mid = 0.5 * (dom.lo[k] + dom.hi[k])
            hi1, lo2 = dom.hi.copy(), dom.lo.copy()
            hi1[k], lo2[k] = mid, mid
            return [(dom.splits, dom.lo, hi1, 0), (dom.splits, lo2, dom.hi, 0)]
        out = []
        for side in (1, -1):
            splits = list(dom.splits)
            s = np.zeros(dom.bounds[layer].lower.size, dtype=np.int8) if splits[layer] is None else splits[layer].copy()
            s[k] = side
            splits[layer] = s
            out.append((splits, dom.lo, dom.hi, layer))
        return out

    def push(self, dom: _Domain):
        heapq.heappush(self.queue, (dom.key, next(self.counter), dom))
        self.stats.max_queue = max(self.stats.max_queue, len(self.queue))

    # -- leaves ------------------------------------------------------------------------------
    def leaf(self, dom: _Domain) -> bool:
        """No unstable neuron left: the subdomain's LP is exact; close, falsify or mark stuck.
        False when interrupted (deadline, counterexample) before every target was settled."""
        self.stats.leaves += 1
        box_bounds = dom.bounds if self.input_mode else self.box_bounds
        if self.input_mode:
            # The network is affine on the sub-box and the α bound is the exact minimum there
            # (up to rounding): its corner is the candidate; no LP needed.
            for j in dom.targets:
                self.set_stuck(j, UNKNOWN, f"class {int(j)}: a sub-box where the margin bound stays <= tol "
                                           f"and no input coordinate is left to halve")
            return True
        t = time.monotonic()
        milp, logits = _exact_encoding(self.net, dom, box_bounds, False)
        finished = True
        for j in dom.targets:
            if self.done():
                finished = False
                break
            self.stats.lp_solves += 1
            bound, point, objective = _solve_lp(margin_objective(milp, logits, self.label, int(j)), self.remaining())
            if bound > self.tol:
                self._close([j], [bound])
                continue
            if point is not None and objective is not None and objective < 0:
                self.try_points(point, "lp")
            if self.expired():  # the LP may have been cut short
                finished = False
                break
            # Stuck unless a counterexample decides j (the verdict of a counterexample wins).
            value = "no optimal solve" if objective is None else f"{objective:.3g}"
            self.set_stuck(j, UNKNOWN, f"class {int(j)}: a leaf subdomain's exact LP gives {value} (not > tol)")
        self.stats.time_lp += time.monotonic() - t
        return finished

    def lp_close(self, dom: _Domain) -> _Domain | None:
        """Optional (``lp="open"``): try the subdomain's LP relaxation on every open target."""
        t = time.monotonic()
        milp, logits = _exact_encoding(self.net, dom, dom.bounds if self.input_mode else self.box_bounds,
                                       self.input_mode)
        keep = np.ones(dom.targets.size, dtype=bool)
        for r, j in enumerate(dom.targets):
            if self.expired():
                break
            self.stats.lp_solves += 1
            bound, point, objective = _solve_lp(margin_objective(milp, logits, self.label, int(j)), self.remaining())
            if bound > self.tol:
                keep[r] = False
                self._close([j], [bound])
            elif point is not None and objective is not None and objective < 0 and self.try_points(point, "lp"):
                break
            else:
                dom.lbs[r] = max(dom.lbs[r], bound)
        self.stats.time_lp += time.monotonic() - t
        if not keep.any():
            return None
        dom.targets, dom.lbs = dom.targets[keep], dom.lbs[keep]
        if dom.alpha is not None:
            dom.alpha = [a[keep] for a in dom.alpha]
        return dom

    # -- MILP fallback -----------------------------------------------------------------------
    def fallback(self):
        """Hand every remaining subdomain to the MILP, target by target, worst first.  A target
        leaves ``self.unresolved`` only when every one of its MILPs proved it."""
        t = time.monotonic()
        remaining = [d for _, _, d in sorted(self.queue, key=lambda e: (e[0], e[1]))]
        self.queue = []
        self.unresolved |= {int(j) for d in remaining for j in d.targets}
        for j in sorted(self.unresolved):
            if self.done():
                break
            if j in self.stuck:
                continue
            doms = [d for d in remaining if j in d.targets]
            self.used_milp.add(j)
            if len(doms) <= self.milp_max_domains:
                proved = all(self._milp_one(d, j) for d in doms)  # stops at the first failure
            else:
                proved = self._milp_box(j)
            if proved:
                self.unresolved.discard(j)
        self.stats.time_milp += time.monotonic() - t

    def _time_for_solver(self):
        rem = self.remaining()
        if not math.isfinite(rem):
            return 1e9
        return rem - min(SOLVER_SLACK, 0.1 * rem)

    def _record(self, j, verdict, bound, x, objective, status) -> bool:
        """Book one MILP verdict for target j; True only when it proved the (sub)domain."""
        self.stats.milp_solves += 1
        if verdict == ROBUST:
            self._close([j], [bound if bound is not None else self.tol])
            return True
        if verdict == COUNTEREXAMPLE and x is not None and self.try_points(x, "milp"):
            return False
        if verdict == TIMEOUT or self.expired():
            self.timed_out = True
            self.set_stuck(j, TIMEOUT, f"class {j}: MILP fallback timed out ({status})")
        else:
            self.set_stuck(j, UNKNOWN, f"class {j}: MILP fallback {verdict} ({status}, objective {objective})")
        return False

    def _milp_one(self, d: _Domain, j: int) -> bool:
        limit = self._time_for_solver()
        if limit <= 0.05:
            self.timed_out = True
            self.set_stuck(j, TIMEOUT, f"class {j}: no time left for the MILP fallback")
            return False
        milp, logits = _exact_encoding(self.net, d, d.bounds if self.input_mode else self.box_bounds, self.input_mode)
        verdict, bound, x, objective, status = _solve_milp(margin_objective(milp, logits, self.label, j), limit,
                                                           self.tol)
        return self._record(j, verdict, bound, x, objective, status)

    def _milp_box(self, j: int) -> bool:
        from .milp.highs import solve_highs

        limit = self._time_for_solver()
        if limit <= 0.05:
            self.timed_out = True
            self.set_stuck(j, TIMEOUT, f"class {j}: no time left for the MILP fallback")
            return False
        milp, logits = encode_network(self.net, self.lo, self.hi, self.box_bounds)
        res = solve_highs(margin_objective(milp, logits, self.label, j), limit, tol=self.tol)
        return self._record(j, res.status, res.objective_bound, res.x, res.objective_value, res.solver_status)

    def set_stuck(self, j: int, kind: str, reason: str):
        self.stuck.setdefault(int(j), (kind, reason))

    # -- the loop ----------------------------------------------------------------------------
    def stalled(self) -> str:
        if len(self.queue) > self.max_domains:
            return f"more than {self.max_domains} open subdomains"
        if self.deadline is not None and self.milp_after is not None:
            total = self.deadline - self.t0
            if time.monotonic() - self.t0 > self.milp_after * total:
                return f"{self.milp_after:.0%} of the time spent"
        return ""

    def done(self) -> bool:
        return self.cex is not None or self.expired()

    def run(self) -> str:
        """The search.  Invariant: the queue, ``self.current`` (the subdomain being processed) and
        the closed subdomains cover the box; a target is robust at the end only if it is open in
        none of the first two, nor unresolved by the fallback, nor stuck."""
        n_relu = len(self.net.relu_layer_sizes)
        self.current = _Domain([None] * n_relu, self.lo, self.hi, self.box_bounds, self.targets,
                               np.full(self.targets.size, -np.inf), None, 0, None, None)
        root = self.bound([None] * n_relu, self.lo, self.hi, None, 0, 0)
        if root is None:
            self.current = None
            return "bounds"
        self.push(root)
        self.current = None
        if self.cex is not None or self.attack(root):
            return "bab"
        pops = 0
        while self.queue:
            if self.done():
                break
            why = self.stalled()
            if why:
                if self.milp_fallback:
                    self.stats.fallback = why
                    self.fallback()
                else:
                    for _, _, d in self.queue:
                        for j in d.targets:
                            self.set_stuck(j, UNKNOWN, f"BaB stopped: {why} (no MILP fallback)")
                break
            _, _, dom = heapq.heappop(self.queue)
            self.current = dom
            if dom.branch is None:
                if self.leaf(dom):
                    self.current = None
                continue
            pops += 1
            if self.attack_every and pops % self.attack_every == 0 and dom.key < 0 and self.attack(dom):
                break
            self.stats.branched += 1
            kids = []
            for n, (splits, lo, hi, layer) in enumerate(self.children(dom)):
                if n and self.done():
                    break  # the parent (self.current) still covers both children
                kids.append(self.bound(splits, lo, hi, dom, layer, dom.depth + 1))
            else:
                for child in kids:
                    if child is not None and self.lp == "open" and child.branch is not None and not self.done():
                        child = self.lp_close(child)
                    if child is not None:
                        self.push(child)
                self.current = None
        return "bab"


def branch_and_bound(net: Network, lo, hi, label: int, targets=None, deadline: float | None = None, *,
                     bounds: list[LayerBounds] | None = None, model: torch.nn.Module | None = None,
                     model64: torch.nn.Module | None = None,
                     validate: Callable[[np.ndarray], tuple[np.ndarray, float] | None] | None = None,
                     branching: str = "babsr", max_domains: int = 20_000, attack: bool = True,
                     milp_fallback: bool = True, milp_after: float | None = 0.5, milp_max_domains: int = 16,
                     steps: int = 10, root_steps: int = 30, lr: float = 0.1, tol: float = 1e-6,
                     lp: str = "leaves", attack_every: int = 16, alpha_init=None, seed: int = 0) -> BabResult:
    """Decide ``z_label - z_j > tol`` on the box ``[lo, hi]`` for every ``j`` in ``targets`` (module doc).

    ``targets``: the open classes (default: every class but the label).  ``deadline``: a
    ``time.monotonic()`` value (None: no limit), checked between subdomains and passed to every
    bound, attack and solver call; the MILP fallback gets the time that is left.  ``bounds``:
    intermediate bounds valid on the whole box (default ``symbolic_bounds``; LP-tightened ones
    make the search and the MILP smaller).  ``model`` / ``model64``: the torch model (float32 /
    float64) for the attack (default: the IR in torch).  ``validate(point) -> (point, margin) | None``:
    the counterexample authority, e.g. ``lambda p: verifier.validate_counterexample(p, lo, hi, label)``
    (default: the IR's float64 forward pass); only points it accepts are reported.
    ``branching``: "babsr" (BaBSR-like intercept score), "widest" (largest ``u - l``),
    "intercept" (largest ``-u l / (u - l)``) or "input" (halve the input coordinate with the largest
    ``|coefficient| x width``; for low-dimensional inputs).  ``max_domains`` / ``milp_after``
    (fraction of the time until ``deadline``; None: never by time) / ``milp_max_domains``: when
    and how the MILP takes over (``milp_fallback=False``: "unknown" instead).  ``steps`` /
    ``root_steps`` / ``lr``: α optimization per subdomain / at the root.  ``lp``: "leaves" (the exact
    LP only where no unstable neuron is left) or "open" (also the LP relaxation of every open
    subdomain).  ``attack_every``: a short MarginPGD from the worst subdomain's corner every that
    many branchings (0: never; ``attack=False``: no attack at all).  ``alpha_init``: root slopes
    (e.g. a previous ``AlphaResult.alpha`` for the same targets).
    """
    lo, hi = box_vectors(net, lo, hi)
    label = int(label)
    classes = net.num_classes
    if not 0 <= label < classes:
        raise HamverifyError(f"label {label} out of range for {classes} classes")
    if branching not in BRANCHING:
        raise HamverifyError(f"unknown branching {branching!r}; known: {', '.join(BRANCHING)}")
    if lp not in ("leaves", "open"):
        raise HamverifyError(f"lp must be 'leaves' or 'open', got {lp!r}")
    if not 0 <= tol:
        raise HamverifyError(f"tol must be >= 0, got {tol}")
    if targets is None:
        targets = [j for j in range(classes) if j != label]
    targets = np.array(sorted({int(j) for j in targets if int(j) != label}), dtype=int)
    if targets.size and (targets.min() < 0 or targets.max() >= classes):
        raise HamverifyError(f"targets must be classes in 0..{classes - 1}")
    t0 = time.monotonic()
    if bounds is None:
        bounds = symbolic_bounds(net, lo, hi)
    search = _Search(net, lo, hi, label, targets, deadline, bounds, model, model64, validate, branching,
                     int(max_domains), attack, milp_fallback, milp_after, int(milp_max_domains), int(steps),
                     int(root_steps), lr, float(tol), lp, int(attack_every), alpha_init, seed)
    if targets.size == 0:
        stats = search.stats
        stats.time = time.monotonic() - t0
        return BabResult(ROBUST, {}, {}, {}, stats=stats)
    how = search.run()
    return _result(search, how, t0)


def _result(s: _Search, how: str, t0: float) -> BabResult:
    """Per-target verdicts.  Robust only for a target that is open in no queued subdomain, not in
    the subdomain being processed when the search stopped, not left unresolved by the MILP
    fallback and not stuck; the search stops at the first validated counterexample."""
    open_ = {int(j) for _, _, d in s.queue for j in d.targets} | set(s.unresolved)
    if s.current is not None:
        open_ |= {int(j) for j in s.current.targets}
    z_cex = None if s.cex is None else s.net.forward(s.cex[0])[0]
    verdicts, decided, lower, reasons = {}, {}, {}, []
    for j in (int(t) for t in s.targets):
        lower[j] = -math.inf
        if z_cex is not None and (z_cex[s.label] - z_cex[j] < 0 or j == s.cex[2]):
            verdicts[j], decided[j] = COUNTEREXAMPLE, s.cex[3]
        elif j in s.stuck:
            verdicts[j] = s.stuck[j][0]
            reasons.append(s.stuck[j][1])
        elif j in open_:
            verdicts[j] = TIMEOUT if s.timed_out else UNKNOWN
            if s.cex is not None:
                reasons.append("search stopped at a counterexample")
        else:
            verdicts[j] = ROBUST
            decided[j] = "bounds" if how == "bounds" else ("milp" if j in s.used_milp else "bab")
            lower[j] = s.closed_lb[j]
    if s.cex is not None:
        status = COUNTEREXAMPLE
    elif all(v == ROBUST for v in verdicts.values()):
        status = ROBUST
    elif s.timed_out or any(v == TIMEOUT for v in verdicts.values()):
        status = TIMEOUT
    else:
        status = UNKNOWN
    if status == TIMEOUT and not reasons:
        reasons.append("the deadline passed with open subdomains")
    s.stats.time = time.monotonic() - t0
    return BabResult(status, verdicts, decided, lower,
                     counterexample=None if s.cex is None else s.cex[0],
                     cex_margin=None if s.cex is None else s.cex[1],
                     cex_target=None if s.cex is None else s.cex[2],
                     reason="; ".join(dict.fromkeys(reasons)), stats=s.stats)
