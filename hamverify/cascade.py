"""One verification cascade, cheap first, under one deadline (issue 13): used by ``hamverify verify``
(one input, one open *objective* per target class) and by ``hamverify vnnlib`` (one input box, one
objective per disjunct of the property).

Stages, in order; each runs only on the objectives still open, and the box ends at the first
stage that decides it:

1. ``bounds``: symbolic (or interval) pre-activation bounds and the objectives' lower bounds.  A
   proof here ends the input without any attack.
2. the problem's attacks (``verify``: the paper's PGD-20x10, recorded as ``pgd_robust``, then
   ``attack``: per-target margin PGD, :class:`hamverify.attacks.MarginPGD`; ``vnnlib``: the
   disjuncts' violation PGD).  Every point is validated in float64 (and for VNN-LIB by
   onnxruntime) before it counts.
3. ``alpha``: alpha-CROWN (:func:`hamverify.bounds.alpha_crown`) on the open targets; with
   ``tightening = "alpha"``, if targets stay open, the intermediate bounds optimized as well
   (:func:`hamverify.bounds.optimized.alpha_bounds`) and the margins bounded again on them.
4. with ``tightening = "lp"`` only: a short ``bab`` probe (``BAB_PROBE_SHARE`` of the budget), then
   ``lp``: per-neuron LP tightening of the intermediate bounds with ``lp_share`` of the remaining
   budget (never all of it), then ``alpha`` again on the tightened bounds.
5. ``bab``: branch and bound over ReLU splits (``hamverify.bab``, when that module is installed)
   with ``bab_share`` of the remaining budget.
6. ``local``: a trust-region MILP search for counterexamples (:mod:`hamverify.local_search`) on
   the open targets whose best margin-attack value lies near 0 relative to their lower bound
   (``LOCAL_TRIGGER``), with ``LOCAL_SHARE`` of the remaining budget; it only ever falsifies.
7. ``milp``: the MILP backstop (per target for ``verify``, a disjunction for ``vnnlib``) with the
   rest of the budget.

``alpha``, ``bab`` and ``local`` need objectives of the margin form ``z_label - z_j`` (always for ``verify``;
for VNN-LIB only when every open disjunct is one such row); they are also skipped when at most
``DIRECT_MILP_UNSTABLE`` ReLUs are unstable: such a MILP has so few binaries that HiGHS solves it
faster than alpha-CROWN can run its optimizer.

Soundness: an objective is *proven* only by a sound lower bound above ``tol`` (bounds, LP, alpha),
by a BaB that proved every subdomain, or by a solver's final status; *falsified* only by a point of
the box that the problem's own ``validate`` accepts.  Every stage gets a deadline and checks it in
its loops; the time of each stage is kept (``Outcome.stage_times``).
"""
from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from . import HamverifyError

STAGES = ("attack", "alpha", "bab", "local", "milp")  # the optional stages after the bounds, in their order
# ``local`` is opt-in: on the MNIST 0.3 inputs the cascade leaves as timeouts it decided none that
# BaB did not (benchmarks/cascade_stages.py; docs/METHOD.md §8), and its share comes out of the MILP's.
DEFAULT_STAGES = "attack,alpha,bab,milp"
# At most this many unstable ReLUs after the bounds: straight to the MILP (alpha and BaB skipped).
DIRECT_MILP_UNSTABLE = 16
ATTACK_SHARE = 0.25  # of the remaining budget, at most, for the margin attack (its steps bound it too)
ALPHA_SHARE = 0.25   # of the remaining budget, at most, for alpha-CROWN (its steps bound it too)
BAB_PROBE_SHARE = 0.05  # of the remaining budget for the short BaB before the LP stage
# BaB proper stops when no target has been proven for max(BAB_STALL_SECONDS, half its time) and
# hands the rest of its share to the MILP (hamverify.bab's ``stall_after``).
BAB_STALL_SECONDS = 5.0
LOCAL_SHARE = 0.25  # of the remaining budget, at most, for the trust-region MILP search
# The local search runs on an objective whose margin-attack value a and lower bound l have
# a <= LOCAL_TRIGGER * (a - l): the attack got within a quarter of the bound gap of a violation.
LOCAL_TRIGGER = 0.25


def parse_stages(text) -> tuple[str, ...]:
    """``"attack,alpha,bab,local,milp"`` (any subset, in any order, or ``"none"``) -> the stages in cascade
    order; unknown names raise HamverifyError."""
    if isinstance(text, (tuple, list)):
        names = [str(t).strip() for t in text]
    else:
        names = [t.strip() for t in str(text).split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = sorted(set(names) - set(STAGES))
    if unknown:
        raise HamverifyError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)} (or none)")
    return tuple(s for s in STAGES if s in names)


DEFAULT_STAGE_NAMES = parse_stages(DEFAULT_STAGES)


class Budget:
    """One deadline for a whole input (``time.monotonic()`` seconds) and shares of what is left."""

    def __init__(self, timeout: float, start: float | None = None):
        self.start = time.monotonic() if start is None else float(start)
        self.timeout = float(timeout)
        self.deadline = self.start + self.timeout

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def share(self, fraction: float, floor: float = 0.0) -> float:
        """A deadline ``fraction`` of the remaining time from now (at least ``floor`` seconds), never
        past the budget's own."""
        now = time.monotonic()
        return min(self.deadline, now + max(float(floor), float(fraction) * max(self.deadline - now, 0.0)))

    def elapsed(self) -> float:
        return time.monotonic() - self.start


class StageTimes(dict):
    """Seconds per stage; ``with times("alpha"): ...`` adds the block's time to that stage."""

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.monotonic()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.monotonic() - t


@dataclass
class Found:
    """A validated counterexample: ``point`` (flat float64, inside the box), the objective ``key``
    it violates and the problem's ``payload`` (verify: the float64 margin; vnnlib: (x32, y_ort))."""

    point: np.ndarray
    key: Any
    payload: Any = None


@dataclass
class Outcome:
    """What the cascade decided for one box.  ``verdict``: proved | falsified | timeout | unknown."""

    verdict: str
    decided_by: str | None = None
    found: Found | None = None
    reason: str | None = None
    stage_times: StageTimes = field(default_factory=StageTimes)
    bounds: list | None = None
    open_keys: list = field(default_factory=list)
    bab: Any = None  # the BaB stage's BabResult, when it ran


@dataclass(frozen=True)
class CascadeConfig:
    tightening: str = "symbolic"
    stages: tuple[str, ...] = DEFAULT_STAGE_NAMES
    tol: float = 1e-6
    lp_time_per_neuron: float = 0.5
    lp_share: float = 0.25
    alpha_steps: int = 20
    alpha_bound_steps: int = 20  # with tightening "alpha": Adam steps per intermediate row chunk (0: off)
    bab_share: float = 0.3
    bab_stall: float | None = BAB_STALL_SECONDS  # BaB proper's stall_after (None: it keeps its whole share)
    bab_branching: str = "babsr"  # hamverify.bab's branching rule (BRANCHING)
    bab_intermediate: str = "refine"  # children's intermediate bounds (hamverify.bab INTERMEDIATE)
    bab_batch: int = 8  # subdomains bounded together


class Problem(Protocol):
    """What a caller supplies (verify.py's per-input problem, vnncomp.py's per-box problem)."""

    net: Any
    lo: np.ndarray
    hi: np.ndarray

    def keys(self) -> list: ...

    def lower_bounds(self, bounds) -> dict:
        """Sound lower bound per objective key; the objective is proven when it exceeds tol."""

    def sure_violations(self, bounds) -> list:
        """[(key, point)] to validate: points the bounds show violate an objective (may be empty)."""

    def attacks(self) -> list[tuple[str, Callable]]:
        """[(stage name, fn(open_keys, budget) -> Found | None)], run in this order."""

    def validate(self, point, key) -> Found | None: ...

    def polish(self, point, key, deadline: float) -> Found | None:
        """An attack restarted from ``point`` (a solver's or BaB's), validated; or None."""

    def margin_form(self, keys) -> tuple[int, dict] | None:
        """(label, {key: (target class, scale c > 0, offset d)}) when each objective is
        ``c (z_label - z_target) - d``; else None."""

    def bab_validator(self) -> Callable:
        """``point -> (point, margin < 0) | None`` for BaB: the problem's own validation."""

    def torch_models(self) -> tuple:
        """(float32, float64) torch models for BaB's attack, or (None, None)."""

    def seed(self) -> int: ...

    def milp(self, keys, bounds, budget: Budget, times: StageTimes) -> Outcome: ...

    def note_bounds(self, stage: str, bounds, values: dict) -> None:
        """Record hook after each bounding stage."""


# ------------------------------------------------------------------------------------------ stages

def bounds_stage(net, lo, hi, tightening: str, deadline: float | None):
    """Intermediate bounds for the first stage: IA, or symbolic (layers not reached by the
    deadline keep their IA bounds).  ``lp`` starts from the symbolic bounds (its LPs are the
    ``lp`` stage)."""
    from .bounds import interval_bounds, symbolic_bounds
    # "alpha" and "lp" start from the symbolic bounds too: their optimization runs in the alpha /
    # lp stages, only for inputs the cheaper bounds leave open.
    if tightening == "ia":
        return interval_bounds(net, lo, hi)
    return symbolic_bounds(net, lo, hi, deadline=deadline)


def lp_stage(net, lo, hi, bounds, time_per_neuron: float, deadline: float):
    """``bounds`` LP-tightened layer by layer (``hamverify.bounds.lp``) until ``deadline``; every
    later layer re-derived symbolically (deadline-aware); sound whenever it stops."""
    from .bounds.lp import _tighten_layer
    from .bounds.symbolic import refine_symbolic
    bounds = [b.copy() for b in bounds]
    for layer in range(1, len(bounds)):
        if time.monotonic() >= deadline:
            break
        finished = _tighten_layer(net, lo, hi, bounds, layer, time_per_neuron, deadline)
        refine_symbolic(net, lo, hi, bounds, first_layer=layer + 1, deadline=deadline)
        if not finished:
            break
    return bounds


_OPTIM_READY: list = []


def warm_up_optimizer() -> float:
    """Build one torch Adam optimizer (the first one in a process imports torch's compiler stack:
    ~1.4 s, measured) so that alpha-CROWN's first call fits its deadline; returns the seconds spent."""
    if _OPTIM_READY:
        return 0.0
    import torch
    t = time.monotonic()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    _OPTIM_READY.append(True)
    return time.monotonic() - t


# The first optimizer of a process needs about this long (warm_up_optimizer); with less time left,
# alpha-CROWN and BaB are skipped rather than overrun the deadline.
OPTIMIZER_WARM_UP = 2.0


def optimizer_ready(deadline: float) -> bool:
    """The optimizer is warm, or there is time to warm it now."""
    if _OPTIM_READY:
        return True
    if deadline - time.monotonic() < OPTIMIZER_WARM_UP:
        return False
    warm_up_optimizer()
    return True


def alpha_stage(net, lo, hi, label: int, targets, bounds, steps: int, deadline: float, stop_at: float):
    """alpha-CROWN margin lower bounds (``+inf`` at the label) on ``targets``, floored by the
    symbolic ones; the deadline is checked before every optimizer step."""
    from .bounds import alpha_crown
    return alpha_crown(net, lo, hi, label, bounds=bounds, targets=targets, steps=steps, deadline=deadline,
                       stop_at=stop_at).margins


def alpha_bounds_stage(net, lo, hi, bounds, steps: int, deadline: float):
    """``bounds`` with every later layer's unstable neurons bounded by optimized CROWN
    (``hamverify.bounds.optimized``); what the deadline cuts keeps the given bounds."""
    from .bounds.optimized import alpha_bounds
    return alpha_bounds(net, lo, hi, prior=bounds, steps=steps, deadline=deadline)


def bab_module():
    """``hamverify.bab`` when it is installed (and offers ``branch_and_bound``), else None: the
    stage is then skipped and the open objectives go to the MILP."""
    try:
        module = importlib.import_module(f"{__package__}.bab")
    except ImportError:
        return None
    return module if callable(getattr(module, "branch_and_bound", None)) else None


def bab_stage(problem, label: int, targets, bounds, deadline: float, tol: float, stall_after: float | None = None,
              branching: str = "babsr", intermediate: str = "refine", batch: int = 8):
    """``hamverify.bab.branch_and_bound`` on the open ``targets`` over the box, from the cascade's
    intermediate bounds, with the problem's validator (only points it accepts come back) and
    without BaB's own MILP fallback (the cascade's MILP stage is the backstop).  Returns its
    ``BabResult`` (per-target ``verdicts``: robust | counterexample | timeout | unknown), or None
    when no BaB is installed."""
    module = bab_module()
    if module is None:
        return None
    model, model64 = problem.torch_models()
    return module.branch_and_bound(problem.net, problem.lo, problem.hi, label, targets=list(targets),
                                   deadline=deadline, bounds=bounds, model=model, model64=model64,
                                   validate=problem.bab_validator(), milp_fallback=False, milp_after=None, tol=tol,
                                   seed=problem.seed(), stall_after=stall_after, branching=branching,
                                   intermediate=intermediate, batch=batch)


def local_stage(problem, label: int, rows: dict, values: dict, deadline: float):
    """The trust-region MILP search (``hamverify.local_search``) on the objectives of ``rows``
    (``{key: (target, c, d)}``, objective ``c (z_label - z_target) - d``) whose targeted margin
    PGD value ``a`` has ``a <= LOCAL_TRIGGER * (a - values[key])``, the closest to a violation
    first; returns the first ``Found`` the problem's ``validate`` (or ``polish``) accepts, else None."""
    import torch

    from .attacks.margin import MarginPGD
    from .local_search import trust_region_search
    net = problem.net
    model, model64 = problem.torch_models()
    if model is None:
        from .ir_module import IRModule
        model64 = IRModule(net).eval()
        model = IRModule(net).float().eval()
    lo, hi = np.asarray(problem.lo, dtype=np.float64).ravel(), np.asarray(problem.hi, dtype=np.float64).ravel()
    gen = torch.Generator().manual_seed(int(problem.seed()))
    queue = []
    for key, (t, c, d) in rows.items():
        if time.monotonic() >= deadline:
            return None
        res = MarginPGD(steps=100, restarts=4, generator=gen).attack_box(
            model, lo, hi, label, targets=[int(t)], deadline=deadline, input_shape=net.input_shape, model64=model64)
        if res.point is None or not np.isfinite(res.margin):
            continue
        a = c * float(res.margin) - d
        if a < 0:
            found = problem.validate(res.point.ravel(), key)
            if found is not None:
                return found
        if a <= LOCAL_TRIGGER * (a - values.get(key, -np.inf)):
            queue.append((a, key, int(t), d / c, res.point.ravel()))
    for a, key, t, threshold, start in sorted(queue, key=lambda q: q[0]):
        def accept(point, key=key):
            found = problem.validate(point, key)
            if found is None:  # the solver's point carries its tolerances: search near it
                found = problem.polish(point, key, min(deadline, time.monotonic() + 1.0))
            return found
        res = trust_region_search(net, lo, hi, label, t, start, deadline, accept, threshold=threshold)
        if res.found is not None:
            return res.found
        if time.monotonic() >= deadline:
            break
    return None


# ------------------------------------------------------------------------------------------ engine

def _unstable_total(bounds) -> int:
    return int(sum(int(b.unstable.sum()) for b in bounds)) if bounds else 0


class _Decided(Exception):
    """Raised by a stage that decided the box (or ran out of time); carries the finished Outcome."""

    def __init__(self, out: Outcome):
        self.out = out


class _Run:
    """The state of one cascade run: the bounds, each open objective's best lower bound, the times."""

    def __init__(self, problem: Problem, budget: Budget, cfg: CascadeConfig):
        self.p, self.budget, self.cfg = problem, budget, cfg
        self.out = Outcome("unknown")
        self.times = self.out.stage_times
        self.bounds = None
        self.values: dict = {}
        self.open: list = []

    # -- bookkeeping ---------------------------------------------------------------------------
    def merge(self, stage: str, values: dict) -> None:
        """Keep each objective's best sound bound; close those above tol; stop when none is open."""
        self.values = {**self.values, **{k: max(v, self.values.get(k, -np.inf)) for k, v in values.items()}}
        self.p.note_bounds(stage, self.bounds, self.values)
        self.set_open([k for k in self.open if not self.values.get(k, -np.inf) > self.cfg.tol], stage)

    def set_open(self, keys: list, stage: str) -> None:
        self.open = keys
        self.out.open_keys = keys
        if not keys:
            self.finish("proved", stage)

    def finish(self, verdict: str, by: str | None = None, found: Found | None = None, reason: str | None = None):
        self.out.verdict, self.out.decided_by, self.out.found, self.out.reason = verdict, by, found, reason
        self.out.bounds = self.bounds
        raise _Decided(self.out)

    def check_time(self, stage: str) -> None:
        if self.budget.expired():
            self.finish("timeout", reason="budget spent computing bounds" if stage == "bounds" else
                        f"budget spent in the {stage} stage")

    # -- stages --------------------------------------------------------------------------------
    def bounds_stage(self) -> None:
        p = self.p
        with self.times("bounds"):
            self.bounds = bounds_stage(p.net, p.lo, p.hi, self.cfg.tightening, self.budget.deadline)
            values = p.lower_bounds(self.bounds)
        for key, point in p.sure_violations(self.bounds):
            found = p.validate(point, key)
            if found is not None:
                self.finish("falsified", "bounds", found)
        self.open = list(p.keys())
        self.merge("bounds", values)
        self.check_time("bounds")

    def attacks(self) -> None:
        for name, attack in self.p.attacks():
            if name != "pgd" and name not in self.cfg.stages:
                continue
            with self.times(name):
                found = attack(self.open, self.budget)
            if found is not None:
                self.finish("falsified", name, found)
            self.check_time(name)

    def lp(self) -> None:
        p = self.p
        with self.times("lp"):
            self.bounds = lp_stage(p.net, p.lo, p.hi, self.bounds, self.cfg.lp_time_per_neuron,
                                   self.budget.share(self.cfg.lp_share))
            values = p.lower_bounds(self.bounds)
        self.merge("lp", values)
        self.check_time("lp")

    def small(self) -> bool:
        """Few enough unstable ReLUs that the MILP is the cheapest complete method."""
        return "milp" in self.cfg.stages and _unstable_total(self.bounds) <= DIRECT_MILP_UNSTABLE

    def alpha(self) -> None:
        """alpha-CROWN on the open margins; with ``tightening = "alpha"`` and margins still open, the
        intermediate bounds optimized too (``bounds.optimized.alpha_bounds``) and the
        margins bounded again on them: the later stages (BaB, MILP) start from these.  Not under
        "lp": on the first 200 MNIST 0.3 inputs it left 13 timeouts against 9 without it
        (docs/METHOD.md §8)."""
        form = self.p.margin_form(self.open)
        if form is None or "alpha" not in self.cfg.stages or self.cfg.alpha_steps <= 0 or self.small():
            return
        self.alpha_margins(form)
        if self.cfg.tightening != "alpha" or self.cfg.alpha_bound_steps <= 0 or self.small():
            return
        with self.times("alpha"):
            self.bounds = alpha_bounds_stage(self.p.net, self.p.lo, self.p.hi, self.bounds, self.cfg.alpha_bound_steps,
                                             self.budget.share(ALPHA_SHARE))
            values = self.p.lower_bounds(self.bounds)
        self.merge("alpha", values)
        self.check_time("alpha")
        form = self.p.margin_form(self.open)  # the targets the new bounds left open
        if form is not None and not self.small():
            self.alpha_margins(form)

    def alpha_margins(self, form) -> None:
        label, rows = form
        with self.times("alpha"):
            if not optimizer_ready(self.budget.share(ALPHA_SHARE)):
                return
            targets = sorted({t for t, _, _ in rows.values()})
            stop = max((d + self.cfg.tol) / c for _, c, d in rows.values())
            margins = alpha_stage(self.p.net, self.p.lo, self.p.hi, label, targets, self.bounds, self.cfg.alpha_steps,
                                  self.budget.share(ALPHA_SHARE), stop)
            values = {k: c * margins[t] - d for k, (t, c, d) in rows.items()}
        self.merge("alpha", values)
        self.check_time("alpha")

    def bab(self, share: float, stall_after: float | None = None) -> None:
        form = self.p.margin_form(self.open)
        if form is None or "bab" not in self.cfg.stages or self.small() or bab_module() is None:
            return
        label, rows = form
        by_target: dict = {}
        bab_tol = self.cfg.tol
        for k, (t, c, d) in rows.items():
            if d == 0:  # BaB proves z_label - z_t > tol; a row with an offset goes to the MILP
                by_target.setdefault(t, []).append(k)
                bab_tol = max(bab_tol, self.cfg.tol / c)  # c (z_label - z_t) > tol needs z_label - z_t > tol / c
        if not by_target:
            return
        with self.times("bab"):
            if not optimizer_ready(self.budget.share(share)):
                return
            res = bab_stage(self.p, label, sorted(by_target), self.bounds, self.budget.share(share), bab_tol,
                            stall_after, self.cfg.bab_branching, self.cfg.bab_intermediate, self.cfg.bab_batch)
            if res is None:
                return
            self.out.bab = res
            if res.counterexample is not None:
                t = res.cex_target if res.cex_target in by_target else sorted(by_target)[0]
                for k in by_target[t]:
                    found = self.p.validate(res.counterexample, k)
                    if found is not None:
                        self.finish("falsified", "bab", found)
        closed = {k for t, v in res.verdicts.items() if v == "robust" for k in by_target.get(int(t), [])}
        self.set_open([k for k in self.open if k not in closed], "bab")
        self.check_time("bab")

    def local(self) -> None:
        form = self.p.margin_form(self.open)
        if form is None or "local" not in self.cfg.stages or self.small() or not self.open:
            return
        label, rows = form
        with self.times("local"):
            found = local_stage(self.p, label, rows, self.values, self.budget.share(LOCAL_SHARE))
        if found is not None:
            self.finish("falsified", "local", found)
        self.check_time("local")

    def milp(self) -> None:
        if "milp" not in self.cfg.stages:
            reason = (f"{len(self.open)} objective(s) open after the last stage "
                      f"({', '.join(map(str, self.open))})")
            self.finish("timeout" if self.budget.expired() else "unknown", reason=reason)
        with self.times("milp"):
            res = self.p.milp(self.open, self.bounds, self.budget, self.times)
        self.finish(res.verdict, res.decided_by, res.found, res.reason)


def run_cascade(problem: Problem, budget: Budget, cfg: CascadeConfig) -> Outcome:
    """Decide one box: the stages of the module docstring, under ``budget``.

    With LP tightening, a short BaB (``BAB_PROBE_SHARE`` of the budget, on the symbolic bounds)
    runs before the LPs, and BaB proper (``bab_share``) after them, on the tightened bounds:
    measured on MNIST 0.3 inputs, some are proven by BaB in under a second from symbolic bounds
    while the LPs take 10 s, others need the LP bounds (BaB: 48 s from symbolic bounds, 0.8 s
    after the LPs)."""
    run = _Run(problem, budget, cfg)
    try:
        run.bounds_stage()
        run.attacks()
        run.alpha()
        if cfg.tightening == "lp":
            run.bab(BAB_PROBE_SHARE)
            run.lp()
            run.alpha()
        run.bab(cfg.bab_share, cfg.bab_stall)
        run.local()
        run.milp()
    except _Decided as done:
        return done.out
    return run.out  # pragma: no cover  (milp() always finishes)


__all__ = ["ALPHA_SHARE", "ATTACK_SHARE", "BAB_PROBE_SHARE", "BAB_STALL_SECONDS", "Budget", "CascadeConfig",
           "DEFAULT_STAGE_NAMES", "DEFAULT_STAGES", "DIRECT_MILP_UNSTABLE", "Found", "LOCAL_SHARE", "LOCAL_TRIGGER",
           "Outcome", "Problem", "STAGES", "StageTimes", "alpha_stage", "bab_module", "bab_stage", "local_stage",
           "alpha_bounds_stage", "bounds_stage", "lp_stage", "optimizer_ready", "parse_stages", "run_cascade",
           "warm_up_optimizer"]
