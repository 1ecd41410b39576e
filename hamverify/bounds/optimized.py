"""Optimized intermediate bounds (the ``alpha`` bounds method): alpha-CROWN on every pre-activation.

``symbolic_bounds`` fixes each unstable ReLU's lower line to slope 0 or 1.  Here, layer by layer, the
lower and upper bound of every neuron still unstable is the CROWN bound of the row ``+-e_k`` of that
layer's pre-activations, with the lower slopes of all earlier layers optimized for that row by
projected Adam (the intermediate-bound half of alpha-CROWN, Xu et al. 2021, written from the
paper's description; ``bounds/alpha.py`` optimizes the margins only).  The next layer is bounded from
the tightened one, so the gain compounds with depth.  Measured on ``mnist_small_hamming_0.3.pt`` at
eps 0.3 (``benchmarks/alpha_bounds.py --lp``, first 40 test images): the last hidden layer's unstable
ReLUs fall from 13.1 to 6.1 on average (the per-neuron LP bounds: 8.7) in about 0.4 s per input
(the LP bounds: 9.6 s).

Soundness: the optimizer runs in float32 and only its choice of slopes is kept; every bound is the
float64 back-substitution (``bounds.rows.backsub64``) with those slopes clamped to [0, 1], which is
sound for any slope, and it is intersected with the bounds it started from (never looser).
"""
from __future__ import annotations

import time
import weakref

import numpy as np

from ..network import Network
from .interval import LayerBounds, box_vectors
from .symbolic import refine_symbolic, symbolic_bounds

# Rows (two per unstable neuron) optimized together: bounds the (rows x layer width) arrays.
ROW_CHUNK = 256

_PREFIXES: dict = {}


def prefix_network(net: Network, layer: int) -> Network:
    """``net`` cut after the affine map of ReLU layer ``layer``: its outputs are that layer's
    pre-activations.  Cached per network, so the torch weight copies are made once per process."""
    hit = _PREFIXES.get(id(net))
    if hit is None or hit[0]() is not net:
        for k in [k for k, v in _PREFIXES.items() if v[0]() is None]:
            del _PREFIXES[k]
        hit = (weakref.ref(net), {})
        _PREFIXES[id(net)] = hit
    cut = hit[1].get(layer)
    if cut is None:
        cut = hit[1][layer] = Network(tuple(net.affines[:layer + 1]), net.input_shape)
    return cut


def _layer_bounds(net: Network, lo, hi, bounds: list[LayerBounds], layer: int, steps: int, lr: float,
                  deadline: float | None) -> None:
    """Tighten ``bounds[layer]`` in place on its unstable neurons (earlier layers as given)."""
    from .rows import backsub64, crown_alpha_init, optimize, stack_rows

    current = bounds[layer]
    neurons = np.flatnonzero(current.unstable)
    cut = prefix_network(net, layer)
    n = current.lower.size
    for start in range(0, neurons.size, ROW_CHUNK // 2):
        if deadline is not None and time.monotonic() >= deadline:
            return
        ks = neurons[start:start + ROW_CHUNK // 2]
        m = ks.size
        C = np.zeros((2 * m, n))
        C[np.arange(m), ks] = 1.0  # lower bounds of z_k
        C[m + np.arange(m), ks] = -1.0  # lower bounds of -z_k: upper bounds of z_k
        rows = stack_rows([bounds[:layer]], [None], [2 * m])
        alpha, _, _ = optimize(cut, lo, hi, rows, C, crown_alpha_init(rows), None, steps, lr, deadline=deadline)
        low, *_ = backsub64(cut, lo, hi, rows, C, alpha, None)
        lower, upper = np.maximum(current.lower[ks], low[:m]), np.minimum(current.upper[ks], -low[m:])
        # Both bounds hold on the (non-empty) box, so a crossing is float rounding: keep the pair
        # ordered (an empty interval would make a MILP column infeasible and "prove" anything).
        current.lower[ks], current.upper[ks] = np.minimum(lower, upper), np.maximum(lower, upper)


def alpha_bounds(net: Network, lo, hi, prior: list[LayerBounds] | None = None, steps: int = 20, lr: float = 0.1,
                 deadline: float | None = None, first_layer: int = 1) -> list[LayerBounds]:
    """Pre-activation bounds of every ReLU layer, each never looser than ``prior`` (default:
    ``symbolic_bounds``); layers from ``first_layer`` on get optimized CROWN bounds (module doc).

    Layer 0 is affine in the input (its bounds are exact already).  ``steps`` / ``lr``: Adam per
    row chunk.  ``deadline`` (a ``time.monotonic()`` value) is checked before every optimizer step
    and every chunk; what is not reached keeps the prior bounds (sound, looser)."""
    lo, hi = box_vectors(net, lo, hi)
    bounds = [b.copy() for b in (symbolic_bounds(net, lo, hi, deadline=deadline) if prior is None else prior)]
    if steps <= 0:
        return bounds
    for layer in range(max(1, int(first_layer)), len(bounds)):
        if deadline is not None and time.monotonic() >= deadline:
            break
        _layer_bounds(net, lo, hi, bounds, layer, steps, lr, deadline)
        # the layers after it were bounded from the old relaxation: re-derive them symbolically from
        # the tightened one (intersected with what they had), so fewer of their neurons need rows.
        if layer + 1 < len(bounds):
            refine_symbolic(net, lo, hi, bounds, first_layer=layer + 1, deadline=deadline)
    return bounds


__all__ = ["ROW_CHUNK", "alpha_bounds", "prefix_network"]
