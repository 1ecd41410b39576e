"""LP tightening: per-neuron min/max over the triangle (Planet/Ehlers) relaxation (docs/METHOD.md §5.1).

For ReLU layer j, one LP holds the input box, every earlier layer with its current bounds, and one
column per still-unstable neuron of layer j.  Each bound is then two objective changes and a
hot-started simplex solve.  A bound is accepted only from an *Optimal* solve, and even then not
from the solver's objective value but from the Lagrangian bound its duals certify, recomputed here
in float64 — so solver tolerances can loosen a bound but never make it unsound.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..milp.quiet import new_highs
from ..network import Network
from .interval import LayerBounds, box_vectors
from .symbolic import refine_symbolic, symbolic_bounds

# Outward padding of every LP-derived bound, on top of the dual certificate (float64 rounding).
LP_BOUND_PADDING = 1e-7
# Target rows denser than this (fraction of the previous layer) are solved by interior point.
# Measured on cifar_small at 8/255: conv-layer targets take 10-50 ms each with hot-started primal
# simplex (dual simplex: > 30 s), but the dense 128-unit layer's targets, which depend on every
# earlier neuron, need 10-30 s of simplex per objective change against ~3 s of IPM from scratch.
# Small LPs are solved by simplex whatever their density (IPM's per-solve setup dominates there).
IPM_ROW_DENSITY = 0.25
IPM_MIN_NONZEROS = 100_000


@dataclass
class _LpArrays:
    """An LP ``min c x  s.t.  row_lower <= A x <= row_upper, col_lower <= x <= col_upper``."""

    A: sp.csr_matrix
    col_lower: np.ndarray
    col_upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray


@dataclass
class _LpBuilder:
    """Accumulates column blocks and COO row blocks of the relaxation."""

    col_lower: list = field(default_factory=list)
    col_upper: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    cols: list = field(default_factory=list)
    vals: list = field(default_factory=list)
    row_lower: list = field(default_factory=list)
    row_upper: list = field(default_factory=list)
    num_cols: int = 0
    num_rows: int = 0

    def add_cols(self, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        index = np.arange(self.num_cols, self.num_cols + lower.size)
        self.col_lower.append(lower)
        self.col_upper.append(upper)
        self.num_cols += lower.size
        return index

    def add_rows(self, row: np.ndarray, col: np.ndarray, val: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray):
        """Append ``lower.size`` rows given as COO triplets (row numbers local to the block)."""
        self.rows.append(row + self.num_rows)
        self.cols.append(col)
        self.vals.append(np.asarray(val, dtype=np.float64))
        self.row_lower.append(lower)
        self.row_upper.append(upper)
        self.num_rows += lower.size

    def arrays(self) -> _LpArrays:
        A = sp.csr_matrix((np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
                          shape=(self.num_rows, self.num_cols))
        A.sum_duplicates()
        return _LpArrays(A, np.concatenate(self.col_lower), np.concatenate(self.col_upper),
                         np.concatenate(self.row_lower), np.concatenate(self.row_upper))


def _add_two_term_rows(lp: _LpBuilder, cols_a: np.ndarray, coef_a, cols_b: np.ndarray, coef_b,
                       lower: np.ndarray, upper: np.ndarray):
    """Rows ``lower <= coef_a * v[cols_a[r]] + coef_b * v[cols_b[r]] <= upper``."""
    n = cols_a.size
    row = np.concatenate([np.arange(n), np.arange(n)])
    val = np.concatenate([np.broadcast_to(coef_a, n), np.broadcast_to(coef_b, n)])
    lp.add_rows(row, np.concatenate([cols_a, cols_b]), val, lower, upper)


def _add_affine_rows(lp: _LpBuilder, W, b: np.ndarray, neurons: np.ndarray, prev_cols: np.ndarray,
                     z_cols: np.ndarray):
    """Equality rows ``z - W[neurons] h_prev = b[neurons]``; inactive inputs (col -1) drop out."""
    live = np.flatnonzero(prev_cols >= 0)
    block = sp.coo_matrix(W[neurons][:, live])
    n = neurons.size
    row = np.concatenate([block.row, np.arange(n)])
    col = np.concatenate([prev_cols[live][block.col], z_cols])
    val = np.concatenate([-block.data, np.ones(n)])
    lp.add_rows(row, col, val, b[neurons], b[neurons])


def _add_relu_layer(lp: _LpBuilder, W, b: np.ndarray, bounds: LayerBounds, prev_cols: np.ndarray) -> np.ndarray:
    """Encode one ReLU layer; returns the LP column holding each neuron's output (-1: always 0)."""
    active = np.flatnonzero(bounds.stably_active)
    unstable = np.flatnonzero(bounds.unstable)
    out_cols = np.full(bounds.lower.size, -1)
    # Stably active: the output is the pre-activation itself, one column.
    active_cols = lp.add_cols(bounds.lower[active], bounds.upper[active])
    _add_affine_rows(lp, W, b, active, prev_cols, active_cols)
    out_cols[active] = active_cols
    # Unstable: pre-activation z and output h with h >= 0, h >= z, h <= s (z - l).
    l, u = bounds.lower[unstable], bounds.upper[unstable]
    z_cols = lp.add_cols(l, u)
    _add_affine_rows(lp, W, b, unstable, prev_cols, z_cols)
    h_cols = lp.add_cols(np.zeros_like(u), u)
    n = unstable.size
    _add_two_term_rows(lp, h_cols, 1.0, z_cols, -1.0, np.zeros(n), np.full(n, np.inf))
    chord = u / (u - l)
    _add_two_term_rows(lp, h_cols, 1.0, z_cols, -chord, np.full(n, -np.inf), -chord * l)
    out_cols[unstable] = h_cols
    return out_cols


def _build_layer_lp(net: Network, lo: np.ndarray, hi: np.ndarray, bounds: list[LayerBounds], layer: int,
                    targets: np.ndarray) -> tuple[_LpArrays, np.ndarray]:
    """The relaxation of layers 0..layer-1 plus a column per target neuron of ``layer``."""
    lp = _LpBuilder()
    prev_cols = lp.add_cols(lo, hi)
    for i in range(layer):
        aff = net.affines[i]
        prev_cols = _add_relu_layer(lp, aff.W, aff.b, bounds[i], prev_cols)
    aff = net.affines[layer]
    target_cols = lp.add_cols(bounds[layer].lower[targets], bounds[layer].upper[targets])
    _add_affine_rows(lp, aff.W, aff.b, targets, prev_cols, target_cols)
    return lp.arrays(), target_cols


def _choose_solver(W, targets: np.ndarray, arrays: _LpArrays) -> str:
    """"ipm" for a large LP whose targets' rows are dense (see IPM_ROW_DENSITY), else "simplex"."""
    rows = W[targets]
    nnz = rows.nnz if sp.issparse(rows) else np.count_nonzero(rows)
    dense = nnz > IPM_ROW_DENSITY * rows.shape[0] * rows.shape[1]
    return "ipm" if dense and arrays.A.nnz >= IPM_MIN_NONZEROS else "simplex"


def _new_highs(arrays: _LpArrays, solver: str):
    import highspy

    h = new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("solver", solver)
    # Primal simplex: after an objective change the old optimal basis stays primal feasible.
    h.setOptionValue("simplex_strategy", 4)
    # Measured on cifar_small (conv-layer targets, 150 neurons): unscaled primal simplex took
    # 7 s at 2/255 and 17 s at 8/255 against 18 s and 27 s scaled, with no stalled solves.
    h.setOptionValue("simplex_scale_strategy", 0)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = arrays.A.shape[1], arrays.A.shape[0]
    lp.col_cost_ = np.zeros(lp.num_col_)
    lp.col_lower_, lp.col_upper_ = arrays.col_lower, arrays.col_upper
    lp.row_lower_, lp.row_upper_ = arrays.row_lower, arrays.row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
    lp.a_matrix_.start_ = arrays.A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = arrays.A.indices.astype(np.int32)
    lp.a_matrix_.value_ = arrays.A.data
    h.passModel(lp)
    return h


def certified_lower_bound(arrays: _LpArrays, cost: np.ndarray, row_dual: np.ndarray) -> float:
    """Lagrangian lower bound of ``min cost x`` from any row multipliers (weak duality).

    Multipliers are first clipped to the sign their row's finite side allows, so every term is
    finite and the bound is valid whatever the solver's accuracy.
    """
    y = np.where(np.isfinite(arrays.row_lower), row_dual, np.minimum(row_dual, 0.0))
    y = np.where(np.isfinite(arrays.row_upper), y, np.maximum(y, 0.0))
    row_part = np.where(y > 0, y * np.where(y > 0, arrays.row_lower, 0.0),
                        y * np.where(y < 0, arrays.row_upper, 0.0))
    reduced = cost - arrays.A.T @ y
    col_part = np.where(reduced > 0, reduced * arrays.col_lower, reduced * arrays.col_upper)
    return float(col_part.sum() + row_part.sum())


class _NeuronLp:
    """One layer's LP in a HiGHS instance; the objective is swapped per bound (hot-started simplex)."""

    def __init__(self, arrays: _LpArrays, target_cols: np.ndarray, solver: str = "simplex"):
        import highspy

        self._optimal = highspy.HighsModelStatus.kOptimal
        self.arrays = arrays
        self.target_cols = target_cols
        self.highs = _new_highs(arrays, solver)
        self._cost_col: int | None = None
        self._last_optimal_basis = None

    def minimize(self, target: int, sign: float, time_limit: float) -> float | None:
        """Certified lower bound of ``sign * z_target``, or None if the solve was not optimal."""
        col = int(self.target_cols[target])
        if self._cost_col is not None:
            self.highs.changeColCost(self._cost_col, 0.0)
        self.highs.changeColCost(col, sign)
        self._cost_col = col
        # HiGHS's time limit is on the instance's cumulative run time.
        self.highs.setOptionValue("time_limit", self.highs.getRunTime() + max(time_limit, 1e-3))
        self.highs.run()
        solution = self.highs.getSolution()
        if self.highs.getModelStatus() != self._optimal or not solution.dual_valid:
            self._restart_from_last_optimal_basis()
            return None
        self._last_optimal_basis = self.highs.getBasis()
        cost = np.zeros(self.arrays.A.shape[1])
        cost[col] = sign
        value = certified_lower_bound(self.arrays, cost, np.asarray(solution.row_dual))
        return value - LP_BOUND_PADDING * (1.0 + abs(value))

    def _restart_from_last_optimal_basis(self):
        """A stopped simplex leaves a basis from which the following solves stall one after
        another (measured: every later LP hit its limit until one restarted from scratch)."""
        if self._last_optimal_basis is not None:
            self.highs.setBasis(self._last_optimal_basis)
        else:
            self.highs.clearSolver()

    def tighten_column(self, target: int, lower: float, upper: float):
        """Tightened bounds of a target are valid constraints for the LPs that follow."""
        col = int(self.target_cols[target])
        self.arrays.col_lower[col], self.arrays.col_upper[col] = lower, upper
        self.highs.changeColBounds(col, lower, upper)


def _tighten_layer(net: Network, lo, hi, bounds: list[LayerBounds], layer: int, time_per_neuron: float,
                   deadline: float | None) -> bool:
    """LP-tighten the unstable neurons of one layer in place; False once the deadline has passed."""
    current = bounds[layer]
    targets = np.flatnonzero(current.unstable)
    if targets.size == 0:
        return True
    arrays, target_cols = _build_layer_lp(net, lo, hi, bounds, layer, targets)
    lp = _NeuronLp(arrays, target_cols, _choose_solver(net.affines[layer].W, targets, arrays))
    for t, neuron in enumerate(targets):
        for sign in (1.0, -1.0):  # +1: min z (lower bound); -1: min -z (upper bound)
            if not (current.lower[neuron] < 0 < current.upper[neuron]):
                break  # already stable: the other side no longer matters
            limit = time_per_neuron
            if deadline is not None:
                limit = min(limit, deadline - time.monotonic())
                if limit <= 0:
                    return False
            bound = lp.minimize(t, sign, limit)
            if bound is None:
                continue
            if sign > 0:
                current.lower[neuron] = max(current.lower[neuron], bound)
            else:
                current.upper[neuron] = min(current.upper[neuron], -bound)
            if current.lower[neuron] <= current.upper[neuron]:  # else rounding: leave the LP alone
                lp.tighten_column(t, current.lower[neuron], current.upper[neuron])
    return True


def lp_bounds(net: Network, lo, hi, prior: list[LayerBounds] | None = None, time_per_neuron: float = 1.0,
              deadline: float | None = None) -> list[LayerBounds]:
    """Symbolic bounds, then per-neuron LP tightening layer by layer (progressive).

    ``time_per_neuron`` limits each of a neuron's two LPs (seconds); ``deadline`` (a ``time.monotonic()`` value) stops
    tightening early — the bounds returned are sound either way.
    """
    lo, hi = box_vectors(net, lo, hi)
    bounds = symbolic_bounds(net, lo, hi, prior)
    for layer in range(1, len(bounds)):  # layer 0 is affine in the input: its IA bounds are exact
        finished = _tighten_layer(net, lo, hi, bounds, layer, time_per_neuron, deadline)
        # Later layers are re-derived from the tightened ones, so they benefit too.
        refine_symbolic(net, lo, hi, bounds, first_layer=layer + 1)
        if not finished:
            break
    return bounds
