"""Cuts from the ideal formulation of a ReLU over a box (Anderson et al. 2020), separated at the
LP relaxation's point and added to the MILP before branching.

For an unstable neuron ``a = relu(w @ y + b)`` whose inputs lie in a box, ``y_i`` in
``[lower_i, upper_i]``, write ``lo_i`` / ``hi_i`` for the box end that minimizes / maximizes
``w_i y_i``.  For every subset ``I`` of the inputs

    a <= sum_{i in I} w_i (y_i - lo_i (1 - delta)) + (b + sum_{i not in I} w_i hi_i) delta

holds at every point of the network (``delta = [w @ y + b > 0]``): with ``delta = 0`` the right side
is a sum of non-negative terms, with ``delta = 1`` it is at least ``w @ y + b = a``.  The big-M rows
of Tjeng et al. are the cases ``I = everything`` (with interval bounds) and ``I = nothing``; the
family describes the convex hull of the neuron's graph over the box, which the big-M rows do not.
The most violated subset at a point takes ``i`` into ``I`` exactly when
``w_i (y_i - lo_i (1 - delta)) < w_i hi_i delta``, so separation is one pass over the weights.

Soundness: a cut never removes a point the network can reach from the input box, so every
``robust`` verdict of the strengthened MILP holds for the network, and counterexamples are
validated in float64 by the caller as before.  The boxes are the encoder's own pre-activation
bounds (``LayerInputs``), which must be valid, as for the encoding itself.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.sparse as sp

from .encode import MilpArrays, _pad_cols as _pad

# A cut's right side is loosened by this much (relative): the float rounding of its coefficients
# must never cut off a reachable point.
CUT_SLACK = 1e-9


def separate(milp: MilpArrays, values: np.ndarray, min_violation: float = 1e-4):
    """The most violated ideal cut of every unstable neuron whose cut ``values`` violates by more
    than ``min_violation``, as ``(rows, upper)``: ``rows @ v <= upper``."""
    n = milp.n_cols
    blocks, uppers = [], []
    for inputs, cols in zip(milp.layer_inputs, milp.relu_columns):
        if len(cols.unstable) == 0:
            continue
        Wu = inputs.W[cols.unstable].tocoo()
        j, i, w = Wu.row, Wu.col, Wu.data
        y = np.asarray(_pad(inputs.H, n) @ values).ravel() + inputs.h
        lo = np.where(w >= 0, inputs.lower[i], inputs.upper[i])
        hi = np.where(w >= 0, inputs.upper[i], inputs.lower[i])
        a, delta = values[cols.relu_cols], np.clip(values[cols.binary_cols], 0.0, 1.0)
        inside = w * (y[i] - lo * (1.0 - delta[j]))
        outside = w * hi * delta[j]
        take = inside < outside
        m = len(cols.unstable)
        bias = inputs.b[cols.unstable]
        rhs = np.bincount(j, np.minimum(inside, outside), minlength=m) + bias * delta
        violated = np.flatnonzero(a - rhs > min_violation * (1.0 + np.abs(a)))
        if len(violated) == 0:
            continue
        keep = take & np.isin(j, violated)
        row_of = np.full(m, -1)
        row_of[violated] = np.arange(len(violated))
        # sum_{i in I} w_i y_i, with y = H v + h
        chosen = sp.csr_matrix((w[keep], (row_of[j[keep]], i[keep])), shape=(len(violated), inputs.W.shape[1]))
        delta_coef = (np.bincount(j[keep], w[keep] * lo[keep], minlength=m)
                      + np.bincount(j[~take], w[~take] * hi[~take], minlength=m) + bias)[violated]
        upper = (np.bincount(j[keep], w[keep] * (inputs.h[i[keep]] - lo[keep]), minlength=m))[violated]
        k = len(violated)
        a_part = sp.csr_matrix((np.ones(k), (np.arange(k), cols.relu_cols[violated])), shape=(k, n))
        delta_part = sp.csr_matrix((delta_coef, (np.arange(k), cols.binary_cols[violated])), shape=(k, n))
        rows = a_part - _pad(chosen @ _pad(inputs.H, n), n) - delta_part
        blocks.append(sp.csr_matrix(rows))
        uppers.append(upper + CUT_SLACK * (1.0 + np.abs(upper) + np.abs(delta_coef)))
    if not blocks:
        return sp.csr_matrix((0, n)), np.zeros(0)
    return sp.vstack(blocks, format="csr"), np.concatenate(uppers)


def with_rows(milp: MilpArrays, rows: sp.csr_matrix, upper: np.ndarray) -> MilpArrays:
    """The same MILP with ``rows @ v <= upper`` appended."""
    if rows.shape[0] == 0:
        return milp
    return dataclasses.replace(
        milp, A=sp.vstack([milp.A, rows], format="csr"),
        row_lower=np.concatenate([milp.row_lower, np.full(rows.shape[0], -np.inf)]),
        row_upper=np.concatenate([milp.row_upper, upper]))


def strengthen(milp: MilpArrays, rounds: int = 4, deadline: float | None = None,
               min_violation: float = 1e-4) -> tuple[MilpArrays, int]:
    """Add ideal cuts over ``rounds`` rounds of (LP relaxation, separation) for ``milp``'s
    objective; stops early when no cut is violated or at ``deadline`` (``time.monotonic``).
    Returns the strengthened MILP and the number of cuts added."""
    from .highs import solve_lp_relaxation
    added = 0
    for _ in range(rounds):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        values = solve_lp_relaxation(milp, left)
        if values is None:
            break
        rows, upper = separate(milp, values, min_violation)
        if rows.shape[0] == 0:
            break
        milp = with_rows(milp, rows, upper)
        added += rows.shape[0]
    return milp, added
