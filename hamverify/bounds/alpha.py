"""Optimized CROWN bounds on the margins (alpha-CROWN, issue 13), with optional ReLU splits.

CROWN bounds ``z_label - z_j`` from below by back-substitution: each unstable ReLU is replaced by
its chord where the running coefficient is negative and by a lower line ``alpha * z`` where it is
positive.  Any ``alpha`` in [0, 1] gives a sound bound (``relu(z) >= alpha z`` on every z), so the
slopes are free parameters; ``symbolic.relu_relaxation`` fixes them to 0 or 1, here they are
optimized per (margin row, neuron) by projected Adam to maximize every margin's lower bound
(the idea of Xu et al. 2021, written from the paper's description).  Intermediate (pre-activation)
bounds are not optimized here: they come from ``symbolic_bounds`` / ``refine_symbolic``, or from
``bounds/optimized.py`` (the same optimization on every pre-activation).

Precision: the optimization runs in torch (float32 by default, dense weights restricted to the
neurons that are not stably inactive); only its *choice* of ``alpha`` is kept.  The reported
bounds are recomputed in float64 by the symbolic module's back-substitution from the chosen
``alpha`` clamped to [0, 1], and floored by ``margin_lower_bounds`` (CROWN + IA) on the same
intermediate bounds, so they are never looser than the symbolic margins and are sound for any
``alpha`` the optimizer produced (float64 rounding aside, as for every method here).

Splits (branch and bound): ``splits = {layer: (mask_active, mask_inactive)}`` restricts the input
set to the subdomain ``S = {x in [lo, hi] : z_layer[k](x) >= 0 where mask_active,
z_layer[k](x) <= 0 where mask_inactive}``.  The intermediate bounds are rebuilt layer by layer,
applying ``lower = max(lower, 0)`` to fixed-active and ``upper = min(upper, 0)`` to fixed-inactive
neurons before the next layer is bounded, so every bound (intermediate and margin) holds on ``S``
-- not necessarily on the rest of the box.  When a split contradicts the bounds (a neuron's lower
bound exceeds its upper bound), ``S`` is empty: the result is flagged infeasible and every margin
is ``+inf`` (vacuously true).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .. import HamverifyError
from ..network import Network
from .interval import LayerBounds, box_vectors, interval_bounds
from .symbolic import (ReluRelaxation, _last_affine_rows, margin_lower_bounds, refine_symbolic, relu_relaxation,
                       symbolic_bounds, upper_bound_backsub)

# A split whose lower bound exceeds its upper bound by more than this (relative) empties the
# subdomain; a smaller crossing is float rounding and is widened instead (widening is sound).
INFEASIBLE_TOL = 1e-9
# Stop early (``stop_at``) only with this much float32 slack, so the float64 bound agrees.
STOP_SLACK = 1e-5


@dataclass
class AlphaResult:
    """What ``alpha_crown`` found.

    ``margins``: (classes,) lower bounds of ``z_label - z_j`` on the (sub)domain, ``+inf`` at the
    label (and everywhere when ``infeasible``).  ``bounds``: the intermediate bounds used (split
    respecting; ``None`` when infeasible).  ``targets``: the classes whose rows were optimized.
    ``alpha``: per ReLU layer a (len(targets), n_layer) float64 array, the lower-line slope each
    row used for each neuron (the optimized one for unstable neurons, 1 / 0 for stably active /
    inactive ones) -- pass it back as ``alpha_init`` to warm-start a subdomain.  ``steps``:
    optimizer evaluations run.  ``infeasible``: the splits leave no input.
    """

    margins: np.ndarray
    bounds: list[LayerBounds] | None
    targets: np.ndarray
    alpha: list[np.ndarray] | None
    steps: int
    infeasible: bool = False


# -- splits --------------------------------------------------------------------------------------


def _split_masks(net: Network, splits) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Validated boolean masks per layer; ``None`` for either side means no neuron."""
    sizes = net.relu_layer_sizes
    out = {}
    for layer, (active, inactive) in (splits or {}).items():
        layer = int(layer)
        if not 0 <= layer < len(sizes):
            raise HamverifyError(f"split on layer {layer}: the network has ReLU layers 0..{len(sizes) - 1}")
        masks = []
        for m in (active, inactive):
            m = np.zeros(sizes[layer], dtype=bool) if m is None else np.asarray(m, dtype=bool).ravel()
            if m.shape != (sizes[layer],):
                raise HamverifyError(f"split mask for layer {layer} must have {sizes[layer]} entries, got {m.size}")
            masks.append(m)
        if masks[0].any() or masks[1].any():
            out[layer] = (masks[0], masks[1])
    return out


def _apply_split(b: LayerBounds, active: np.ndarray, inactive: np.ndarray) -> bool:
    """Clamp one layer in place to its split; False when the split empties the domain."""
    b.lower[active] = np.maximum(b.lower[active], 0.0)
    b.upper[inactive] = np.minimum(b.upper[inactive], 0.0)
    crossing = b.lower - b.upper
    if np.any(crossing > INFEASIBLE_TOL * (1.0 + np.abs(b.lower) + np.abs(b.upper))):
        return False
    tiny = crossing > 0
    if tiny.any():
        b.lower[tiny], b.upper[tiny] = np.minimum(b.lower, b.upper)[tiny], np.maximum(b.lower, b.upper)[tiny]
    return True


def split_bounds(net: Network, lo, hi, splits=None, prior: list[LayerBounds] | None = None
                 ) -> list[LayerBounds] | None:
    """Intermediate bounds valid on the split subdomain ``S`` (module doc); ``None`` if ``S`` is empty.

    ``prior``: bounds valid on a superset of ``S`` (the box, or a parent subdomain); layers up to
    the first split layer are taken from it unchanged, later ones are refined by the symbolic
    method from the clamped layers.  Without ``prior`` every layer is computed as
    ``symbolic_bounds`` does, with the splits applied on the way.
    """
    lo, hi = box_vectors(net, lo, hi)
    masks = _split_masks(net, splits)
    if not masks:
        return symbolic_bounds(net, lo, hi) if prior is None else [b.copy() for b in prior]
    first = min(masks)
    bounds = interval_bounds(net, lo, hi) if prior is None else [b.copy() for b in prior]
    for j in range(len(bounds)):
        refine = j >= 1 if prior is None else j > first  # layer 0 is affine in x: IA is exact there
        if refine:
            # refine_symbolic on the prefix bounds only layer j, from the (clamped) layers before it.
            bounds[j] = refine_symbolic(net, lo, hi, bounds[:j + 1], first_layer=j)[j]
        if j in masks and not _apply_split(bounds[j], *masks[j]):
            return None
    return bounds


# -- torch copies of the weights -------------------------------------------------------------------

_WEIGHTS: dict[tuple[int, torch.dtype], tuple[weakref.ref, list[torch.Tensor], list[torch.Tensor]]] = {}


def _dense_weights(net: Network, dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Dense torch copies of every affine map, cached per network (branch and bound calls this once
    per subdomain; densifying an unrolled convolution costs as much as a few optimizer steps).
    Dense because torch's sparse CPU products were measured 3-4x slower than dense ones here."""
    key = (id(net), dtype)
    hit = _WEIGHTS.get(key)
    if hit is not None and hit[0]() is net:
        return hit[1], hit[2]
    for k in [k for k, v in _WEIGHTS.items() if v[0]() is None]:
        del _WEIGHTS[k]
    Ws = [torch.from_numpy(np.asarray(a.dense(), dtype=np.float64)).to(dtype) for a in net.affines]
    bs = [torch.from_numpy(np.asarray(a.b, dtype=np.float64)).to(dtype) for a in net.affines]
    _WEIGHTS[key] = (weakref.ref(net), Ws, bs)
    return Ws, bs


# -- alpha-CROWN ---------------------------------------------------------------------------------


def maximize_bound(lower_bounds, params: list[torch.Tensor], tracked: list, project, rows: int, dtype, *,
                   steps: int, lr: float, deadline: float | None, stop_at: float | None) -> tuple[list, int]:
    """Projected Adam on ``params`` to maximize ``lower_bounds()`` (one value per row), shared by
    alpha-CROWN and the branch and bound's beta bounds.  Keeps, per row, the values of the
    ``tracked`` tensors (None entries are skipped) at that row's best bound; ``project`` runs after
    every step (e.g. clamping slopes to [0, 1]).  Returns (best tracked values, steps taken).
    Only a choice of parameters comes out: the caller recomputes the sound bound from it."""
    opt = torch.optim.Adam(params, lr=lr)
    best_val = torch.full((rows,), -torch.inf, dtype=dtype)
    best = [None if t is None else t.detach().clone() for t in tracked]
    done = 0
    for _ in range(steps):
        if deadline is not None and time.monotonic() >= deadline:
            break
        val = lower_bounds()
        done += 1
        with torch.no_grad():
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            for keep, cur in zip(best, tracked):
                if keep is not None:
                    keep[better] = cur[better]
        if stop_at is not None and bool((best_val > stop_at + STOP_SLACK * (1 + best_val.abs())).all()):
            break
        opt.zero_grad()
        (-val.sum()).backward()
        opt.step()
        with torch.no_grad():
            project()
    return best, done


def _spec_rows(classes: int, label: int, targets: np.ndarray) -> np.ndarray:
    C = np.zeros((targets.size, classes))
    C[:, label] = 1.0
    C[np.arange(targets.size), targets] = -1.0
    return C


def _initial_alpha(bounds: list[LayerBounds], relax: list[ReluRelaxation], rows: int, alpha_init) -> list[np.ndarray]:
    """Full-width (rows, n) slopes: CROWN's 0/1 choice, or ``alpha_init`` clipped to [0, 1], at
    unstable neurons; the exact 1 / 0 at stably active / inactive ones whatever was given."""
    out = []
    for i, (b, r) in enumerate(zip(bounds, relax)):
        a = np.broadcast_to(r.lower_slope, (rows, r.lower_slope.size)).copy()
        if alpha_init is not None and alpha_init[i] is not None:
            given = np.broadcast_to(np.asarray(alpha_init[i], dtype=np.float64), a.shape)
            a[:, b.unstable] = np.clip(given[:, b.unstable], 0.0, 1.0)
        out.append(a)
    return out


def _float64_lower_bounds(net: Network, lo, hi, bounds: list[LayerBounds], C: np.ndarray,
                          slopes: list[np.ndarray]) -> np.ndarray:
    """Sound float64 CROWN lower bounds of ``C @ logits`` with per-row lower slopes ``slopes``.

    Reuses the symbolic back-substitution: its ReLU step broadcasts a (rows, n) ``lower_slope``
    over the (always dense) coefficient rows of a specification.
    """
    relaxations = []
    for b, a in zip(bounds, slopes):
        r = relu_relaxation(b)
        unstable = b.unstable
        lower = np.broadcast_to(r.lower_slope, a.shape).copy()
        lower[:, unstable] = np.clip(a[:, unstable], 0.0, 1.0)  # clamp again in float64: sound for any input
        relaxations.append(ReluRelaxation(r.upper_slope, r.upper_intercept, lower))
    spec = _last_affine_rows(net, C)
    A = spec.W.toarray() if sp.issparse(spec.W) else np.asarray(spec.W)
    return -upper_bound_backsub(net, relaxations, len(net.affines) - 1, -A, -spec.b, lo, hi)


def alpha_crown(net: Network, lo, hi, label: int, bounds: list[LayerBounds] | None = None, splits=None,
                targets=None, steps: int = 20, lr: float = 0.1, deadline: float | None = None,
                stop_at: float | None = None, alpha_init=None, dtype: torch.dtype = torch.float32) -> AlphaResult:
    """Optimized-slope CROWN lower bounds of ``z_label - z_j`` over the box (or split subdomain).

    ``bounds``: intermediate bounds valid on the domain (default: ``symbolic_bounds``, with
    ``splits`` applied as in ``split_bounds``).  ``targets``: the classes to optimize (default every
    class but the label; the others keep the symbolic bound).  ``steps`` Adam steps of rate ``lr``
    on the slopes, projected onto [0, 1]; ``deadline`` (a ``time.monotonic()`` value) is checked
    before every step and the best slopes so far are used.  ``stop_at``: stop once every target's
    bound exceeds it (e.g. the verifier's tol).  ``alpha_init``: per layer (rows, n) or (n,) slopes
    to start from (e.g. a parent subdomain's ``AlphaResult.alpha``).  The intermediate bounds are
    always computed, deadline or not: they are needed for any sound answer.
    """
    lo, hi = box_vectors(net, lo, hi)
    classes = net.num_classes
    label = int(label)
    if not 0 <= label < classes:
        raise HamverifyError(f"label {label} out of range for {classes} classes")
    if targets is None:
        targets = np.array([j for j in range(classes) if j != label], dtype=int)
    else:
        targets = np.array(sorted({int(j) for j in targets if int(j) != label}), dtype=int)
        if targets.size and (targets.min() < 0 or targets.max() >= classes):
            raise HamverifyError(f"targets must be classes in 0..{classes - 1}")

    if splits:
        layer_bounds = split_bounds(net, lo, hi, splits, bounds)
    else:
        layer_bounds = symbolic_bounds(net, lo, hi) if bounds is None else bounds
    if layer_bounds is None:
        return AlphaResult(np.full(classes, np.inf), None, targets, None, 0, infeasible=True)

    margins = margin_lower_bounds(net, lo, hi, layer_bounds, label)  # the floor: CROWN + IA
    relax = [relu_relaxation(b) for b in layer_bounds]
    rows = targets.size
    slopes = _initial_alpha(layer_bounds, relax, rows, alpha_init)
    unstable = [b.unstable for b in layer_bounds]
    if rows == 0 or steps <= 0 or not any(u.any() for u in unstable):
        return AlphaResult(margins, layer_bounds, targets, slopes, 0)

    best_slopes, steps_done = _optimize(net, lo, hi, layer_bounds, relax, _spec_rows(classes, label, targets),
                                        slopes, steps, lr, deadline, stop_at, dtype)
    if steps_done == 0:
        return AlphaResult(margins, layer_bounds, targets, slopes, 0)
    C = _spec_rows(classes, label, targets)
    optimized = _float64_lower_bounds(net, lo, hi, layer_bounds, C, best_slopes)
    margins[targets] = np.maximum(margins[targets], optimized)
    return AlphaResult(margins, layer_bounds, targets, best_slopes, steps_done)


def _optimize(net: Network, lo, hi, bounds: list[LayerBounds], relax: list[ReluRelaxation], C: np.ndarray,
              slopes: list[np.ndarray], steps: int, lr: float, deadline, stop_at, dtype):
    """Projected Adam on the slopes of unstable neurons; returns (best full-width slopes, evaluations).

    Works on the neurons that are not stably inactive ("live"): a dead ReLU's output is exactly 0
    on the domain, so its column of every coefficient matrix vanishes and the weights can be sliced
    to live rows and columns once per call (on the shipped MNIST 0.3 model about a third of the
    first layer and 40 % of the second are dead).
    """
    Ws, bs = _dense_weights(net, dtype)
    n_relu = len(bounds)
    live = [torch.from_numpy(np.flatnonzero(~b.stably_inactive)) for b in bounds]
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(dtype)  # noqa: E731
    up_slope = [as_t(r.upper_slope)[idx] for r, idx in zip(relax, live)]
    up_int = [as_t(r.upper_intercept)[idx] for r, idx in zip(relax, live)]
    fixed_low = [as_t(b.stably_active.astype(np.float64))[idx] for b, idx in zip(bounds, live)]
    free = [as_t(b.unstable.astype(np.float64))[idx] for b, idx in zip(bounds, live)]
    # Weights restricted to live neurons: M[i] maps layer i-1's live outputs to layer i's live
    # pre-activations (M[0] takes the whole input).
    M, bias = [], []
    for i in range(n_relu):
        W = Ws[i].index_select(0, live[i])
        M.append(W if i == 0 else W.index_select(1, live[i - 1]))
        bias.append(bs[i].index_select(0, live[i]))
    Ct = as_t(C)
    A_spec = (Ct @ Ws[-1]).index_select(1, live[-1])
    c_spec = Ct @ bs[-1]
    mid, rad = as_t((lo + hi) / 2), as_t((hi - lo) / 2)

    alphas = [as_t(a[:, idx.numpy()]) for a, idx in zip(slopes, live)]
    params = [a.requires_grad_(True) for a, f in zip(alphas, free) if bool(f.any())]

    def lower_bounds():
        A, c = A_spec, c_spec
        for i in reversed(range(n_relu)):
            low = fixed_low[i] + free[i] * alphas[i]  # (rows, live): the lower line's slope
            A_pos, A_neg = A.clamp(min=0), A.clamp(max=0)
            c = c + A_neg @ up_int[i]
            A = A_pos * low + A_neg * up_slope[i]
            c = c + A @ bias[i]
            A = A @ M[i]
        return A @ mid - A.abs() @ rad + c

    best, done = maximize_bound(lower_bounds, params, alphas, lambda: [a.clamp_(0.0, 1.0) for a in params],
                                C.shape[0], dtype, steps=steps, lr=lr, deadline=deadline, stop_at=stop_at)

    out = []
    for s, b, idx in zip(slopes, best, live):
        full = s.copy()
        full[:, idx.numpy()] = b.double().numpy()
        out.append(full)
    return out, done


def alpha_margin_bounds(net: Network, lo, hi, label: int, bounds: list[LayerBounds] | None = None, steps: int = 20,
                        lr: float = 0.1, deadline: float | None = None, splits=None, targets=None,
                        stop_at: float | None = None) -> np.ndarray:
    """Margin lower bounds like ``margin_lower_bounds`` (``+inf`` at the label), optimized by
    ``alpha_crown``; never looser than the symbolic ones on the same intermediate bounds."""
    return alpha_crown(net, lo, hi, label, bounds=bounds, splits=splits, targets=targets, steps=steps, lr=lr,
                       deadline=deadline, stop_at=stop_at).margins
