"""The branch-and-bound search of ``hamverify.bab`` (see the package doc for the contract)."""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .. import HamverifyError
from ..bounds.alpha import _apply_split, _dense_weights, alpha_crown, split_bounds
from ..bounds.interval import LayerBounds, box_vectors
from ..bounds.symbolic import symbolic_bounds
from ..milp import COUNTEREXAMPLE, ROBUST, TIMEOUT, UNKNOWN
from ..milp.encode import encode_network, margin_objective
from ..network import Network
from .exact import exact_encoding, solve_lp, solve_milp
from ..bounds.rows import RowLayer, backsub64, crown_alpha_init, optimize, stack_rows

BRANCHING = ("babsr", "fsb", "widest", "intercept", "input")
# "fsb" (filtered smart branching, after De Palma et al. 2021): the FSB_CANDIDATES best neurons by
# the babsr score and as many by the intercept score are each split for real -- both children bounded
# in one float64 back-substitution with the subdomain's own slopes and multipliers -- and the split
# whose weaker child bound is highest wins.
FSB_CANDIDATES = 3
BOUNDING = ("beta", "alpha")
# A child's intermediate bounds: "refine" (rebuilt by split_bounds from the split layer on: tighter,
# one symbolic pass per child) or "inherit" (the parent's, with the split neuron clamped: no pass;
# the split constraints still enter the margin bound through beta, as in beta-CROWN).
INTERMEDIATE = ("refine", "inherit")
# Seconds kept back from every solver time limit: HiGHS overshoots its limit by up to ~1 s (verify.py).
SOLVER_SLACK = 1.0
# With ``stall_after``: the window without a proven target that stops the search grows with the
# search's time (a search that took 20 s to prove one target may take 10 s for the next).
STALL_FRACTION = 0.5
# Below this width an input coordinate is not halved further.
MIN_INPUT_WIDTH = 1e-7


# -- results ------------------------------------------------------------------------------------


@dataclass
class BabStats:
    """Counters of one ``branch_and_bound`` call (times in seconds)."""

    domains: int = 0  # subdomains bounded, the root included
    branched: int = 0  # subdomains split into two
    max_depth: int = 0
    max_queue: int = 0
    infeasible: int = 0  # children whose splits contradict their bounds (empty)
    leaves: int = 0  # subdomains with nothing left to split (exact LP, or stuck)
    lp_solves: int = 0
    milp_solves: int = 0
    attacks: int = 0
    candidates: int = 0  # points sent to the validator
    fsb_rows: int = 0  # rows bounded to choose "fsb" branchings
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
    "timeout" (the deadline passed) or "unknown".  ``verdicts[j]`` per target, the same words;
    ``decided_by[j]`` for decided targets: "bounds" (the root bound alone), "bab" (subdomain bounds
    and exact leaf LPs), "milp" (the fallback took part), or where a counterexample came from
    ("corner", "lp", "attack", "milp").  ``lower_bounds[j]``: for a robust target, a proven lower
    bound of ``min_box z_label - z_j`` (the smallest bound over the partition; ``-inf`` otherwise).
    ``counterexample``: the validated point (flat float64, inside the box), its validated margin
    and the class ``cex_target`` it prefers.  ``reason``: why targets are undecided.
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
    """A subdomain: the box ``[lo, hi]`` and ReLU splits, with its open targets' bounds."""

    splits: list  # per ReLU layer: None (no split) or int8 array, +1 active / -1 inactive / 0 free
    lo: np.ndarray
    hi: np.ndarray
    bounds: list[LayerBounds]  # intermediate bounds valid on the subdomain
    targets: np.ndarray  # open targets, sorted
    lbs: np.ndarray  # their margin lower bounds (all <= tol)
    alpha: list[np.ndarray] | None  # per layer (len(targets), n) slopes (float32), for the children
    beta: list[np.ndarray] | None  # per layer (len(targets), n) split multipliers (float32)
    depth: int
    branch: tuple[int, int] | None  # (layer, neuron), (-1, input coordinate), or None: a leaf
    point: np.ndarray | None  # the worst target's concretizing corner

    @property
    def key(self) -> float:
        return float(self.lbs.min())

    def nbytes(self) -> int:
        arrays = [b.lower for b in self.bounds] + [b.upper for b in self.bounds]
        arrays += [a for a in (self.alpha or []) + (self.beta or []) + list(self.splits) if a is not None]
        return int(sum(a.nbytes for a in arrays)) + (0 if self.point is None else self.point.nbytes)


def _masks(splits, from_layer: int = 0) -> dict:
    return {i: (s == 1, s == -1) for i, s in enumerate(splits) if s is not None and i >= from_layer}


def _inherited_bounds(parent: list[LayerBounds], splits, layer: int) -> list[LayerBounds] | None:
    """The parent's intermediate bounds (valid on the child, a subset) with the new split clamped
    in; None when the split contradicts them (the child is empty)."""
    bounds = [b.copy() for b in parent]
    s = splits[layer]
    return bounds if _apply_split(bounds[layer], s == 1, s == -1) else None


def _spec(classes: int, label: int, targets: np.ndarray) -> np.ndarray:
    C = np.zeros((targets.size, classes))
    C[:, label] = 1.0
    C[np.arange(targets.size), targets] = -1.0
    return C


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


def relu_scores(kind: str, bounds: list[LayerBounds], coefs) -> list[np.ndarray]:
    """Branching scores per ReLU layer (``-inf`` where a neuron cannot be split).

    ``coefs[i]``: (rows, n_i) coefficients of the open margin rows on layer i's ReLU outputs in the
    subdomain's α/β back-substitution.  "widest": ``u - l``; "intercept": ``-u l / (u - l)`` (the
    triangle's height); "babsr" (BaBSR-like): the intercept the chord adds to each row's lower bound,
    ``sum_rows max(-coef, 0) * (-u l / (u - l))`` -- exactly what splitting the neuron removes from
    the bound with the other terms fixed -- plus, with a tiny weight for ties (e.g. every
    coefficient positive), ``sum_rows |coef| * (u - l)``."""
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
            else:
                Au = A[:, unstable]
                intercept = (np.maximum(-Au, 0.0) * (u * (-l) / (u - l))).sum(axis=0)
                s[unstable] = intercept + 1e-6 * (np.abs(Au).sum(axis=0) * (u - l))
        out.append(s)
    return out


# -- the search ---------------------------------------------------------------------------------


class _Search:
    def __init__(self, net, lo, hi, label, targets, deadline, box_bounds, opts: dict):
        self.net, self.lo, self.hi, self.label = net, lo, hi, label
        self.targets = targets
        self.t0 = time.monotonic()
        self.deadline = deadline
        self.box_bounds = box_bounds
        self.o = opts
        self.input_mode = opts["branching"] == "input"
        self.stats = BabStats()
        self.queue: list = []
        self.mem = 0  # bytes held by the queued subdomains
        self.counter = itertools.count()
        self.closed_lb = {int(j): math.inf for j in targets}
        self.stuck: dict[int, tuple[str, str]] = {}  # target -> (verdict, reason)
        self.used_milp: set[int] = set()
        self.unresolved: set[int] = set()  # targets the MILP fallback took and did not prove
        self.current: list[_Domain] = []  # subdomains popped and not yet replaced by children
        self.cex = None  # (point, margin, class, source)
        self.timed_out = False
        self.queued = {int(j): 0 for j in targets}  # queued subdomains per target
        self.open_targets = len(self.queued)
        self.last_progress = self.t0  # when a target was last proven on every subdomain
        self._model, self._model64 = opts["model"], opts["model64"]
        self._attack = None

    # -- time ---------------------------------------------------------------------------------
    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
            return True
        return False

    def done(self) -> bool:
        return self.cex is not None or self.expired()

    # -- counterexamples ----------------------------------------------------------------------
    def _validate(self, p: np.ndarray) -> tuple[np.ndarray, float] | None:
        self.stats.candidates += 1
        if self.o["validate"] is not None:
            found = self.o["validate"](p.copy())
            if found is None:
                return None
            q, m = found
            q = np.asarray(q, dtype=np.float64).ravel()
            if q.shape != self.lo.shape or np.any(q < self.lo) or np.any(q > self.hi) or not m < 0:
                return None  # the validator's point must be a point of the box it was asked about
            return q, float(m)
        z = self.net.forward(p)[0]
        m = float(z[self.label] - np.delete(z, self.label).max())
        return (p, m) if m < 0 else None

    def try_points(self, points, source: str) -> bool:
        """Send the points whose float64 IR margin is negative to the validator, worst first;
        True once one is accepted (then ``self.cex`` is set)."""
        if self.cex is not None or points is None:
            return self.cex is not None
        P = np.clip(np.atleast_2d(np.asarray(points, dtype=np.float64)), self.lo, self.hi)
        z = self.net.forward(P)
        m = z[:, [self.label]] - z
        m[:, self.label] = np.inf
        worst = m.min(axis=1)
        for r in np.argsort(worst)[:4]:
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
        if not self.o["attack"] or self.cex is not None:
            return self.cex is not None
        from ..attacks.margin import MarginPGD

        t = time.monotonic()
        if self._attack is None:
            if self._model is None:
                self._model = _Torch(self.net, torch.float32)
            if self._model64 is None:
                self._model64 = _Torch(self.net, torch.float64)
            gen = torch.Generator().manual_seed(int(self.o["seed"]))
            self._attack = MarginPGD(steps=20, restarts=1, generator=gen)
        res = self._attack.attack_box(self._model, dom.lo, dom.hi, self.label, [int(j) for j in dom.targets],
                                      starts=dom.point, deadline=self.deadline,
                                      input_shape=self.net.input_shape, model64=self._model64)
        self.stats.attacks += 1
        self.stats.time_attack += time.monotonic() - t
        return res.point is not None and res.found and self.try_points(res.point.ravel(), "attack")

    # -- bounding ----------------------------------------------------------------------------
    def _close(self, targets, lbs):
        for j, v in zip(targets, lbs):
            self.closed_lb[int(j)] = min(self.closed_lb[int(j)], float(v))

    def root(self) -> _Domain | None:
        o = self.o
        t = time.monotonic()
        alpha_init = o["alpha_init"]
        rows_ok = (1, self.targets.size)
        if alpha_init is not None and any(a is not None and np.ndim(a) == 2 and np.shape(a)[0] not in rows_ok
                                          for a in alpha_init):
            alpha_init = None  # slopes of other targets: start from CROWN's instead
        res = alpha_crown(self.net, self.lo, self.hi, self.label, bounds=self.box_bounds, targets=self.targets,
                          steps=o["root_steps"], lr=o["lr"], deadline=self.deadline, stop_at=o["tol"],
                          alpha_init=alpha_init)
        self.stats.domains += 1
        self.stats.time_bounds += time.monotonic() - t
        lbs = res.margins[self.targets]
        alpha = res.alpha if res.alpha is not None else None
        return self._make(self.targets, lbs, [None] * len(self.box_bounds), self.lo, self.hi, self.box_bounds,
                          alpha, None, 0)

    def _make(self, targets, lbs, splits, lo, hi, bounds, alpha, beta, depth, coefs=None, A_x=None,
              corners=None) -> _Domain | None:
        """A subdomain from its bounds, closing the targets above tol; None when none is left.
        The root's corners are checked here; children's by ``expand``, one pass per batch."""
        open_ = ~(lbs > self.o["tol"])
        self._close(targets[~open_], lbs[~open_])
        if not open_.any():
            return None
        tg, lb = targets[open_], lbs[open_]
        alpha_o = None if alpha is None else [a[open_].astype(np.float32) for a in alpha]
        # Multipliers only where the layer has splits (elsewhere they multiply sigma = 0).
        beta_o = None if beta is None else [None if sp is None or b is None else b[open_].astype(np.float32)
                                            for b, sp in zip(beta, splits)]
        if coefs is None:  # the root: one float64 back-substitution for the branching and corners
            layers = stack_rows([bounds], [splits], [tg.size])
            a = crown_alpha_init(layers) if alpha_o is None else [x.astype(np.float64) for x in alpha_o]
            _, coefs, A_x, corners = backsub64(self.net, lo, hi, layers, _spec(self.net.num_classes, self.label, tg),
                                               a, None)
            self.try_points(corners, "corner")
        else:
            coefs = [c[open_] for c in coefs]
            A_x, corners = A_x[open_], corners[open_]
        dom = _Domain(splits, lo, hi, bounds, tg, lb, alpha_o, beta_o, depth, None, corners[int(np.argmin(lb))])
        dom.branch = (self._filtered_branch(dom, coefs) if self.o["branching"] == "fsb"
                      else self._choose(bounds, coefs, A_x, lo, hi, depth))
        return dom

    def _choose(self, bounds, coefs, A_x, lo, hi, depth: int = 0):
        if self.input_mode:
            width = hi - lo
            if not any(b.unstable.any() for b in bounds) or not np.any(width >= MIN_INPUT_WIDTH):
                return None  # affine on the sub-box (the bound is exact there), or nothing left to halve
            # |coefficient| x width, the bound's own spread along each coordinate; at every other
            # depth the relatively widest coordinate instead, since a coordinate the margin's
            # coefficients ignore may still keep neurons unstable (measured on a 3-input net: 43k
            # sub-boxes to depth 48 without deciding, 19 sub-boxes to depth 6 with the rule).
            relative = width / np.maximum(self.hi - self.lo, MIN_INPUT_WIDTH)
            score = relative if depth % 2 else np.abs(A_x).sum(axis=0) * width
            score[width < MIN_INPUT_WIDTH] = -np.inf
            k = int(np.argmax(score))
            if not score[k] > 0:
                k = int(np.argmax(np.where(width >= MIN_INPUT_WIDTH, relative, -np.inf)))
            return (-1, k)
        scores = relu_scores(self.o["branching"], bounds, coefs)
        best, layer = max(((float(s.max()), i) for i, s in enumerate(scores) if s.size), default=(-np.inf, -1))
        if not np.isfinite(best):
            return None
        return (layer, int(np.argmax(scores[layer])))

    def _filtered_branch(self, dom: _Domain, coefs) -> tuple[int, int] | None:
        """FSB: among the ``FSB_CANDIDATES`` best neurons by the babsr score and as many by the
        intercept score (each over all layers), the split whose two children's margin bounds (the
        subdomain's slopes and multipliers, the split neuron clamped) leave the least total deficit
        ``sum_targets min(child bounds, tol)``; babsr's best wins ties.  None when no neuron can be
        split (a leaf).  Only the choice comes from here: every child is still bounded by ``expand``."""
        k = FSB_CANDIDATES
        cands: list[tuple[int, int]] = []
        for kind in ("babsr", "intercept"):
            scores = relu_scores(kind, dom.bounds, coefs)
            ranked = sorted(((float(sc[n]), i, int(n)) for i, sc in enumerate(scores)
                             for n in np.argsort(sc)[::-1][:k] if np.isfinite(sc[n])), reverse=True)
            cands += [(i, n) for _, i, n in ranked[:k] if (i, n) not in cands]
        if len(cands) < 2:
            return cands[0] if cands else None
        T = dom.targets.size
        base = stack_rows([dom.bounds], [dom.splits], [T])
        n_rows = 2 * len(cands) * T
        layers = [RowLayer(*(np.tile(getattr(L, f), (2 * len(cands), 1)) for f in
                             ("up_slope", "up_int", "fixed_low", "free", "sigma"))) for L in base]
        for c, (i, n) in enumerate(cands):
            for side, block in ((1, 2 * c), (-1, 2 * c + 1)):
                rows = slice(block * T, (block + 1) * T)
                L = layers[i]
                L.up_slope[rows, n] = 1.0 if side == 1 else 0.0
                L.up_int[rows, n] = 0.0
                L.fixed_low[rows, n] = 1.0 if side == 1 else 0.0
                L.free[rows, n] = 0.0
        alpha = (crown_alpha_init(layers) if dom.alpha is None else
                 [np.tile(a.astype(np.float64), (2 * len(cands), 1)) for a in dom.alpha])
        beta = None
        if dom.beta is not None:
            beta = [None if b is None else np.tile(b.astype(np.float64), (2 * len(cands), 1)) for b in dom.beta]
        C = np.tile(_spec(self.net.num_classes, self.label, dom.targets), (2 * len(cands), 1))
        lbs, *_ = backsub64(self.net, dom.lo, dom.hi, layers, C, alpha, beta)
        lbs = lbs.reshape(len(cands), 2, T)
        deficit = np.minimum(lbs.min(axis=1), self.o["tol"]).sum(axis=1)
        self.stats.fsb_rows += n_rows
        return cands[int(np.argmax(deficit))]  # argmax keeps the first, babsr's best, on ties

    def children(self, dom: _Domain):
        """The two halves of a subdomain: (splits, lo, hi, first changed ReLU layer)."""
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

    def expand(self, parents: list[_Domain]) -> list[_Domain] | None:
        """Bound both children of every parent in one batch; None when the deadline interrupted
        the intermediate bounds (the parents then still cover their children)."""
        o = self.o
        t = time.monotonic()
        feasible = []  # (parent, splits, lo, hi, bounds)
        for n, dom in enumerate(parents):
            for splits, lo, hi, layer in self.children(dom):
                if self.expired():
                    self.stats.time_bounds += time.monotonic() - t
                    return None
                if self.input_mode:
                    bounds = symbolic_bounds(self.net, lo, hi, prior=dom.bounds)
                elif o["intermediate"] == "inherit":
                    bounds = _inherited_bounds(dom.bounds, splits, layer)
                else:
                    bounds = split_bounds(self.net, lo, hi, _masks(splits, layer), dom.bounds)
                self.stats.domains += 1
                self.stats.max_depth = max(self.stats.max_depth, dom.depth + 1)
                if bounds is None:
                    self.stats.infeasible += 1
                    self._close(dom.targets, [math.inf] * dom.targets.size)
                    continue
                feasible.append((dom, splits, lo, hi, bounds))
        out = []
        if feasible:
            counts = [d.targets.size for d, *_ in feasible]
            layers = stack_rows([f[4] for f in feasible], [f[1] for f in feasible], counts)
            C = np.vstack([_spec(self.net.num_classes, self.label, d.targets) for d, *_ in feasible])
            n_layers = len(layers)
            fresh = crown_alpha_init(layers)
            starts = np.cumsum([0] + counts)
            alpha0 = []
            for i in range(n_layers):
                a = fresh[i].copy()
                for (d, *_), s in zip(feasible, starts):
                    if d.alpha is not None:
                        a[s:s + d.targets.size] = d.alpha[i]
                alpha0.append(a)
            beta0 = None
            if o["bounding"] == "beta" and not self.input_mode:
                beta0 = [np.vstack([d.beta[i] if d.beta is not None and d.beta[i] is not None
                                    else np.zeros((d.targets.size, L.sigma.shape[1])) for d, *_ in feasible]
                                   ).astype(np.float64) for i, L in enumerate(layers)]
            box_rows = None
            if self.input_mode:
                box_rows = (np.repeat(np.stack([f[2] for f in feasible]), counts, axis=0),
                            np.repeat(np.stack([f[3] for f in feasible]), counts, axis=0))
            alpha, beta, _ = optimize(self.net, self.lo, self.hi, layers, C, alpha0, beta0, o["steps"], o["lr"],
                                      deadline=self.deadline, stop_at=o["tol"], box_rows=box_rows)
            lbs, coefs, A_x, corners = backsub64(self.net, self.lo, self.hi, layers, C, alpha, beta, box_rows)
            lbs = np.maximum(lbs, self._interval_floor(feasible, C, counts))
            for (d, splits, lo, hi, bounds), s, c in zip(feasible, starts, counts):
                rows = slice(s, s + c)
                child = self._make(d.targets, lbs[rows], splits, lo, hi, bounds,
                                   [a[rows] for a in alpha], None if beta is None else [b[rows] for b in beta],
                                   d.depth + 1, [k[rows] for k in coefs], A_x[rows], corners[rows])
                if child is not None:
                    out.append(child)
            # The open rows' concretizing corners, one forward pass for the whole batch.
            open_rows = ~(lbs > o["tol"])
            if open_rows.any():
                self.try_points(corners[open_rows], "corner")
        self.stats.time_bounds += time.monotonic() - t
        return out

    def _interval_floor(self, feasible, C, counts) -> np.ndarray:
        """Interval bounds of the margin rows from each child's last ReLU layer (a sound floor)."""
        last = self.net.affines[-1]
        M = np.asarray((last.W.T @ C.T).T) if not isinstance(last.W, np.ndarray) else C @ last.W
        h_lo = np.repeat(np.stack([np.maximum(f[4][-1].lower, 0.0) for f in feasible]), counts, axis=0)
        h_hi = np.repeat(np.stack([np.maximum(f[4][-1].upper, 0.0) for f in feasible]), counts, axis=0)
        return (np.maximum(M, 0.0) * h_lo + np.minimum(M, 0.0) * h_hi).sum(axis=1) + C @ last.b

    def push(self, dom: _Domain):
        heapq.heappush(self.queue, (dom.key, next(self.counter), dom))
        for j in dom.targets:
            self.queued[int(j)] += 1
        self.mem += dom.nbytes()
        self.stats.max_queue = max(self.stats.max_queue, len(self.queue))

    def pop(self) -> _Domain:
        dom = heapq.heappop(self.queue)[2]
        for j in dom.targets:
            self.queued[int(j)] -= 1
        self.mem -= dom.nbytes()
        return dom

    # -- leaves ------------------------------------------------------------------------------
    def leaf(self, dom: _Domain) -> bool:
        """Nothing left to split.  ReLU splits: the subdomain's exact LP closes, falsifies or leaves
        each target stuck.  Input splits: a sub-box where the bound stays <= tol (stuck).  False
        when interrupted (deadline, counterexample) before every target was settled."""
        self.stats.leaves += 1
        if self.input_mode:
            for j in dom.targets:
                self.set_stuck(j, UNKNOWN, f"class {int(j)}: a sub-box whose margin bound stays <= tol "
                                           f"with nothing left to split")
            return True
        t = time.monotonic()
        milp, logits = exact_encoding(self.net, dom.splits, dom.lo, dom.hi, dom.bounds, self.box_bounds)
        finished = True
        for j in dom.targets:
            if self.done():
                finished = False
                break
            self.stats.lp_solves += 1
            bound, point, objective = solve_lp(margin_objective(milp, logits, self.label, int(j)), self.remaining())
            if bound > self.o["tol"]:
                self._close([j], [bound])
                continue
            if point is not None and objective is not None and objective < 0:
                self.try_points(point, "lp")
            if self.expired():  # the LP may have been cut short
                finished = False
                break
            # Stuck unless a counterexample decides j (a counterexample's verdict wins).
            value = "no optimal solve" if objective is None else f"{objective:.3g}"
            self.set_stuck(j, UNKNOWN, f"class {int(j)}: a leaf subdomain's exact LP gives {value} (not > tol)")
        self.stats.time_lp += time.monotonic() - t
        return finished

    def lp_close(self, dom: _Domain) -> _Domain | None:
        """``lp="open"``: the LP relaxation of the subdomain on every open target (tighter than the
        α/β bound: the split constraints are exact in it); None when it closes every target."""
        t = time.monotonic()
        milp, logits = exact_encoding(self.net, dom.splits, dom.lo, dom.hi, dom.bounds,
                                      dom.bounds if self.input_mode else self.box_bounds, self.input_mode)
        keep = np.ones(dom.targets.size, dtype=bool)
        for r, j in enumerate(dom.targets):
            if self.done():
                break
            self.stats.lp_solves += 1
            bound, point, objective = solve_lp(margin_objective(milp, logits, self.label, int(j)), self.remaining())
            if bound > self.o["tol"]:
                keep[r] = False
                self._close([j], [bound])
            else:
                dom.lbs[r] = max(dom.lbs[r], bound)
                if point is not None and objective is not None and objective < 0 and self.try_points(point, "lp"):
                    break
        self.stats.time_lp += time.monotonic() - t
        if not keep.any():
            return None
        dom.targets, dom.lbs = dom.targets[keep], dom.lbs[keep]
        dom.alpha = None if dom.alpha is None else [a[keep] for a in dom.alpha]
        dom.beta = None if dom.beta is None else [None if b is None else b[keep] for b in dom.beta]
        return dom

    # -- MILP fallback -----------------------------------------------------------------------
    def fallback(self):
        """Hand every remaining subdomain to the MILP, target by target, worst first.  A target
        leaves ``self.unresolved`` only when every one of its MILPs proved it."""
        t = time.monotonic()
        remaining = [d for _, _, d in sorted(self.queue, key=lambda e: (e[0], e[1]))]
        self.queue, self.mem = [], 0
        self.queued = dict.fromkeys(self.queued, 0)
        self.unresolved |= {int(j) for d in remaining for j in d.targets}
        for j in sorted(self.unresolved):
            if self.done():
                break
            if j in self.stuck:
                continue
            doms = [d for d in remaining if j in d.targets]
            self.used_milp.add(j)
            if len(doms) <= self.o["milp_max_domains"]:
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
            self._close([j], [bound if bound is not None else self.o["tol"]])
            return True
        if verdict == COUNTEREXAMPLE and x is not None and self.try_points(x, "milp"):
            return False
        if verdict == TIMEOUT or self.expired():
            self.timed_out = True
            self.set_stuck(j, TIMEOUT, f"class {j}: MILP fallback timed out ({status})")
        else:
            self.set_stuck(j, UNKNOWN, f"class {j}: MILP fallback {verdict} ({status}, objective {objective})")
        return False

    def _no_time(self, j) -> bool:
        if self._time_for_solver() > 0.05:
            return False
        self.timed_out = True
        self.set_stuck(j, TIMEOUT, f"class {j}: no time left for the MILP fallback")
        return True

    def _milp_one(self, d: _Domain, j: int) -> bool:
        if self._no_time(j):
            return False
        milp, logits = exact_encoding(self.net, d.splits, d.lo, d.hi, d.bounds,
                                      d.bounds if self.input_mode else self.box_bounds, self.input_mode)
        verdict, bound, x, objective, status = solve_milp(margin_objective(milp, logits, self.label, j),
                                                          self._time_for_solver(), self.o["tol"])
        return self._record(j, verdict, bound, x, objective, status)

    def _milp_box(self, j: int) -> bool:
        from ..milp.highs import solve_highs

        if self._no_time(j):
            return False
        milp, logits = encode_network(self.net, self.lo, self.hi, self.box_bounds)
        res = solve_highs(margin_objective(milp, logits, self.label, j), self._time_for_solver(), tol=self.o["tol"])
        return self._record(j, res.status, res.objective_bound, res.x, res.objective_value, res.solver_status)

    def set_stuck(self, j: int, kind: str, reason: str):
        self.stuck.setdefault(int(j), (kind, reason))

    # -- the loop ----------------------------------------------------------------------------
    def no_progress(self) -> str:
        """``stall_after`` (seconds): "" while some target was proven on its last subdomain within
        the last max(stall_after, STALL_FRACTION x the search's time); else why the search stops."""
        now = time.monotonic()
        open_now = sum(1 for j, k in self.queued.items() if k > 0)
        if open_now < self.open_targets:
            self.open_targets, self.last_progress = open_now, now
            return ""
        after = self.o["stall_after"]
        if after is None:
            return ""
        window = max(float(after), STALL_FRACTION * (now - self.t0))
        if now - self.last_progress < window:
            return ""
        return f"no target proven in the last {now - self.last_progress:.1f} s"

    def stalled(self) -> str:
        if len(self.queue) > self.o["max_domains"]:
            return f"more than {self.o['max_domains']} open subdomains"
        if self.mem > self.o["max_memory_mb"] * 2 ** 20:
            return f"the open subdomains hold more than {self.o['max_memory_mb']:g} MB"
        after = self.o["milp_after"]
        if self.deadline is not None and after is not None:
            if time.monotonic() - self.t0 > after * (self.deadline - self.t0):
                return f"{after:.0%} of the time spent"
        return ""

    def run(self) -> str:
        """The search.  Invariant: the queue, ``self.current`` (popped subdomains not yet replaced
        by their children) and the closed subdomains cover the box; a target is robust at the end
        only if it is open in none of the first two, not unresolved by the fallback, not stuck."""
        n_relu = len(self.net.relu_layer_sizes)
        placeholder = _Domain([None] * n_relu, self.lo, self.hi, self.box_bounds, self.targets,
                              np.full(self.targets.size, -np.inf), None, None, 0, None, None)
        self.current = [placeholder]
        root = self.root()
        self.current = []
        if root is None:
            return "bounds"
        self.push(root)
        if self.cex is not None or self.attack(root):
            return "bab"
        pops = 0
        while self.queue:
            if self.done():
                break
            why = self.stalled()
            if why:
                if self.o["milp_fallback"]:
                    self.stats.fallback = why
                    self.fallback()
                else:
                    for _, _, d in self.queue:
                        for j in d.targets:
                            self.set_stuck(j, UNKNOWN, f"BaB stopped: {why} (no MILP fallback)")
                break
            dom = self.pop()
            self.current = [dom]
            if dom.branch is None:
                if self.leaf(dom):
                    self.current = []
                continue
            while len(self.current) < self.o["batch"] and self.queue and self.queue[0][2].branch is not None:
                self.current.append(self.pop())
            pops += 1
            if self.o["attack_every"] and pops % self.o["attack_every"] == 0 and dom.key < 0 and self.attack(dom):
                break
            kids = self.expand(self.current)
            if kids is None:
                break
            self.stats.branched += len(self.current)
            for child in kids:
                if child is not None and self.o["lp"] == "open" and child.branch is not None and not self.done():
                    child = self.lp_close(child)
                if child is not None:
                    self.push(child)
            self.current = []
            why = self.no_progress()
            if why and self.queue:
                for _, _, d in self.queue:
                    for j in d.targets:
                        self.set_stuck(j, UNKNOWN, f"BaB stopped: {why}")
                break
        return "bab"


def branch_and_bound(net: Network, lo, hi, label: int, targets=None, deadline: float | None = None, *,
                     bounds: list[LayerBounds] | None = None, model: torch.nn.Module | None = None,
                     model64: torch.nn.Module | None = None,
                     validate: Callable[[np.ndarray], tuple[np.ndarray, float] | None] | None = None,
                     branching: str = "babsr", bounding: str = "beta", max_domains: int = 20_000,
                     attack: bool = True, milp_fallback: bool = True, milp_after: float | None = 0.5,
                     milp_max_domains: int = 16, max_memory_mb: float = 1024, batch: int = 8, steps: int = 10,
                     root_steps: int = 30,
                     lr: float = 0.1, tol: float = 1e-6, lp: str = "leaves", attack_every: int = 16,
                     alpha_init=None, seed: int = 0, intermediate: str = "refine",
                     stall_after: float | None = None) -> BabResult:
    """Decide ``z_label - z_j > tol`` on the box ``[lo, hi]`` for every ``j`` in ``targets``
    (package doc: what is sound, where counterexamples come from, when the MILP takes over).

    ``targets``: the open classes (default: every class but the label).  ``deadline``: a
    ``time.monotonic()`` value (None: no limit), checked between subdomains and passed to every
    bound, attack and solver call; the MILP fallback gets the time that is left, minus a margin
    for HiGHS's overshoot.  ``bounds``: intermediate bounds valid on the whole box (default
    ``symbolic_bounds``; tighter ones, e.g. LP-tightened, shrink the search and the MILP).
    ``model`` / ``model64``: the torch model in float32 / float64 for the attack (default: the IR in
    torch).  ``validate(point) -> (point, margin) | None``: the counterexample authority, e.g.
    ``lambda p: verifier.validate_counterexample(p, lo, hi, label)`` (default: the IR's float64
    forward pass); only points it accepts, inside the box, are reported.

    ``branching``: "babsr" (default), "fsb" (``FSB_CANDIDATES``), "widest", "intercept"
    (``relu_scores``) or "input" (halve the
    input coordinate with the largest ``|coefficient| x width``: for low-dimensional inputs).
    ``bounding``: "beta" (α/β-CROWN, split constraints as Lagrange terms) or "alpha" (α-CROWN on
    the split-clamped bounds).  ``batch``: subdomains popped (worst first) and bounded together.
    ``steps`` / ``root_steps`` / ``lr``: the optimization per batch / at the root.  ``lp``:
    "leaves" (the exact LP only where nothing is left to split) or "open" (also the LP relaxation
    of every open subdomain: exact split constraints; worth it on small nets only).

    ``max_domains`` / ``max_memory_mb`` (what the queued subdomains' arrays may hold) /
    ``milp_after`` (fraction of the time until ``deadline``; None: never by time): when BaB has
    stalled; then the MILP takes over (per subdomain when at most ``milp_max_domains`` remain,
    else per target on the whole box), or with ``milp_fallback=False`` the open targets are
    "unknown".  ``attack_every``: a short MarginPGD from the worst subdomain's corner every that
    many batches (0: never; ``attack=False``: no attack at all, not even at the root).
    ``alpha_init``: root slopes for ``alpha_crown`` (e.g. a previous ``AlphaResult.alpha`` for the
    same targets; ignored when its rows do not match them).  ``stall_after`` (seconds; None: never):
    stop when no target has been proven on its last subdomain for max(stall_after,
    ``STALL_FRACTION`` x the search's time so far); the open targets are then "unknown", for a
    caller (the cascade) to hand to the MILP with the time that is left.
    """
    lo, hi = box_vectors(net, lo, hi)
    label = int(label)
    classes = net.num_classes
    if not 0 <= label < classes:
        raise HamverifyError(f"label {label} out of range for {classes} classes")
    if branching not in BRANCHING:
        raise HamverifyError(f"unknown branching {branching!r}; known: {', '.join(BRANCHING)}")
    if bounding not in BOUNDING:
        raise HamverifyError(f"unknown bounding {bounding!r}; known: {', '.join(BOUNDING)}")
    if intermediate not in INTERMEDIATE:
        raise HamverifyError(f"unknown intermediate {intermediate!r}; known: {', '.join(INTERMEDIATE)}")
    if lp not in ("leaves", "open"):
        raise HamverifyError(f"lp must be 'leaves' or 'open', got {lp!r}")
    if not tol >= 0:
        raise HamverifyError(f"tol must be >= 0, got {tol}")
    if not net.relu_layer_sizes:
        raise HamverifyError("branch and bound needs at least one ReLU layer")
    if targets is None:
        targets = [j for j in range(classes) if j != label]
    targets = np.array(sorted({int(j) for j in targets if int(j) != label}), dtype=int)
    if targets.size and (targets.min() < 0 or targets.max() >= classes):
        raise HamverifyError(f"targets must be classes in 0..{classes - 1}")
    t0 = time.monotonic()
    opts = dict(model=model, model64=model64, validate=validate, branching=branching, bounding=bounding,
                max_domains=int(max_domains), attack=bool(attack), milp_fallback=bool(milp_fallback),
                milp_after=milp_after, milp_max_domains=int(milp_max_domains), max_memory_mb=float(max_memory_mb),
                batch=max(1, int(batch)),
                steps=int(steps), root_steps=int(root_steps), lr=float(lr), tol=float(tol), lp=lp,
                attack_every=int(attack_every), alpha_init=alpha_init, seed=int(seed), intermediate=intermediate,
                stall_after=None if stall_after is None else float(stall_after))
    if targets.size == 0:
        return BabResult(ROBUST, {}, {}, {}, stats=BabStats(time=time.monotonic() - t0))
    search = _Search(net, lo, hi, label, targets, deadline,
                     symbolic_bounds(net, lo, hi) if bounds is None else bounds, opts)
    how = search.run()
    return _result(search, how, t0)


def _result(s: _Search, how: str, t0: float) -> BabResult:
    """Per-target verdicts.  Robust only for a target that is open in no queued subdomain nor in
    the subdomains being processed when the search stopped, not left unresolved by the MILP
    fallback and not stuck; the search stops at the first validated counterexample."""
    open_ = {int(j) for _, _, d in s.queue for j in d.targets} | set(s.unresolved)
    for d in s.current:
        open_ |= {int(j) for j in d.targets}
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
