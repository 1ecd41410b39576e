"""Exact LP / MILP of a branch-and-bound subdomain (``hamverify.bab``).

The subdomain MILP is exact: every neuron whose sign the subdomain fixes (a split, or one that is
stable under the subdomain's bounds but not under the box's) is encoded as an unstable neuron
whose binary is fixed to its phase (``delta = 1`` forces ``a = z >= 0``, ``delta = 0`` forces
``a = 0 >= z``; such a column is made continuous with equal bounds), so the MILP's feasible inputs
are exactly the subdomain's; every other unstable neuron gets the subdomain's (tighter) big-M, and
the stably-signed ones substitute as in ``milp/encode.py`` (exact: their sign holds on the whole box).
With no free binary left the MILP is an LP, and that LP is exact too.

Verdicts: an LP bound is never the solver's objective but the Lagrangian bound its row duals
certify (``bounds.lp.certified_lower_bound``, recomputed in float64, padded); an LP is called
empty only from a Farkas ray whose certified bound of ``min 0`` is positive.  A MILP follows the
rules of ``milp/highs.py`` (robust only from the final status under the cutoff ``tol``), without
``solve_highs``'s one-point check that the bounds admit the network's own assignment at the box
centre: the centre need not lie in a subdomain, and would fail that check for a correct encoding.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..bounds.interval import LayerBounds
from ..bounds.lp import certified_lower_bound
from ..milp.encode import MilpArrays, encode_network
from ..network import Network

# Dual-certified LP bounds are padded outward by this much (relative), as in bounds/lp.py.
LP_PADDING = 1e-7


def exact_encoding(net: Network, splits, lo, hi, bounds: list[LayerBounds], box_bounds: list[LayerBounds],
                   input_mode: bool = False):
    """(MilpArrays, LogitExpression) of the subdomain ``splits`` (per ReLU layer None or an int8 array:
    +1 active, -1 inactive, 0 free) of the box ``[lo, hi]``, with ``bounds`` valid on the subdomain
    (module doc).  ``box_bounds``: bounds valid on the whole box ``[lo, hi]`` (``input_mode``: the
    subdomain is a sub-box without ReLU splits and ``bounds`` hold on all of it: nothing is fixed)."""
    enc, fixed = [], []
    for i, (b, ref) in enumerate(zip(bounds, box_bounds)):
        split = splits[i] if splits[i] is not None else np.zeros(b.lower.size, dtype=np.int8)
        box_stable = (ref.lower >= 0) | (ref.upper <= 0)
        if input_mode:
            box_stable = np.ones_like(box_stable)
        act = (split == 1) | (~box_stable & (split == 0) & (b.lower >= 0))
        ina = (split == -1) | (~box_stable & (split == 0) & (b.upper <= 0) & ~act)
        fix = act | ina
        lower, upper = b.lower.copy(), b.upper.copy()
        lower[fix] = np.minimum(lower[fix], -1.0)  # any negative value: the fixed binary decides
        upper[fix] = np.maximum(upper[fix], 1e-9)  # the output column's range [0, u] stays valid
        enc.append(LayerBounds(lower, upper))
        phase = np.full(b.lower.size, -1, dtype=np.int8)
        phase[act], phase[ina] = 1, 0
        fixed.append(phase)
    milp, logits = encode_network(net, lo, hi, enc)
    col_lower, col_upper = milp.col_lower.copy(), milp.col_upper.copy()
    integrality = milp.integrality.copy()
    for cols, phase in zip(milp.relu_columns, fixed):
        p = phase[cols.unstable]
        sel = p >= 0
        bc = cols.binary_cols[sel]
        col_lower[bc] = col_upper[bc] = p[sel].astype(np.float64)
        integrality[bc] = 0  # a continuous column with equal bounds: fixed, and not a binary
    milp = dataclasses.replace(milp, col_lower=col_lower, col_upper=col_upper, integrality=integrality,
                               n_binaries=int(integrality.sum()))
    return milp, logits


def solve_lp(milp: MilpArrays, time_limit: float):
    """The LP relaxation of ``milp``: (dual-certified lower bound -- ``+inf`` for a certified-empty
    LP, ``-inf`` when none --, primal input point or None, primal objective or None)."""
    import highspy

    from ..milp.highs import lp_relaxation, run_lp

    lp = lp_relaxation(milp)
    h = run_lp(lp, time_limit)
    if h.getModelStatus() == highspy.HighsModelStatus.kInfeasible:
        # Not a proof by itself (a solver claim): only a Farkas ray whose Lagrangian bound of
        # "min 0" is positive, recomputed here in float64, proves that the subdomain is empty.
        _, has_ray, ray = h.getDualRay()
        if has_ray:
            y = np.asarray(ray, dtype=np.float64)
            scale = float(np.abs(y).max(initial=0.0))
            if scale > 0:
                zero = np.zeros(lp.n_cols)
                if max(certified_lower_bound(lp, zero, y / scale), certified_lower_bound(lp, zero, -y / scale)) > 1e-7:
                    return math.inf, None, None
        return -math.inf, None, None
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return -math.inf, None, None
    sol = h.getSolution()
    values = np.asarray(sol.col_value, dtype=np.float64)
    point, objective = lp.input_point(values), float(lp.objective(values))
    if not sol.dual_valid:
        return -math.inf, point, objective
    bound = certified_lower_bound(lp, lp.c, np.asarray(sol.row_dual, dtype=np.float64)) + lp.offset
    return bound - LP_PADDING * (1.0 + abs(bound)), point, objective


def solve_milp(milp: MilpArrays, time_limit: float, tol: float):
    """``solve_highs``'s verdict rules (cutoff at ``tol``, stop on the first negative incumbent),
    without its box-centre check (module doc).  Returns (verdict, proven bound or None, input point
    or None, objective or None, the solver's status text)."""
    import highspy

    from ..milp.highs import _options, _pass_arrays, _primal, _proven_bound, _run, _verdict
    from ..milp.quiet import new_highs

    is_mip = milp.n_binaries > 0
    h = new_highs()
    _options(h, max(time_limit, 1e-3), 0, tol if is_mip else None, is_mip, is_mip)
    _pass_arrays(h, milp)
    _run(h)
    status = h.getModelStatus()
    objective, x = _primal(h, milp)
    dual = float(h.getInfo().mip_dual_bound) if is_mip else math.nan
    proven = _proven_bound(status, dual, objective, tol if is_mip else None, is_mip)
    verdict = _verdict(status, objective, proven, tol, is_mip)
    return verdict, proven, x, objective, h.modelStatusToString(status)
