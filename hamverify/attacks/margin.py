"""Targeted margin PGD with an APGD-like step-size schedule (issue 13: the strong attack).

Untargeted cross-entropy PGD follows the gradient of the classes that are *already* likely: a class
whose logit starts far below the others gets a vanishing softmax weight, so CE never walks towards
it, even when it is the only class reachable inside the ball.  Here every open target class ``j``
gets its own candidates, each minimizing the plain margin ``z_label - z_j`` (negative = a
counterexample for ``j``), and all candidates (targets x restarts x given starts) run as one batch,
one forward/backward pass per step.

The step schedule follows the ideas of APGD (Croce & Hein 2020), written here from the paper's
description: a large first step (the box width), a momentum term, and at checkpoints that come
closer together as the run goes on, the step of a candidate is halved and the candidate is moved
back to its best point when it stagnated (too few improving steps since the last checkpoint, or
no new best while the step was unchanged).

Contract with the verifier: points come back as float64 numpy arrays clipped into ``[lo, hi]``;
the caller still validates them in float64 (``Verifier.validate_counterexample``), since the
attack's model is usually float32.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .base import Attack

# APGD's weight of the new gradient step against the previous displacement (paper: alpha = 0.75).
MOMENTUM_MIX = 0.75
# Fraction of improving steps between two checkpoints below which the step size is halved.
STAGNATION_RHO = 0.75


def checkpoint_steps(steps: int) -> list[int]:
    """Steps after which the step-size test runs: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), times ``steps`` (checkpoints tighten)."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    marks = sorted({int(math.ceil(p * steps)) for p in fractions[1:] if p < 1.0})
    return [m for m in marks if 0 < m < steps]


@dataclass
class MarginResult:
    """Best point of one ``MarginPGD.attack_box`` call.

    ``point``: float64 array of ``lo``'s shape, inside ``[lo, hi]`` (``None`` only when the deadline
    had passed before any start point existed, i.e. never for a non-empty box).  ``margin``:
    ``z_label - z_target`` at ``point`` -- in float64 when ``model64`` was given, else in the
    attack model's precision; ``inf`` when no forward pass ran (deadline already passed).
    ``target``: the class of the best candidate.  ``found``: ``margin < 0``.  ``steps``: gradient
    steps run (0 = only the start points were evaluated, or nothing at all when ``evaluations == 0``).
    """

    point: np.ndarray | None
    margin: float
    target: int | None
    found: bool
    steps: int
    evaluations: int


class MarginPGD(Attack):
    """Per-target margin PGD in a box, APGD-like schedule, batched over targets x restarts.

    Arguments:
        eps: radius of the l_inf ball, used only by ``perturb`` (torchattacks-style ``(model, x, y)``
            calls); ``attack_box`` takes the box itself.
        steps: gradient steps per candidate (after the evaluation of the start points).
        restarts: random start points per target, uniform in the box.
        generator: torch.Generator for the random starts (seeded runs are reproducible).
        momentum: APGD's mixing weight of the new step (1.0 = plain PGD steps, no momentum).
        rho: stagnation threshold of the step-size schedule.
        stop_margin: stop as soon as some candidate's margin is below ``-stop_margin``.
    """

    def __init__(self, eps: float = 8 / 255, steps: int = 100, restarts: int = 4,
                 generator: torch.Generator | None = None, momentum: float = MOMENTUM_MIX,
                 rho: float = STAGNATION_RHO, stop_margin: float = 0.0):
        super().__init__(eps)
        self.steps, self.restarts = int(steps), int(restarts)
        self.generator = generator
        self.momentum, self.rho, self.stop_margin = float(momentum), float(rho), float(stop_margin)

    # -- torchattacks-style batch interface ---------------------------------------------------
    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Best point per sample against every other class, inside B(x) ∩ [0, 1]."""
        out = x.clone()
        classes = None
        for i in range(len(x)):
            xi = x[i].detach().double().cpu().numpy()
            lo, hi = np.clip(xi - self.eps, 0, 1), np.clip(xi + self.eps, 0, 1)
            if classes is None:
                with torch.no_grad():
                    classes = model(x[:1]).shape[1]
            label = int(y[i])
            res = self.attack_box(model, lo, hi, label, [j for j in range(classes) if j != label])
            out[i] = torch.from_numpy(res.point).to(x.dtype)
        return out

    # -- the box attack -----------------------------------------------------------------------
    def attack_box(self, model, lo, hi, label: int, targets: Sequence[int] | None = None,
                   starts=None, deadline: float | None = None, input_shape=None,
                   model64=None) -> MarginResult:
        """Minimize ``z_label - z_j`` over ``[lo, hi]`` for every ``j`` in ``targets``.

        ``lo``/``hi``: arrays of the input's shape, or flat with ``input_shape`` given (the model is
        fed ``(batch, *input_shape)``).  ``targets``: the open classes (default: all but ``label``).
        ``starts``: extra start points, one array or a sequence / ``(S, ...)`` array (e.g. an LP or
        MILP point); each is tried for every target besides the random restarts.  ``deadline``:
        a ``time.monotonic()`` value checked before every step; the best point so far is returned.
        ``model64``: optional float64 copy of the model; then a float32 candidate with a negative
        margin stops the run only if it is negative in float64 too, and the returned margin is the
        float64 one.
        """
        if deadline is not None and time.monotonic() >= deadline:
            return self._nothing_run(lo, hi, starts)
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        shape = tuple(input_shape) if input_shape is not None else lo.shape
        lo_flat, hi_flat = lo.ravel(), hi.ravel()
        if lo_flat.size != int(np.prod(shape)):
            raise ValueError(f"box has {lo_flat.size} entries, input shape {shape} needs {int(np.prod(shape))}")
        dtype = _model_dtype(model)
        with torch.no_grad():
            classes = int(model(torch.from_numpy(0.5 * (lo_flat + hi_flat)).to(dtype).view(1, *shape)).shape[1])
        targets = [j for j in range(classes) if j != label] if targets is None else [int(j) for j in targets]
        if not targets:
            return self._nothing_run(lo, hi, starts)

        lo_t = torch.from_numpy(lo_flat).to(dtype)
        hi_t = torch.from_numpy(hi_flat).to(dtype)
        # float32(lo) may lie outside the float64 box by rounding; the float64 clip at the end fixes it.
        width = hi_t - lo_t
        start_points = self._start_points(lo_t, hi_t, starts, len(targets))
        per_target = start_points.shape[0] // len(targets)
        target_of = torch.tensor(targets, dtype=torch.long).repeat_interleave(per_target)
        B = target_of.numel()
        project = lambda p: torch.min(torch.max(p, lo_t), hi_t)  # noqa: E731

        def evaluate(points):
            """Margins (B,) and their input gradients (B, d) in one batched pass."""
            points = points.detach().requires_grad_(True)
            with torch.enable_grad():
                z = model(points.view(B, *shape))
                margin = z[:, label] - z.gather(1, target_of[:, None])[:, 0]
                grad, = torch.autograd.grad(margin.sum(), points)
            return margin.detach(), grad.detach()

        x = project(start_points)
        m, g = evaluate(x)
        evaluations = 1
        best_m, best_x, best_g = m.clone(), x.clone(), g.clone()
        confirmed = self._confirm(model64, best_x, best_m, lo_flat, hi_flat, shape, label, target_of)
        steps_done = 0
        eta = torch.ones(B, dtype=dtype)  # in units of the box width: the first step spans the box
        x_prev = x.clone()
        m_prev = m.clone()
        successes = torch.zeros(B, dtype=torch.long)
        marks = set(checkpoint_steps(self.steps))
        last_mark, eta_at_mark, best_at_mark = 0, eta.clone(), best_m.clone()
        for k in range(self.steps):
            if confirmed is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            step = eta[:, None] * width * g.sign()
            z_new = project(x - step)  # descend on the margin
            if k == 0 or self.momentum >= 1.0:
                x_new = z_new
            else:
                x_new = project(x + self.momentum * (z_new - x) + (1.0 - self.momentum) * (x - x_prev))
            x_prev, x = x, x_new
            m, g = evaluate(x)
            evaluations += 1
            steps_done += 1
            successes += (m < m_prev).long()
            m_prev = m
            better = m < best_m
            best_m = torch.where(better, m, best_m)
            best_x[better], best_g[better] = x[better], g[better]
            confirmed = self._confirm(model64, best_x, best_m, lo_flat, hi_flat, shape, label, target_of)
            if confirmed is None and (k + 1) in marks:
                window = k + 1 - last_mark
                stagnated = successes.double() < self.rho * window
                stuck = (eta == eta_at_mark) & (best_m >= best_at_mark)
                halve = stagnated | stuck
                eta = torch.where(halve, eta / 2, eta)
                # Restart a halved candidate from its best point (momentum reset with it).
                x[halve], x_prev[halve], g[halve] = best_x[halve], best_x[halve], best_g[halve]
                m_prev = torch.where(halve, best_m, m_prev)
                successes.zero_()
                last_mark, eta_at_mark, best_at_mark = k + 1, eta.clone(), best_m.clone()

        if confirmed is not None:
            b, margin64 = confirmed
        else:
            b = int(torch.argmin(best_m))
            margin64 = None
        point = np.clip(best_x[b].detach().double().numpy(), lo_flat, hi_flat)
        if margin64 is None:
            margin = self._margin_at(model64 if model64 is not None else model, point, shape, label,
                                     int(target_of[b]))
        else:
            margin = margin64
        return MarginResult(point.reshape(lo.shape), float(margin), int(target_of[b]), bool(margin < 0),
                            steps_done, evaluations)

    # -- helpers ------------------------------------------------------------------------------
    def _start_points(self, lo_t, hi_t, starts, n_targets: int) -> torch.Tensor:
        """(n_targets * (restarts + S), d): per target, its random restarts then the given starts."""
        d = lo_t.numel()
        random = lo_t + (hi_t - lo_t) * torch.rand((n_targets, max(self.restarts, 0), d),
                                                   generator=self.generator, dtype=torch.float64).to(lo_t.dtype)
        parts = [random]
        if starts is not None:
            given = np.asarray(starts, dtype=np.float64)
            given = given.reshape(-1, d) if given.size % d == 0 else None
            if given is None:
                raise ValueError(f"start points must have {d} entries each")
            given = torch.from_numpy(given).to(lo_t.dtype)
            parts.append(given[None].expand(n_targets, -1, -1))
        points = torch.cat(parts, dim=1)
        if points.shape[1] == 0:  # no restarts and no starts: the box centre, once per target
            points = ((lo_t + hi_t) / 2).expand(n_targets, 1, d)
        return points.reshape(-1, d).clone()

    def _confirm(self, model64, best_x, best_m, lo, hi, shape, label, target_of):
        """(candidate, float64 margin) of a candidate below -stop_margin that counts, else None.

        Without ``model64`` the attack model's margin decides; with it, only candidates whose
        float64 margin (at the float64-clipped point) is negative count.
        """
        below = torch.nonzero(best_m < -self.stop_margin).flatten()
        if below.numel() == 0:
            return None
        if model64 is None:
            return int(below[torch.argmin(best_m[below])]), None
        points = np.clip(best_x[below].detach().double().numpy(), lo, hi)
        with torch.no_grad():
            z = model64(torch.from_numpy(points).view(len(points), *shape))
            margins = (z[:, label] - z.gather(1, target_of[below][:, None])[:, 0]).numpy()
        i = int(np.argmin(margins))
        return (int(below[i]), float(margins[i])) if margins[i] < 0 else None

    @staticmethod
    def _margin_at(model, point: np.ndarray, shape, label: int, target: int) -> float:
        dtype = _model_dtype(model)
        with torch.no_grad():
            z = model(torch.from_numpy(point).to(dtype).view(1, *shape))[0]
        return float(z[label] - z[target])

    @staticmethod
    def _nothing_run(lo, hi, starts) -> MarginResult:
        """The deadline passed before any evaluation: the first given start (clipped) or the centre."""
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        if starts is not None and np.asarray(starts).size >= lo.size:
            point = np.asarray(starts, dtype=np.float64).reshape(-1, lo.size)[0].reshape(lo.shape)
        else:
            point = (lo + hi) / 2
        return MarginResult(np.clip(point, lo, hi), math.inf, None, False, 0, 0)


def _model_dtype(model) -> torch.dtype:
    """The dtype of the model's parameters (float32 unless it was converted)."""
    for p in model.parameters():
        return p.dtype
    for b in model.buffers():
        if b.is_floating_point():
            return b.dtype
    return torch.float32
