"""Tjeng, Xiao & Tedrake's MILP encoding of a ReLU network as solver-neutral arrays (docs/METHOD.md §5).

The model is ``min c @ v + offset`` subject to ``row_lower <= A @ v <= row_upper`` and
``col_lower <= v <= col_upper``, with ``v[integrality == 1]`` binary.  Columns, in order:

* the input ``x`` (box bounds);
* per ReLU layer: ``a`` (the ReLU output, in ``[0, u]``) and ``delta`` (binary) for each unstable
  neuron, then — only with ``stable_active="column"`` — one column per stably active neuron;
* for :func:`encode_min_margin` only: ``t`` (the max over the targets' logits) and one binary per
  target.

Every block is assembled whole with scipy.sparse products and stacks, one Python step per layer.
A neuron's post-activation is carried forward as an affine expression in the columns
(``H @ v + h``): stable-inactive neurons are a zero row, unstable ones the unit row of their ``a``
column, and stable-active ones either their pre-activation expression itself (``"substitute"``,
the default: fewest rows and columns) or the unit row of an extra column tied to it by an equality
row (``"column"``: no fill-in when stably active chains compose through dense layers).

Measured choices.  Substituting stable-active neurons: on a random-init ``mnist_small`` at eps
0.004 (64 / 350 / 100 unstable ReLUs) both forms have the same LP relaxation, but the per-target
MILPs proved robustness in 6.6-9.6 s in total with ``"substitute"`` and timed out at 60 s on the
first target with ``"column"`` (4 of 4 instances).  One MILP per target class (what
``hamverify.verify`` uses) rather than :func:`encode_min_margin`: on the same instances the single
MILP took 1.7 s, 27 s, 34 s and one 60 s timeout against 7-10 s every time for the per-target
MILPs, and per-target MILPs let the bounds skip every class they already exclude.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import scipy.sparse as sp

from .. import HamverifyError
from ..network import Network

STABLE_ACTIVE_MODES = ("substitute", "column")


class PreactivationBounds(Protocol):
    """What the encoder needs from the bounds module: ``lower <= z_hat <= upper`` per ReLU layer."""

    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True)
class ReluColumns:
    """Where one ReLU layer's neurons live among the MILP columns (to complete a point into a
    full assignment, and to read activation patterns back)."""

    unstable: np.ndarray  # neuron indices with l < 0 < u
    relu_cols: np.ndarray  # column of each unstable neuron's output a
    binary_cols: np.ndarray  # column of each unstable neuron's delta
    active_cols: np.ndarray  # column of each stably active neuron ("column" mode; else empty)
    active: np.ndarray  # neuron indices with l >= 0
    inactive: np.ndarray  # neuron indices with u <= 0


@dataclass(frozen=True)
class MaxColumns:
    """The extra columns of :func:`encode_min_margin`: ``t = max_j z_j`` and one binary per target."""

    targets: np.ndarray
    t_col: int
    select_cols: np.ndarray


@dataclass(frozen=True)
class LogitExpression:
    """The logits as an affine function of the MILP columns: ``z = matrix @ v + constant``."""

    matrix: sp.csr_matrix  # classes x n_cols
    constant: np.ndarray

    def evaluate(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix @ values).ravel() + self.constant


@dataclass(frozen=True)
class LayerInputs:
    """What feeds one ReLU layer, kept for cut separation (``hamverify/milp/cuts.py``): the
    pre-activation is ``W @ y + b`` where the previous layer's output ``y = H @ v + h`` lies in
    ``[lower, upper]`` (for the first layer: the input box)."""

    W: sp.csr_matrix
    b: np.ndarray
    H: sp.csr_matrix
    h: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


@dataclass
class MilpArrays:
    """A minimization MILP in array form, independent of any solver."""

    c: np.ndarray
    offset: float
    A: sp.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integrality: np.ndarray  # uint8, 1 = binary (its column bounds are [0, 1])
    input_cols: np.ndarray
    n_binaries: int
    unstable_per_layer: list[int]
    relu_columns: tuple[ReluColumns, ...] = ()
    max_columns: MaxColumns | None = None
    layer_inputs: tuple[LayerInputs, ...] = ()  # one per ReLU layer, aligned with relu_columns
    # kept so that a solver can complete an input point (e.g. PGD's best) into a full assignment
    network: Network | None = field(default=None, repr=False)

    @property
    def n_rows(self) -> int:
        return self.A.shape[0]

    @property
    def n_cols(self) -> int:
        return self.A.shape[1]

    def objective(self, values: np.ndarray) -> float:
        return float(self.c @ values + self.offset)

    def input_point(self, values: np.ndarray) -> np.ndarray:
        """The input part of an assignment, clipped into the box (solvers honour bounds only up to
        their feasibility tolerance)."""
        cols = self.input_cols
        return np.clip(values[cols], self.col_lower[cols], self.col_upper[cols])


def _pad_cols(M: sp.csr_matrix, n_cols: int) -> sp.csr_matrix:
    """The same CSR matrix seen with more (all-zero) columns on the right."""
    M = sp.csr_matrix(M)
    return sp.csr_matrix((M.data, M.indices, M.indptr), shape=(M.shape[0], n_cols))


def _as_sparse(W) -> sp.csr_matrix:
    return W.tocsr() if sp.issparse(W) else sp.csr_matrix(np.asarray(W, dtype=np.float64))


def _unit_rows(n_rows: int, rows: np.ndarray, cols: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """A matrix with a single 1 at (rows[i], cols[i]) for each i."""
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_rows, n_cols))


@dataclass
class _Builder:
    """Accumulates column bounds and row blocks while the layers are encoded."""

    col_lower: list[np.ndarray] = field(default_factory=list)
    col_upper: list[np.ndarray] = field(default_factory=list)
    integrality: list[np.ndarray] = field(default_factory=list)
    blocks: list[sp.csr_matrix] = field(default_factory=list)
    row_lower: list[np.ndarray] = field(default_factory=list)
    row_upper: list[np.ndarray] = field(default_factory=list)
    n_cols: int = 0

    def add_cols(self, lower, upper, binary: bool = False) -> np.ndarray:
        lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        self.col_lower.append(lower)
        self.col_upper.append(upper)
        self.integrality.append(np.full(len(lower), int(binary), dtype=np.uint8))
        cols = np.arange(self.n_cols, self.n_cols + len(lower))
        self.n_cols += len(lower)
        return cols

    def add_rows(self, block, lower, upper) -> None:
        n = block.shape[0]
        self.blocks.append(sp.csr_matrix(block))
        self.row_lower.append(np.broadcast_to(np.asarray(lower, dtype=np.float64), (n,)))
        self.row_upper.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (n,)))

    def finish(self, **fields) -> MilpArrays:
        n = self.n_cols
        A = (sp.vstack([_pad_cols(B, n) for B in self.blocks], format="csr") if self.blocks
             else sp.csr_matrix((0, n)))
        A.sum_duplicates()
        A.eliminate_zeros()
        cat = (lambda parts, dtype=np.float64: np.concatenate(parts).astype(dtype)
               if parts else np.zeros(0, dtype))
        integrality = cat(self.integrality, np.uint8)
        return MilpArrays(
            c=np.zeros(n), offset=0.0, A=A,
            row_lower=cat(self.row_lower), row_upper=cat(self.row_upper),
            col_lower=cat(self.col_lower), col_upper=cat(self.col_upper),
            integrality=integrality, n_binaries=int(integrality.sum()), **fields)


def _check_inputs(net: Network, lo, hi, bounds) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(lo, dtype=np.float64).ravel()
    hi = np.asarray(hi, dtype=np.float64).ravel()
    if lo.shape != (net.input_size,) or hi.shape != (net.input_size,):
        raise HamverifyError(f"input box has {lo.size}/{hi.size} entries, the network takes {net.input_size}")
    sizes = net.relu_layer_sizes
    if len(bounds) != len(sizes):
        raise HamverifyError(f"got bounds for {len(bounds)} ReLU layers, the network has {len(sizes)}")
    for k, (b, m) in enumerate(zip(bounds, sizes)):
        if np.shape(b.lower) != (m,) or np.shape(b.upper) != (m,):
            raise HamverifyError(f"bounds of ReLU layer {k} do not have {m} entries")
        if np.isnan(b.lower).any() or np.isnan(b.upper).any():
            raise HamverifyError(f"bounds of ReLU layer {k} contain NaN")
    return lo, hi


def _encode_relu_layer(builder: _Builder, Z: sp.csr_matrix, z: np.ndarray, lower: np.ndarray,
                       upper: np.ndarray, stable_active: str):
    """Encode ``relu(Z @ v + z)`` given ``lower <= Z @ v + z <= upper``.

    Returns (H, h, ReluColumns) with the post-activation expression ``H @ v + h`` (H has the
    builder's column count after this layer)."""
    m = Z.shape[0]
    inactive = np.flatnonzero(upper <= 0)
    active = np.flatnonzero((lower >= 0) & (upper > 0))
    unstable = np.flatnonzero((lower < 0) & (upper > 0))
    l, u = lower[unstable], upper[unstable]
    nu = len(unstable)

    a_cols = builder.add_cols(np.zeros(nu), u)
    d_cols = builder.add_cols(np.zeros(nu), np.ones(nu), binary=True)
    n = builder.n_cols
    Zu, zu = _pad_cols(Z[unstable], n), z[unstable]
    A_a = _unit_rows(nu, np.arange(nu), a_cols, n)
    D = _unit_rows(nu, np.arange(nu), d_cols, n)
    builder.add_rows(A_a - Zu, zu, np.inf)  # a >= z_hat
    builder.add_rows(A_a - Zu - sp.diags(l) @ D, -np.inf, zu - l)  # a <= z_hat - l (1 - delta)
    builder.add_rows(A_a - sp.diags(u) @ D, -np.inf, 0.0)  # a <= u delta

    if stable_active == "column":
        y_cols = builder.add_cols(np.maximum(lower[active], 0.0), upper[active])
        n = builder.n_cols
        builder.add_rows(_unit_rows(len(active), np.arange(len(active)), y_cols, n)
                         - _pad_cols(Z[active], n), z[active], z[active])  # y = z_hat
        H = (_unit_rows(m, unstable, a_cols, n) + _unit_rows(m, active, y_cols, n)).tocsr()
        h = np.zeros(m)
    else:
        y_cols = np.zeros(0, dtype=np.int64)
        is_active = np.zeros(m)
        is_active[active] = 1.0
        H = (_unit_rows(m, unstable, a_cols, n) + _pad_cols(sp.diags(is_active) @ Z, n)).tocsr()
        h = np.zeros(m)
        h[active] = z[active]
    columns = ReluColumns(unstable=unstable, relu_cols=a_cols, binary_cols=d_cols,
                          active_cols=y_cols, active=active, inactive=inactive)
    return H, h, columns


def encode_network(net: Network, lo, hi, bounds: Sequence[PreactivationBounds],
                   stable_active: str = "substitute") -> tuple[MilpArrays, LogitExpression]:
    """The feasible set {(x, a, delta) : x in [lo, hi], the network's ReLUs hold} and its logits.

    ``bounds[k]`` must be valid pre-activation bounds of ReLU layer ``k`` over the box; the
    encoding is exact for valid bounds (and silently wrong for invalid ones).  The returned
    MilpArrays has a zero objective; see :func:`margin_objective`.
    """
    if stable_active not in STABLE_ACTIVE_MODES:
        raise HamverifyError(f"stable_active must be one of {STABLE_ACTIVE_MODES}, got {stable_active!r}")
    lo, hi = _check_inputs(net, lo, hi, bounds)
    builder = _Builder()
    input_cols = builder.add_cols(lo, hi)
    H, h = sp.identity(len(lo), format="csr"), np.zeros(len(lo))
    y_lower, y_upper = lo, hi  # bounds on the current layer's input y = H @ v + h
    relu_columns, layer_inputs = [], []
    for aff, bnd in zip(net.affines[:-1], bounds):
        W = _as_sparse(aff.W)
        layer_inputs.append(LayerInputs(W, np.asarray(aff.b, dtype=np.float64), H, h, y_lower, y_upper))
        Z, z = W @ _pad_cols(H, builder.n_cols), np.asarray(W @ h).ravel() + aff.b
        H, h, columns = _encode_relu_layer(builder, sp.csr_matrix(Z), z,
                                           np.asarray(bnd.lower, dtype=np.float64),
                                           np.asarray(bnd.upper, dtype=np.float64), stable_active)
        relu_columns.append(columns)
        y_lower = np.maximum(np.asarray(bnd.lower, dtype=np.float64), 0.0)
        y_upper = np.maximum(np.asarray(bnd.upper, dtype=np.float64), 0.0)
    W = _as_sparse(net.affines[-1].W)
    milp = builder.finish(input_cols=input_cols,
                          unstable_per_layer=[len(c.unstable) for c in relu_columns],
                          relu_columns=tuple(relu_columns), layer_inputs=tuple(layer_inputs), network=net)
    logits = LogitExpression(_pad_cols(W @ _pad_cols(H, milp.n_cols), milp.n_cols),
                             np.asarray(W @ h).ravel() + net.affines[-1].b)
    return milp, logits


def _check_classes(logits: LogitExpression, label: int, targets) -> np.ndarray:
    n_classes = len(logits.constant)
    targets = np.atleast_1d(np.asarray(targets, dtype=np.int64))
    if not 0 <= label < n_classes or np.any((targets < 0) | (targets >= n_classes)):
        raise HamverifyError(f"class indices must lie in [0, {n_classes}), got label {label}, targets {targets.tolist()}")
    if np.any(targets == label) or len(targets) == 0:
        raise HamverifyError(f"targets must be non-empty and exclude the label {label}")
    return targets


def margin_objective(milp: MilpArrays, logits: LogitExpression, label: int, target: int) -> MilpArrays:
    """The same MILP with objective ``z_label - z_target`` (a shallow copy; arrays are shared)."""
    _check_classes(logits, label, [target])
    row = logits.matrix[label] - logits.matrix[target]
    return dataclasses.replace(milp, c=row.toarray().ravel(),
                               offset=float(logits.constant[label] - logits.constant[target]))


def encode_margin(net: Network, lo, hi, bounds: Sequence[PreactivationBounds], label: int,
                  target: int, stable_active: str = "substitute") -> MilpArrays:
    """MILP for ``min_{x in box} z_label(x) - z_target(x)``; robust against ``target`` iff > 0."""
    milp, logits = encode_network(net, lo, hi, bounds, stable_active)
    return margin_objective(milp, logits, label, target)


def logit_interval_bounds(net: Network, bounds: Sequence[PreactivationBounds]) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds on the logits from the last ReLU layer's pre-activation bounds."""
    last = net.affines[-1]
    W_pos, W_neg = last.positive_negative()
    h_lo, h_hi = np.maximum(bounds[-1].lower, 0.0), np.maximum(bounds[-1].upper, 0.0)
    lower = np.asarray(W_pos @ h_lo + W_neg @ h_hi).ravel() + last.b
    upper = np.asarray(W_pos @ h_hi + W_neg @ h_lo).ravel() + last.b
    return lower, upper


def encode_min_margin(net: Network, lo, hi, bounds: Sequence[PreactivationBounds], label: int,
                      targets=None, logit_bounds=None, stable_active: str = "substitute") -> MilpArrays:
    """One MILP for ``min_x z_label(x) - max_{j in targets} z_j(x)`` (targets default: all j != label).

    ``t`` stands for the max: ``t <= z_j + M_j (1 - s_j)`` with one binary ``s_j`` per target and
    ``sum_j s_j = 1``, where ``M_j = max_k U_k - L_j`` from ``logit_bounds`` (default: interval
    bounds from the last ReLU layer).  Minimizing pushes ``t`` up to the largest target logit, so
    ``t >= z_j`` rows are not needed.
    """
    if not net.relu_layer_sizes:
        raise HamverifyError("encode_min_margin needs at least one ReLU layer")
    milp, logits = encode_network(net, lo, hi, bounds, stable_active)
    if targets is None:
        targets = [j for j in range(net.num_classes) if j != label]
    targets = _check_classes(logits, label, targets)
    L, U = logit_interval_bounds(net, bounds) if logit_bounds is None else map(np.asarray, logit_bounds)
    L_t, U_t = L[targets], U[targets]
    t_max = float(U_t.max())
    big_m = t_max - L_t

    n_old, k = milp.n_cols, len(targets)
    t_col, s_cols = n_old, np.arange(n_old + 1, n_old + 1 + k)
    n = n_old + 1 + k
    Zt = _pad_cols(logits.matrix[targets], n)
    T = _unit_rows(k, np.arange(k), np.full(k, t_col), n)
    S = sp.csr_matrix((big_m, (np.arange(k), s_cols)), shape=(k, n))
    choose_one = sp.csr_matrix((np.ones(k), (np.zeros(k, dtype=np.int64), s_cols)), shape=(1, n))
    A = sp.vstack([_pad_cols(milp.A, n), T - Zt + S, choose_one], format="csr")

    c = np.zeros(n)
    c[:n_old] = logits.matrix[label].toarray().ravel()
    c[t_col] = -1.0
    return dataclasses.replace(
        milp, c=c, offset=float(logits.constant[label]), A=A,
        row_lower=np.concatenate([milp.row_lower, np.full(k, -np.inf), [1.0]]),
        row_upper=np.concatenate([milp.row_upper, logits.constant[targets] + big_m, [1.0]]),
        col_lower=np.concatenate([milp.col_lower, [float(L_t.max())], np.zeros(k)]),
        col_upper=np.concatenate([milp.col_upper, [t_max], np.ones(k)]),
        integrality=np.concatenate([milp.integrality, [0], np.ones(k, dtype=np.uint8)]).astype(np.uint8),
        n_binaries=milp.n_binaries + k,
        max_columns=MaxColumns(targets=targets, t_col=t_col, select_cols=s_cols))


def complete_assignment(milp: MilpArrays, x) -> np.ndarray:
    """A full assignment of the MILP's columns for input ``x`` (clipped into the box), from the
    network's forward pass: feasible whenever the encoding's bounds hold at ``x``."""
    if milp.network is None:
        raise HamverifyError("this MILP carries no network to complete an input point with")
    net = milp.network
    values = np.zeros(milp.n_cols)
    x = np.clip(np.asarray(x, dtype=np.float64).ravel(), milp.col_lower[milp.input_cols],
                milp.col_upper[milp.input_cols])
    values[milp.input_cols] = x
    for pre, cols in zip(net.preactivations(x), milp.relu_columns):
        z = pre[0]
        values[cols.relu_cols] = np.maximum(z[cols.unstable], 0.0)
        values[cols.binary_cols] = (z[cols.unstable] > 0).astype(np.float64)
        values[cols.active_cols] = z[cols.active] if len(cols.active_cols) else 0.0
    if milp.max_columns is not None:
        mc = milp.max_columns
        z = net.forward(x)[0][mc.targets]
        values[mc.t_col] = z.max()
        values[mc.select_cols[np.argmax(z)]] = 1.0
    return values


def assignment_violation(milp: MilpArrays, values: np.ndarray) -> float:
    """Largest violation of a row or column bound by ``values`` (0 when feasible)."""
    activity = milp.A @ values
    return float(max(np.max(milp.row_lower - activity, initial=0.0),
                     np.max(activity - milp.row_upper, initial=0.0),
                     np.max(milp.col_lower - values, initial=0.0),
                     np.max(values - milp.col_upper, initial=0.0)))
