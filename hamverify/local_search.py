"""Trust-region MILP search for counterexamples (the cascade's ``local`` stage, issue 13).

Gradient attacks stop at local minima of the margin; on the hard MNIST 0.3 inputs the best margin
PGD reached was +0.005 ... +0.011 while a counterexample existed (one of margin -0.0004 was found
only by a lucky BaB subdomain).  The MILP over the whole ball finds such points in principle but, with
~250 unstable ReLUs, not in the time.  A MILP over a *sub-box* around the best point so far is small
(at half the ball's radius about a quarter of the ReLUs stay unstable) and HiGHS solves it to
optimality in seconds; its minimizer is the exact best point of that sub-box, so moving the centre
there and repeating is a descent that cannot stall at a gradient method's local minimum inside the
trust region.  When a step gains too little the radius grows (``RADII``), up to nearly the whole
ball.

Only for *finding*: the minimum over a sub-box proves nothing about the ball.  Every point the
solver returns is evaluated in float64 on the IR and handed to the caller's ``validate`` (the
PyTorch model in float64 for ``verify``, onnxruntime for ``vnnlib``); only a point it accepts is
returned as found.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .network import Network

# Sub-box half-widths as shares of the box's own, tried in this order: a step that lowers the
# margin by at least MIN_GAIN of its size keeps the radius, a smaller gain moves on to the next.
# Measured on input 134 of models/mnist_small_hamming_0.3.pt (target 3): from PGD's +0.011, radius
# 0.25 crept down to +0.0028 in 8 solves, 0.5 stalled at +0.0013, 0.75 reached -4.6e-5 in 2 solves
# (7 s each, 87-92 unstable ReLUs of 244; load average about 3).
RADII = (0.5, 0.75, 0.9)
MIN_GAIN = 0.25
SOLVE_LIMIT = 15.0  # seconds at most for one sub-box MILP
SLACK = 0.5  # seconds kept back from the deadline for HiGHS's overshoot


@dataclass
class LocalResult:
    """Outcome of one ``trust_region_search``: ``found`` is what ``validate`` returned for an
    accepted point (None: nothing accepted); ``point`` / ``margin``: the best point reached (flat
    float64, inside the box) and its float64 IR margin ``z_label - z_target``; ``solves``: MILPs run."""

    found: Any
    point: np.ndarray
    margin: float
    solves: int


def ir_margin(net: Network, point: np.ndarray, label: int, target: int) -> float:
    z = net.forward(point)[0]
    return float(z[label] - z[target])


def trust_region_search(net: Network, lo: np.ndarray, hi: np.ndarray, label: int, target: int,
                        start: np.ndarray, deadline: float, validate: Callable[[np.ndarray], Any],
                        threshold: float = 0.0, radii=RADII, min_gain: float = MIN_GAIN,
                        solve_limit: float = SOLVE_LIMIT) -> LocalResult:
    """Minimize ``z_label - z_target`` over ``[lo, hi]`` by exact MILPs on sub-boxes around the
    best point, starting from ``start``, until a point below ``threshold`` is accepted by
    ``validate(point) -> object | None``, the radii are used up, or ``deadline`` (a
    ``time.monotonic()`` value) passes."""
    from .bounds import symbolic_bounds
    from .milp.encode import encode_network, margin_objective
    from .milp.highs import solve_highs

    lo = np.asarray(lo, dtype=np.float64).ravel()
    hi = np.asarray(hi, dtype=np.float64).ravel()
    half = 0.5 * (hi - lo)
    centre = np.clip(np.asarray(start, dtype=np.float64).ravel(), lo, hi)
    best = ir_margin(net, centre, label, target)
    solves, k = 0, 0
    while k < len(radii):
        left = deadline - time.monotonic()
        if left <= SLACK + 0.1:
            break
        r = radii[k] * half
        sub_lo, sub_hi = np.maximum(lo, centre - r), np.minimum(hi, centre + r)
        bounds = symbolic_bounds(net, sub_lo, sub_hi, deadline=deadline)
        if time.monotonic() >= deadline - SLACK:
            break
        milp, logits = encode_network(net, sub_lo, sub_hi, bounds)
        # To optimality (no cutoff): the minimizer is the next centre; stop early below 0.
        res = solve_highs(margin_objective(milp, logits, label, target),
                          min(solve_limit, deadline - time.monotonic() - SLACK), cutoff=None, stop_on_negative=True)
        solves += 1
        if res.x is None:
            break
        point = np.clip(np.asarray(res.x, dtype=np.float64).ravel(), sub_lo, sub_hi)
        m = ir_margin(net, point, label, target)
        if m < threshold:
            found = validate(point)
            if found is not None:
                return LocalResult(found, point, m, solves)
        if m < best - min_gain * abs(best):
            centre, best = point, m
            continue
        if m < best:
            centre, best = point, m
        k += 1
    return LocalResult(None, centre, best, solves)


__all__ = ["LocalResult", "MIN_GAIN", "RADII", "SOLVE_LIMIT", "ir_margin", "trust_region_search"]
