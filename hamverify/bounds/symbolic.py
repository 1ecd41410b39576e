"""Symbolic bounds: CROWN/DeepPoly-style linear relaxation with back-substitution to the input.

Every quantity bounded here is a linear function ``A @ h + c`` of some layer's ReLU outputs ``h``.
Its *upper* bound is found by replacing each ReLU by the linear bound that is valid in the direction
its coefficient pushes (upper line where the coefficient is positive, lower line where negative),
walking back through the affine maps, and finally maximizing over the input box.  Lower bounds are
upper bounds of the negated rows, so one code path serves both.
"""
from __future__ import annotations

import collections
import time
import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..network import Affine, Network, transposed_csr
from .interval import (LayerBounds, affine_interval, box_vectors, interval_bounds,
                       interval_output_bounds, relu_interval)

# Sparse coefficient rows become dense once this fraction of their entries is non-zero: past that,
# dense BLAS / sparse-times-dense products beat sparse-times-sparse.
DENSIFY_FRACTION = 0.2
# Rows back-substituted at once; bounds the memory of the dense (rows x width) intermediates.
MAX_ROWS_PER_CHUNK = 2048
# Row-sliced weight matrices kept per process (affine map, set of live neurons): the bounds of one
# input pass the same live set several times (each layer's rows, then the margins).
LIVE_CACHE_SIZE = 16


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


class _AffineCache:
    """Per-process cache of matrices derived from an ``Affine`` (which is immutable): its positive
    and negative parts for interval arithmetic, and its rows restricted to a set of live neurons.
    Entries hold a weak reference to the map and are dropped when it is gone or reused."""

    def __init__(self, size: int):
        self.size = size
        self._split: dict[int, tuple[weakref.ref, object, object]] = {}
        self._rows: collections.OrderedDict = collections.OrderedDict()

    def positive_negative(self, aff: Affine):
        hit = self._split.get(id(aff))
        if hit is not None and hit[0]() is aff:
            return hit[1], hit[2]
        for k in [k for k, v in self._split.items() if v[0]() is None]:
            del self._split[k]
        pos, neg = aff.positive_negative()
        self._split[id(aff)] = (weakref.ref(aff), pos, neg)
        return pos, neg

    def sub_matrix(self, aff: Affine, rows: np.ndarray, cols: np.ndarray | None):
        """``(aff.W[rows][:, cols], aff.b[rows])`` (``cols`` None: every column), index arrays
        increasing; CSR stays CSR."""
        key = ("sub", id(aff), rows.size, hash(rows.tobytes()), None if cols is None else (cols.size, hash(cols.tobytes())))
        hit = self._rows.get(key)
        if (hit is not None and hit[0]() is aff and np.array_equal(hit[1][0], rows)
                and (cols is None if hit[1][1] is None else cols is not None and np.array_equal(hit[1][1], cols))):
            self._rows.move_to_end(key)
            return hit[2], hit[3]
        W = aff.W[rows]
        if cols is not None:
            W = W[:, cols]
        if sp.issparse(W):
            W = W.tocsr()
        b = aff.b[rows]
        self._rows[key] = (weakref.ref(aff), (rows.copy(), None if cols is None else cols.copy()), W, b)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)
        return W, b

    def live_rows(self, aff: Affine, live: np.ndarray):
        """``(aff.W[live], aff.b[live])``, ``live`` an increasing index array."""
        key = (id(aff), live.size, hash(live.tobytes()))
        hit = self._rows.get(key)
        if hit is not None and hit[0]() is aff and np.array_equal(hit[1], live):
            self._rows.move_to_end(key)
            return hit[2], hit[3]
        W = aff.W[live]
        if sp.issparse(W):
            W = W.tocsr()
        self._rows[key] = (weakref.ref(aff), live.copy(), W, aff.b[live])
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)
        return W, aff.b[live]


_CACHE = _AffineCache(LIVE_CACHE_SIZE)


def cached_affine_interval(aff: Affine, lo: np.ndarray, hi: np.ndarray) -> LayerBounds:
    """``interval.affine_interval`` with the positive / negative parts of W computed once per map."""
    W_pos, W_neg = _CACHE.positive_negative(aff)
    lower = np.asarray(W_pos @ lo + W_neg @ hi).ravel() + aff.b
    upper = np.asarray(W_pos @ hi + W_neg @ lo).ravel() + aff.b
    return LayerBounds(lower, upper)


def _relu_affine_dense(A: np.ndarray, const: np.ndarray, relax: ReluRelaxation, aff: Affine):
    """``_through_relu`` then ``_through_affine`` for dense rows ``A``, on the live neurons only.

    A stably inactive neuron (both lines 0) contributes nothing, so its column is dropped before
    the product with the weights (about half the neurons of a trained layer); only the unstable
    columns need the sign-dependent choice of line, the others are scaled by their common slope.
    The coefficients are the same as the two-step path's (the unstable ones are written
    ``A * slope`` instead of ``A * lower + A+ * (upper - lower)``: equal up to float rounding).
    ``relax.lower_slope`` may be (n,) or per row (rows, n) (alpha-CROWN)."""
    up, icpt, low = relax.upper_slope, relax.upper_intercept, relax.lower_slope
    low_nonzero = low != 0 if low.ndim == 1 else (low != 0).any(axis=0)
    live = np.flatnonzero((up != 0) | low_nonzero | (icpt != 0))
    if live.size == 0:
        return np.zeros((A.shape[0], aff.in_features)), const.copy()
    differs = up != low if low.ndim == 1 else (up != low).any(axis=0)
    dependent = (differs | (icpt != 0))[live]
    Al = A[:, live]
    S = np.flatnonzero(dependent)
    if S.size:
        cols = live[S]
        As = Al[:, S]
        positive = As > 0
        const = const + np.where(positive, As, 0.0) @ icpt[cols]
        low_s = low[cols] if low.ndim == 1 else low[:, cols]
        Al[:, S] = np.where(positive, As * up[cols], As * low_s)
    N = np.flatnonzero(~dependent)
    if N.size:
        slope = up[live[N]]  # = the lower slope there
        if not np.all(slope == 1.0):
            Al[:, N] *= slope
    W, b = _CACHE.live_rows(aff, live)
    const = const + Al @ b
    out = Al @ W
    return (np.ascontiguousarray(out) if isinstance(out, np.ndarray) else np.asarray(out)), const


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
        return np.ascontiguousarray((transposed_csr(W) @ A.T).T), const
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
        if sp.issparse(A):
            A, const = _through_relu(A, const, relaxations[i])
            A, const = _through_affine(A, const, net.affines[i])
        else:
            A, const = _relu_affine_dense(np.asarray(A), const, relaxations[i], net.affines[i])
    return _maximize_over_box(A, const, lo, hi)


def _stack_signed(rows):
    """[rows; -rows], so that one upper-bound pass yields upper and (negated) lower bounds."""
    if sp.issparse(rows):
        return sp.vstack([rows, -rows]).tocsr()
    return np.vstack([rows, -rows])


# -- paired rows: upper and lower bounds of the same neurons in one pass -------------------------
#
# The rows bounding neurons from above (U, starting at W[rows]) and from below (L, the upper bound
# of -W[rows]) differ only where a ReLU's relaxation depends on the coefficient's sign (an
# unstable neuron); everywhere else the relaxation is linear and L stays -U.  So L is carried as
# ``-U + D`` with D non-zero only on columns that went through unstable neurons: the dense work
# (U through the big weight matrices) is done once instead of twice, D through them is sparse.


def _scale_cols(M, s: np.ndarray):
    """``M * s`` (each column j scaled by s[j]), keeping dense / CSR storage; zeros dropped."""
    if sp.issparse(M):
        M = M.tocsr()
        out = sp.csr_matrix((M.data * s[M.indices], M.indices, M.indptr), shape=M.shape)
        out.eliminate_zeros()
        return out
    return M * s


def _cols(M, cols: np.ndarray) -> np.ndarray:
    """The dense block ``M[:, cols]``."""
    return M[:, cols].toarray() if sp.issparse(M) else M[:, cols]


def _put_cols(M, cols: np.ndarray, block: np.ndarray, width: int):
    """``M`` (zero on ``cols``; ``None`` = all zero, ``width`` columns) with ``block`` written
    into those columns."""
    if M is not None and not sp.issparse(M):
        M[:, cols] = block
        return M
    rr, cc = np.nonzero(block)
    E = sp.csr_matrix((block[rr, cc], (rr, cols[cc])), shape=(block.shape[0], width))
    return E if M is None else (M + E).tocsr()


def _dense(M) -> np.ndarray:
    return M.toarray() if sp.issparse(M) else np.asarray(M)


def _live(relax: ReluRelaxation) -> np.ndarray:
    """Neurons whose relaxation is not identically 0 (all but the stably inactive ones)."""
    return np.flatnonzero((relax.upper_slope != 0) | (relax.lower_slope != 0) | (relax.upper_intercept != 0))


def paired_bounds(net: Network, relaxations: list[ReluRelaxation], layer: int, W_rows, b_rows: np.ndarray,
                  lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of ``W_rows @ relu(z_{layer-1}) + b_rows`` over the box, by back-substitution
    through the (1-D) ``relaxations``; the same bounds as ``upper_bound_backsub`` on the stacked
    rows ``[W_rows; -W_rows]`` (up to float rounding), at about half the cost (see above).

    The coefficient rows are kept on the live neurons only: a stably inactive neuron's column would
    be multiplied by 0 at the next ReLU, so each weight product is restricted to the live rows of
    the map (its outputs that are still needed) and to the live neurons of the layer below (its
    inputs that will be needed), a sub-matrix cached per map and pair of live sets."""
    U = W_rows.tocsr() if sp.issparse(W_rows) else np.array(W_rows, dtype=np.float64)
    cU = np.array(b_rows, dtype=np.float64)
    cL = -cU
    D = None  # L = -U + D
    cols = None  # the neurons U's and D's columns stand for (None: all of the layer's)
    for i in reversed(range(layer)):
        r, aff = relaxations[i], net.affines[i]
        up, icpt, low = r.upper_slope, r.upper_intercept, r.lower_slope
        if cols is not None:
            up, icpt, low = up[cols], icpt[cols], low[cols]
        dependent = (up != low) | (icpt != 0)
        dep = np.flatnonzero(dependent)
        slope = np.where(dependent, 0.0, up)  # the (common) slope where the sign does not matter
        Ud = _cols(U, dep)
        Ld = -Ud if D is None else _cols(D, dep) - Ud
        pU, pL = Ud > 0, Ld > 0
        cU = cU + np.where(pU, Ud, 0.0) @ icpt[dep]
        cL = cL + np.where(pL, Ld, 0.0) @ icpt[dep]
        rU = np.where(pU, Ud * up[dep], Ud * low[dep])
        rL = np.where(pL, Ld * up[dep], Ld * low[dep])
        U = _put_cols(_scale_cols(U, slope), dep, rU, up.size)
        D = _put_cols(None if D is None else _scale_cols(D, slope), dep, rL + rU, up.size)
        live = np.flatnonzero((up != 0) | (low != 0) | (icpt != 0))  # within cols
        rows = live if cols is None else cols[live]
        cols = _live(relaxations[i - 1]) if i > 0 else None
        W, b = _CACHE.sub_matrix(aff, rows, cols)
        bU = _rows_times(U, live, b)
        U = _rows_times(U, live, W)
        bD = _rows_times(D, live, b)
        D = _rows_times(D, live, W)
        cU = cU + bU
        cL = cL - bU + bD
    Uf = _dense(U)
    Lf = -Uf if D is None else _dense(D) - Uf
    upper = _maximize_over_box(Uf, cU, lo, hi)
    lower = -_maximize_over_box(Lf, cL, lo, hi)
    return lower, upper


def _rows_times(M, live: np.ndarray, W):
    """``M[:, live] @ W`` (W a matrix or a vector), dense / CSR kept as it suits the result."""
    if sp.issparse(M):
        Ml = M[:, live] if live.size != M.shape[1] else M
        out = Ml @ W
        if sp.issparse(out):
            out = out.tocsr()
            if out.nnz > DENSIFY_FRACTION * out.shape[0] * out.shape[1]:
                out = out.toarray()
            return out
        return np.asarray(out) if np.ndim(W) == 2 else np.asarray(out).ravel()
    Ml = M[:, live] if live.size != M.shape[1] else M
    if W.shape[0] == 0:
        return np.zeros((M.shape[0],) + W.shape[1:])
    out = Ml @ W
    return np.ascontiguousarray(out) if isinstance(out, np.ndarray) else np.asarray(out)


def bounds_of_rows(net: Network, relaxations: list[ReluRelaxation], layer: int, rows: np.ndarray,
                   lo: np.ndarray, hi: np.ndarray, deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the selected outputs of affine ``layer``, back-substituted in chunks.

    Chunks not started before ``deadline`` get (-inf, +inf): the caller keeps its IA bounds there."""
    aff = net.affines[layer]
    lower, upper = np.full(rows.size, -np.inf), np.full(rows.size, np.inf)
    paired = all(r.lower_slope.ndim == 1 for r in relaxations[:layer])
    for start in range(0, rows.size, MAX_ROWS_PER_CHUNK):
        if deadline is not None and time.monotonic() >= deadline:
            break
        chunk = rows[start:start + MAX_ROWS_PER_CHUNK]
        k = chunk.size
        if paired:
            lower[start:start + k], upper[start:start + k] = paired_bounds(net, relaxations, layer, aff.W[chunk],
                                                                           aff.b[chunk], lo, hi)
            continue
        A = _stack_signed(aff.W[chunk])
        const = np.concatenate([aff.b[chunk], -aff.b[chunk]])
        ub = upper_bound_backsub(net, relaxations, layer, A, const, lo, hi)
        upper[start:start + k] = ub[:k]
        lower[start:start + k] = -ub[k:]
    return lower, upper


# Layers refined by ``refine_symbolic``: id(LayerBounds) -> (weak reference, fingerprint of the box,
# the layers before it and its own result).  A later call on the same, unchanged state (e.g.
# ``lp_bounds`` re-deriving the layers after one whose LPs changed nothing) keeps the layer as it
# is instead of recomputing the same back-substitution.
_REFINED: dict[int, tuple[weakref.ref, bytes]] = {}


def _fingerprint(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: list[LayerBounds], j: int) -> bytes:
    import hashlib
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((id(net), [id(a) for a in net.affines])).encode())
    for a in (lo, hi):
        h.update(np.ascontiguousarray(a).tobytes())
    for b in bounds[:j + 1]:
        h.update(np.ascontiguousarray(b.lower).tobytes())
        h.update(np.ascontiguousarray(b.upper).tobytes())
    return h.digest()


def _remember(net, lo, hi, bounds, j) -> None:
    for k in [k for k, (ref, _) in _REFINED.items() if ref() is None]:
        del _REFINED[k]
    _REFINED[id(bounds[j])] = (weakref.ref(bounds[j]), _fingerprint(net, lo, hi, bounds, j))


def _already_refined(net, lo, hi, bounds, j) -> bool:
    hit = _REFINED.get(id(bounds[j]))
    return hit is not None and hit[0]() is bounds[j] and hit[1] == _fingerprint(net, lo, hi, bounds, j)


def refine_symbolic(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: list[LayerBounds],
                    first_layer: int = 1, deadline: float | None = None) -> list[LayerBounds]:
    """Tighten ``bounds[first_layer:]`` in place, progressively, keeping earlier layers as given.

    Each layer first gets IA from the (tightened) layer before it; only neurons still unstable
    then are back-substituted — tighter bounds on stable ones would not change the MILP.
    ``deadline`` (a ``time.monotonic()`` value): once it has passed, the remaining layers (and the
    remaining row chunks of a layer) keep the IA bounds — sound, only looser.  A layer that this
    function refined before, from the same box and the same earlier layers, is kept as it is.
    """
    relaxations = [relu_relaxation(b) for b in bounds[:first_layer]]
    for j in range(first_layer, len(bounds)):
        if j > 0 and _already_refined(net, lo, hi, bounds, j):
            relaxations.append(relu_relaxation(bounds[j]))
            continue
        current = bounds[j]
        if j > 0:
            current = current.intersect(cached_affine_interval(net.affines[j], *relu_interval(bounds[j - 1])))
        rows = np.flatnonzero(current.unstable)
        complete = True
        if rows.size and j > 0:  # layer 0 is affine in the input: IA is already exact there
            lower, upper = bounds_of_rows(net, relaxations, j, rows, lo, hi, deadline)
            complete = bool(np.all(np.isfinite(lower) | ~np.isfinite(current.lower[rows])))
            current.lower[rows] = np.maximum(current.lower[rows], lower)
            current.upper[rows] = np.minimum(current.upper[rows], upper)
        bounds[j] = current
        if j > 0 and complete and (deadline is None or time.monotonic() < deadline):
            _remember(net, lo, hi, bounds, j)
        relaxations.append(relu_relaxation(current))
    return bounds


def symbolic_bounds(net: Network, lo, hi, prior: list[LayerBounds] | None = None,
                    deadline: float | None = None) -> list[LayerBounds]:
    """Pre-activation bounds of every ReLU layer, never looser than IA or ``prior``.

    Layer 0 is IA (exact: affine in the input); every later layer is IA from the refined layer
    before it, intersected with ``prior``, then back-substituted (``refine_symbolic``).  With a
    ``deadline``, layers not reached in time keep these IA bounds (sound, looser)."""
    lo, hi = box_vectors(net, lo, hi)
    n = len(net.affines) - 1
    if n == 0:
        return []
    first = cached_affine_interval(net.affines[0], lo, hi)
    if prior is not None:
        first = first.intersect(prior[0])
    bounds = [first]
    for j in range(1, n):
        # placeholders: refine_symbolic intersects IA from the refined layer j-1 with them
        bounds.append(prior[j].copy() if prior is not None else
                      LayerBounds(np.full(net.affines[j].out_features, -np.inf),
                                  np.full(net.affines[j].out_features, np.inf)))
    return refine_symbolic(net, lo, hi, bounds, first_layer=1, deadline=deadline)


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
