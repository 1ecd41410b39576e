"""Symbolic bounds: CROWN/DeepPoly-style linear relaxation with back-substitution to the input.

Every quantity bounded here is a linear function ``A @ h + c`` of some layer's ReLU outputs ``h``.
Its *upper* bound is found by replacing each ReLU by the linear bound that is valid in the direction
its coefficient pushes (upper line where the coefficient is positive, lower line where negative),
walking back through the affine maps, and finally maximizing over the input box.  Lower bounds are
upper bounds of the negated rows, so one code path serves both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..network import Affine, Network
from .interval import (LayerBounds, affine_interval, box_vectors, interval_bounds,
                       interval_output_bounds, relu_interval)

# Sparse coefficient rows become dense once this fraction of their entries is non-zero: past that,
# dense BLAS / sparse-times-dense products beat sparse-times-sparse.
DENSIFY_FRACTION = 0.2
# Rows back-substituted at once; bounds the memory of the dense (rows x width) intermediates.
MAX_ROWS_PER_CHUNK = 2048


@dataclass(frozen=True)
class ReluRelaxation:
    """Linear bounds ``lower_slope * z <= relu(z) <= upper_slope * z + upper_intercept`` per neuron."""

    upper_slope: np.ndarray
    upper_intercept: np.ndarray
    lower_slope: np.ndarray


def relu_relaxation(bounds: LayerBounds) -> ReluRelaxation:
    """Exact for stable neurons; the chord as upper line and CROWN's adaptive 0/1 lower line otherwise."""
    lower, upper = bounds.lower, bounds.upper
    unstable = bounds.unstable
    active = (lower >= 0).astype(np.float64)
    upper_slope, lower_slope = active.copy(), active.copy()
    upper_intercept = np.zeros_like(lower)
    l_u, u_u = lower[unstable], upper[unstable]
    chord = u_u / (u_u - l_u)
    upper_slope[unstable] = chord
    upper_intercept[unstable] = -chord * l_u
    # Slope 1 where the positive side dominates: the smaller-area choice of the two lower lines.
    lower_slope[unstable] = (u_u >= -l_u).astype(np.float64)
    return ReluRelaxation(upper_slope, upper_intercept, lower_slope)


def _through_relu(A, const: np.ndarray, relax: ReluRelaxation):
    """Rewrite an upper bound of ``A @ relu(z) + const`` as ``A' @ z + const'``."""
    if sp.issparse(A):
        A = A.tocsr()
        cols = A.indices
        positive = A.data > 0
        slope = np.where(positive, relax.upper_slope[cols], relax.lower_slope[cols])
        shift = np.where(positive, A.data * relax.upper_intercept[cols], 0.0)
        row_of_entry = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        const = const + np.bincount(row_of_entry, weights=shift, minlength=A.shape[0])
        out = sp.csr_matrix((A.data * slope, A.indices.copy(), A.indptr.copy()), shape=A.shape)
        out.eliminate_zeros()
        return out, const
    positive_part = np.maximum(A, 0.0)
    const = const + positive_part @ relax.upper_intercept
    # A' = A+ * upper_slope + A- * lower_slope, written to need one (rows x width) temporary less.
    out = A * relax.lower_slope
    out += positive_part * (relax.upper_slope - relax.lower_slope)
    return out, const


def _through_affine(A, const: np.ndarray, aff: Affine):
    """Rewrite ``A @ (W x + b) + const`` as ``(A W) @ x + const'``."""
    const = const + np.asarray(A @ aff.b).ravel()
    W = aff.W
    if sp.issparse(A) and sp.issparse(W):
        out = (A @ W).tocsr()
        if out.nnz > DENSIFY_FRACTION * out.shape[0] * out.shape[1]:
            out = out.toarray()
        return out, const
    if sp.issparse(W):
        # dense @ sparse: scipy routes it through (W.T @ A.T).T; do so explicitly with CSC rows.
        return np.ascontiguousarray((W.T.tocsr() @ A.T).T), const
    return np.asarray(A @ W), const


def _maximize_over_box(A, const: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max of A x + const over lo <= x <= hi: A+ picks hi, A- picks lo."""
    mid, rad = (hi + lo) / 2.0, (hi - lo) / 2.0
    return np.asarray(A @ mid).ravel() + np.asarray(abs(A) @ rad).ravel() + const


def upper_bound_backsub(net: Network, relaxations: list[ReluRelaxation], layer: int, A, const,
                        lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Upper bounds of ``A @ relu(z_{layer-1}) + const`` (A on the input of affine ``layer``).

    ``layer == 0`` means A acts on the input itself.  ``relaxations[i]`` relaxes ReLU layer i.
    """
    for i in reversed(range(layer)):
        A, const = _through_relu(A, const, relaxations[i])
        A, const = _through_affine(A, const, net.affines[i])
    return _maximize_over_box(A, const, lo, hi)


def _stack_signed(rows):
    """[rows; -rows], so that one upper-bound pass yields upper and (negated) lower bounds."""
    if sp.issparse(rows):
        return sp.vstack([rows, -rows]).tocsr()
    return np.vstack([rows, -rows])


def bounds_of_rows(net: Network, relaxations: list[ReluRelaxation], layer: int, rows: np.ndarray,
                   lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the selected outputs of affine ``layer``, back-substituted in chunks."""
    aff = net.affines[layer]
    lower, upper = np.empty(rows.size), np.empty(rows.size)
    for start in range(0, rows.size, MAX_ROWS_PER_CHUNK):
        chunk = rows[start:start + MAX_ROWS_PER_CHUNK]
        k = chunk.size
        A = _stack_signed(aff.W[chunk])
        const = np.concatenate([aff.b[chunk], -aff.b[chunk]])
        ub = upper_bound_backsub(net, relaxations, layer, A, const, lo, hi)
        upper[start:start + k] = ub[:k]
        lower[start:start + k] = -ub[k:]
    return lower, upper


def refine_symbolic(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: list[LayerBounds],
                    first_layer: int = 1) -> list[LayerBounds]:
    """Tighten ``bounds[first_layer:]`` in place, progressively, keeping earlier layers as given.

    Each layer first gets IA from the (tightened) layer before it; only neurons still unstable
    then are back-substituted — tighter bounds on stable ones would not change the MILP.
    """
    relaxations = [relu_relaxation(b) for b in bounds[:first_layer]]
    for j in range(first_layer, len(bounds)):
        current = bounds[j]
        if j > 0:
            current = current.intersect(affine_interval(net.affines[j], *relu_interval(bounds[j - 1])))
        rows = np.flatnonzero(current.unstable)
        if rows.size and j > 0:  # layer 0 is affine in the input: IA is already exact there
            lower, upper = bounds_of_rows(net, relaxations, j, rows, lo, hi)
            current.lower[rows] = np.maximum(current.lower[rows], lower)
            current.upper[rows] = np.minimum(current.upper[rows], upper)
        bounds[j] = current
        relaxations.append(relu_relaxation(current))
    return bounds


def symbolic_bounds(net: Network, lo, hi, prior: list[LayerBounds] | None = None) -> list[LayerBounds]:
    """Pre-activation bounds of every ReLU layer, never looser than IA or ``prior``."""
    lo, hi = box_vectors(net, lo, hi)
    return refine_symbolic(net, lo, hi, interval_bounds(net, lo, hi, prior), first_layer=1)


def _last_affine_rows(net: Network, C: np.ndarray) -> Affine:
    """The affine map ``C @ logits`` as a function of the last ReLU layer's outputs."""
    last = net.affines[-1]
    return Affine(np.asarray((last.W.T @ C.T).T) if sp.issparse(last.W) else C @ last.W, C @ last.b)


def specification_lower_bounds(net: Network, lo, hi, bounds: list[LayerBounds], C: np.ndarray) -> np.ndarray:
    """Sound lower bounds of ``C @ logits`` over the box: max of back-substitution and IA."""
    lo, hi = box_vectors(net, lo, hi)
    spec = _last_affine_rows(net, np.asarray(C, dtype=np.float64))
    relaxations = [relu_relaxation(b) for b in bounds]
    layer = len(net.affines) - 1
    negated_upper = upper_bound_backsub(net, relaxations, layer, -spec.W, -spec.b, lo, hi)
    h_lo, h_hi = relu_interval(bounds[-1]) if bounds else (lo, hi)
    return np.maximum(-negated_upper, affine_interval(spec, h_lo, h_hi).lower)


def margin_lower_bounds(net: Network, lo, hi, bounds: list[LayerBounds], label: int) -> np.ndarray:
    """Lower bound on ``z_label - z_j`` for every class j (``+inf`` at j == label)."""
    classes = net.num_classes
    others = np.array([j for j in range(classes) if j != label], dtype=int)
    C = np.zeros((others.size, classes))
    C[:, label] = 1.0
    C[np.arange(others.size), others] = -1.0
    margins = np.full(classes, np.inf)
    if others.size:
        margins[others] = specification_lower_bounds(net, lo, hi, bounds, C)
    return margins


def output_bounds(net: Network, lo, hi, bounds: list[LayerBounds]) -> LayerBounds:
    """Bounds of the logits, from back-substitution intersected with IA."""
    eye = np.eye(net.num_classes)
    lower = specification_lower_bounds(net, lo, hi, bounds, eye)
    upper = -specification_lower_bounds(net, lo, hi, bounds, -eye)
    return LayerBounds(lower, upper).intersect(interval_output_bounds(net, lo, hi, bounds))
