"""Batched α/β-CROWN lower bounds of stacked linear rows: the margins of branch-and-bound
subdomains (``hamverify.bab``) and the pre-activations of ``bounds/optimized.py``.

A subdomain is the box with some ReLU pre-activations fixed in sign (``sigma = +1``: ``z >= 0``,
``-1``: ``z <= 0``); its intermediate bounds come from ``bounds.alpha.split_bounds``.  For a margin
row ``f = c @ logits``, CROWN gives a linear lower bound by back-substitution, each unstable ReLU
relaxed by its chord (upper) and a line ``alpha * z`` (lower, ``alpha`` in [0, 1]).  The split
constraints enter as Lagrange terms (the idea of β-CROWN, Wang et al. 2021, written here from the
paper's description): on the subdomain ``sigma_k z_k >= 0``, so for any ``beta >= 0``
``f >= f - sum_k beta_k sigma_k z_k``, and the CROWN bound of the right-hand side is a lower bound
of ``f`` on the subdomain.  ``beta`` enters the back-substitution as ``- beta * sigma`` added to
the coefficients of each layer's pre-activations.  Without it (``beta = 0``) this is α-CROWN on the
split-clamped bounds.

Batching: the rows of several subdomains (each with its own bounds, slopes and splits) are stacked
into one matrix; the weights are shared, so every back-substitution step is one product for the
whole batch, with per-row relaxation arrays.

Precision: ``alpha`` and ``beta`` are optimized by projected Adam in torch (float32); only that
*choice* is kept.  ``backsub64`` recomputes the bounds in float64 from the chosen values clamped
again to ``alpha in [0, 1]``, ``beta >= 0`` -- sound for any values the optimizer produced (float64
rounding aside, as for every bound in ``hamverify.bounds``).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .alpha import _dense_weights, maximize_bound
from .interval import LayerBounds
from ..network import ConvSpec, Network, transposed_csr


@dataclass
class RowLayer:
    """One ReLU layer's relaxation for every stacked row (all arrays (R, n), float64)."""

    up_slope: np.ndarray
    up_int: np.ndarray
    fixed_low: np.ndarray  # 1 where stably active (the lower line is the identity), else 0
    free: np.ndarray  # 1 where unstable (alpha is free), else 0
    sigma: np.ndarray  # +1 / -1 where the subdomain fixes the sign, else 0


def _layer_arrays(b: LayerBounds, sigma: np.ndarray | None):
    lower, upper = b.lower, b.upper
    unstable = (lower < 0) & (upper > 0)
    active = lower >= 0
    up_slope = active.astype(np.float64)
    up_int = np.zeros_like(lower)
    lu, uu = lower[unstable], upper[unstable]
    chord = uu / (uu - lu)
    up_slope[unstable] = chord
    up_int[unstable] = -chord * lu
    s = np.zeros_like(lower) if sigma is None else sigma.astype(np.float64)
    return up_slope, up_int, active.astype(np.float64), unstable.astype(np.float64), s


def stack_rows(domain_bounds: list[list[LayerBounds]], domain_sigmas: list[list], counts: list[int]) -> list[RowLayer]:
    """Per-layer relaxation arrays for the stacked rows: ``counts[d]`` rows for subdomain ``d``."""
    n_layers = len(domain_bounds[0])
    reps = np.asarray(counts)
    out = []
    for i in range(n_layers):
        parts = [_layer_arrays(bnd[i], sig[i] if sig is not None else None)
                 for bnd, sig in zip(domain_bounds, domain_sigmas)]
        stacked = [np.repeat(np.stack([p[k] for p in parts]), reps, axis=0) for k in range(5)]
        out.append(RowLayer(*stacked))
    return out


# -- rows times W in torch ------------------------------------------------------------------------

def _conv_rows(spec: ConvSpec, dtype: torch.dtype):
    """``A -> A @ W`` for the unrolled convolution ``W`` of ``spec``: a transposed convolution of the
    rows, each seen as an output image -- the work of W's non-zeros instead of a dense product (the
    mnist_small convs are 2 % / 8 % dense)."""
    w = torch.from_numpy(np.ascontiguousarray(spec.weight)).to(dtype)
    C_in, H, W = spec.in_shape
    top, left = spec.pads[0], spec.pads[1]

    def times(A: torch.Tensor) -> torch.Tensor:
        R = A.shape[0]
        full = torch.nn.functional.conv_transpose2d(A.reshape(R, *spec.out_shape), w, stride=spec.strides,
                                                    dilation=spec.dilations, groups=spec.group)
        # ``full`` is indexed by padded input coordinates; the input proper starts at (top, left).
        # The padded frame's far edge may lie beyond the last tap (stride remainder): zeros there.
        grow_h, grow_w = max(0, top + H - full.shape[2]), max(0, left + W - full.shape[3])
        if grow_h or grow_w:
            full = torch.nn.functional.pad(full, (0, grow_w, 0, grow_h))
        return full[:, :, top:top + H, left:left + W].reshape(R, C_in * H * W)

    return times


_ROW_OPS: dict = {}


def row_products(net: Network, dtype: torch.dtype) -> list:
    """Per affine map ``i``, a function ``A -> A @ W_i`` on torch rows (cached per network): a
    transposed convolution where the map carries its ``ConvSpec``, else the dense product."""
    key = (id(net), dtype)
    hit = _ROW_OPS.get(key)
    if hit is not None and hit[0]() is net:
        return hit[1]
    for k in [k for k, v in _ROW_OPS.items() if v[0]() is None]:
        del _ROW_OPS[k]
    Ws, _ = _dense_weights(net, dtype)
    ops = [_conv_rows(a.conv, dtype) if a.conv is not None else (lambda A, W=W: A @ W)
           for a, W in zip(net.affines, Ws)]
    _ROW_OPS[key] = (weakref.ref(net), ops)
    return ops


def crown_alpha_init(layers: list[RowLayer]) -> list[np.ndarray]:
    """CROWN's adaptive lower slopes (1 where ``u >= -l``): the chord slope >= 1/2."""
    return [np.where(L.free > 0, (L.up_slope >= 0.5).astype(np.float64), L.fixed_low) for L in layers]


def _rows_times(A: np.ndarray, W) -> np.ndarray:
    """Dense rows ``A`` times an affine map's ``W`` (CSR or dense)."""
    if sp.issparse(W):
        return np.ascontiguousarray((transposed_csr(W) @ A.T).T)
    return A @ W


def backsub64(net: Network, lo: np.ndarray, hi: np.ndarray, layers: list[RowLayer], C: np.ndarray,
              alpha: list[np.ndarray], beta: list[np.ndarray] | None, box_rows=None):
    """Sound float64 lower bounds of the stacked rows ``C @ logits`` (``C``: (R, classes)).

    Returns (bounds (R,), coefficients of each row on every ReLU layer's *output* (list of (R, n)),
    the final coefficients on the input (R, d), the concretizing corners (R, d): for each row the
    input of the box minimizing its linear lower bound).  ``box_rows``: optional (lo, hi) per row,
    each (R, d) (input splits), else the box ``[lo, hi]`` for every row.
    """
    last = net.affines[-1]
    A = _rows_times(C, last.W)
    const = C @ last.b
    coefs = [None] * len(layers)
    for i in reversed(range(len(layers))):
        L = layers[i]
        coefs[i] = A
        a = np.clip(alpha[i], 0.0, 1.0)
        low = L.fixed_low + L.free * a
        pos, neg = np.maximum(A, 0.0), np.minimum(A, 0.0)
        const = const + (neg * L.up_int).sum(axis=1)
        A = pos * low + neg * L.up_slope
        if beta is not None and beta[i] is not None:
            A = A - np.maximum(beta[i], 0.0) * L.sigma
        const = const + A @ net.affines[i].b
        A = _rows_times(A, net.affines[i].W)
    if box_rows is None:
        corners = np.where(A > 0, lo, hi)
    else:
        corners = np.where(A > 0, box_rows[0], box_rows[1])
    return (A * corners).sum(axis=1) + const, coefs, A, corners


def optimize(net: Network, lo: np.ndarray, hi: np.ndarray, layers: list[RowLayer], C: np.ndarray,
             alpha0: list[np.ndarray], beta0: list[np.ndarray] | None, steps: int, lr: float,
             deadline: float | None = None, stop_at: float | None = None, box_rows=None,
             dtype: torch.dtype = torch.float32):
    """Projected Adam on ``alpha`` (unstable neurons, in [0, 1]) and ``beta`` (split neurons, >= 0)
    maximizing every row's lower bound; returns (best alpha, best beta or None, evaluations).

    ``beta0 is None``: no β terms (α-CROWN).  ``deadline`` is checked before every step; ``stop_at``
    stops once every row's bound exceeds it (with ``bounds.alpha.STOP_SLACK`` for the float64 recomputation).
    """
    use_beta = beta0 is not None and any(bool((L.sigma != 0).any()) for L in layers)
    if steps <= 0 or C.shape[0] == 0 or not (use_beta or any(bool(L.free.any()) for L in layers)):
        return alpha0, beta0, 0
    Ws, bs = _dense_weights(net, dtype)
    times_W = row_products(net, dtype)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(dtype)  # noqa: E731
    up_s = [t(L.up_slope) for L in layers]
    up_i = [t(L.up_int) for L in layers]
    fix = [t(L.fixed_low) for L in layers]
    # Multipliers likewise on the split columns only.
    scols = [np.flatnonzero((L.sigma != 0).any(axis=0)) if use_beta else np.zeros(0, dtype=np.int64)
             for L in layers]
    scols_t = [torch.from_numpy(c) for c in scols]
    sig = [t(L.sigma[:, c]) if c.size else None for L, c in zip(layers, scols)]
    # Slopes are optimized on the columns unstable in some row only (a few hundred of a layer's
    # thousands): Adam's state and the kept best values then cost that, not rows x width.
    cols = [np.flatnonzero(L.free.any(axis=0)) for L in layers]
    cols_t = [torch.from_numpy(c) for c in cols]
    free_c = [t(L.free[:, c]) for L, c in zip(layers, cols)]
    alphas = [t(a[:, c]).requires_grad_(bool(c.size)) for a, c in zip(alpha0, cols)]
    betas = [None if s is None else t(b[:, c]).clamp(min=0).requires_grad_(True)
             for s, b, c in zip(sig, beta0 if use_beta else [None] * len(layers), scols)]
    params = [a for a in alphas if a.requires_grad] + [b for b in betas if b is not None]
    Ct = t(C)
    A_spec, c_spec = Ct @ Ws[-1], Ct @ bs[-1]
    if box_rows is None:
        mid, rad = t((lo + hi) / 2), t((hi - lo) / 2)
    else:
        mid, rad = t((box_rows[0] + box_rows[1]) / 2), t((box_rows[1] - box_rows[0]) / 2)

    def lower_bounds():
        A, c = A_spec, c_spec
        for i in reversed(range(len(layers))):
            low = fix[i].index_add(1, cols_t[i], free_c[i] * alphas[i]) if cols[i].size else fix[i]
            A_pos, A_neg = A.clamp(min=0), A.clamp(max=0)
            c = c + (A_neg * up_i[i]).sum(dim=1)
            A = A_pos * low + A_neg * up_s[i]
            if betas[i] is not None:
                A = A.index_add(1, scols_t[i], betas[i] * sig[i], alpha=-1.0)
            c = c + A @ bs[i]
            A = times_W[i](A)
        return (A * mid).sum(dim=1) - (A.abs() * rad).sum(dim=1) + c if box_rows is not None \
            else A @ mid - A.abs() @ rad + c

    def project():
        for a in alphas:
            if a.requires_grad:
                a.clamp_(0.0, 1.0)
        for b in betas:
            if b is not None:
                b.clamp_(min=0.0)

    best, done = maximize_bound(lower_bounds, params, list(alphas) + list(betas), project, C.shape[0], dtype,
                                steps=steps, lr=lr, deadline=deadline, stop_at=stop_at)
    best_a, best_b = best[:len(alphas)], best[len(alphas):]
    alpha = []
    for a0, a, c in zip(alpha0, best_a, cols):
        full = np.array(a0, dtype=np.float64)
        full[:, c] = a.double().numpy()
        alpha.append(full)
    if not use_beta:
        return alpha, beta0, done
    beta = []
    for a, b, c in zip(alpha, best_b, scols):
        full = np.zeros_like(a)
        if b is not None:
            full[:, c] = b.double().numpy()
        beta.append(full)
    return alpha, beta, done
