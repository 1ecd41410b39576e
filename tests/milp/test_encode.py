"""The Tjeng et al. encoding against brute force on tiny networks (docs/METHOD.md §5.2–5.3)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from hamverify import HamverifyError
from hamverify.milp.encode import (complete_assignment, encode_margin, encode_min_margin, encode_network,
                                   margin_objective)
from hamverify.milp.highs import solve_highs
from hamverify.network import Affine, Network

from . import brute_force_min_margin, interval_bounds, random_box, random_net, widen

MAX_UNSTABLE = 8  # keeps the brute force at <= 256 LPs per instance


def _instance(rng, n_classes=3, loose=False):
    """A random tiny net, box and valid bounds with a brute-forceable number of unstable ReLUs."""
    while True:
        d = int(rng.integers(2, 5))
        net = random_net(rng, [d, int(rng.integers(3, 6)), int(rng.integers(3, 6)), n_classes])
        lo, hi = random_box(rng, d)
        bounds = interval_bounds(net, lo, hi)
        if loose:
            bounds = widen(rng, bounds)
        if sum(int(((b.lower < 0) & (b.upper > 0)).sum()) for b in bounds) <= MAX_UNSTABLE:
            return net, lo, hi, bounds


def _optimum(milp):
    """Solve to optimality: no cutoff, no early stop, tight feasibility (HiGHS's default 1e-6 row
    slack moves the optimum by ~1e-6 on these nets)."""
    res = solve_highs(milp, time_limit=30, cutoff=None, stop_on_negative=False, feasibility_tol=1e-9)
    assert res.solver_status == "Optimal", res
    return res


def _margin(net, x, label, target):
    z = net.forward(x)[0]
    return z[label] - z[target]


@pytest.mark.parametrize("chunk", range(4))
def test_milp_optimum_equals_brute_force(chunk):
    """>= 200 instances in all: exact optimum, and the optimal input reproduces it in forward()."""
    rng = np.random.default_rng(1000 + chunk)
    for i in range(55):
        net, lo, hi, bounds = _instance(rng, loose=(i % 3 == 2))
        label, target = rng.choice(3, size=2, replace=False)
        mode = "column" if i % 2 else "substitute"
        milp = encode_margin(net, lo, hi, bounds, int(label), int(target), stable_active=mode)
        exact = brute_force_min_margin(net, lo, hi, bounds, label, target)
        res = _optimum(milp)
        assert res.objective_value == pytest.approx(exact, abs=1e-6), (chunk, i, mode)
        assert np.all(res.x >= lo) and np.all(res.x <= hi)
        assert _margin(net, res.x, label, target) == pytest.approx(res.objective_value, abs=1e-6)


def test_min_margin_variant_equals_min_over_targets():
    rng = np.random.default_rng(7)
    for i in range(30):
        net, lo, hi, bounds = _instance(rng, n_classes=4)
        label = int(rng.integers(4))
        targets = [j for j in range(4) if j != label]
        exact = min(brute_force_min_margin(net, lo, hi, bounds, label, j) for j in targets)
        res = _optimum(encode_min_margin(net, lo, hi, bounds, label))
        assert res.objective_value == pytest.approx(exact, abs=1e-6), i
        z = net.forward(res.x)[0]
        assert z[label] - z[targets].max() == pytest.approx(res.objective_value, abs=1e-6)


def test_stable_neurons_create_no_binaries():
    rng = np.random.default_rng(3)
    for _ in range(20):
        net, lo, hi, bounds = _instance(rng)
        for mode in ("substitute", "column"):
            milp, _ = encode_network(net, lo, hi, bounds, stable_active=mode)
            unstable = [int(((b.lower < 0) & (b.upper > 0)).sum()) for b in bounds]
            assert milp.unstable_per_layer == unstable
            assert milp.n_binaries == sum(unstable) == int(milp.integrality.sum())
            binaries = np.flatnonzero(milp.integrality)
            assert np.all(milp.col_lower[binaries] == 0) and np.all(milp.col_upper[binaries] == 1)


def test_all_stable_network_has_no_binaries_and_is_exact():
    rng = np.random.default_rng(4)
    W1 = np.abs(rng.standard_normal((4, 3)))
    W2 = -np.abs(rng.standard_normal((3, 4)))
    net = Network((Affine(W1, np.ones(4)), Affine(sp.csr_matrix(W2), -np.ones(3)),
                   Affine(rng.standard_normal((2, 3)), np.zeros(2))), (3,))
    lo, hi = np.zeros(3), np.ones(3)
    bounds = interval_bounds(net, lo, hi)
    for mode in ("substitute", "column"):
        milp = encode_margin(net, lo, hi, bounds, 0, 1, stable_active=mode)
        assert milp.n_binaries == 0 and milp.unstable_per_layer == [0, 0]
        res = _optimum(milp)
        assert res.objective_value == pytest.approx(brute_force_min_margin(net, lo, hi, bounds, 0, 1), abs=1e-9)


def test_completed_assignment_is_feasible_and_has_the_forward_objective():
    rng = np.random.default_rng(5)
    for i in range(30):
        net, lo, hi, bounds = _instance(rng, loose=bool(i % 2))
        mode = "column" if i % 3 else "substitute"
        milp = encode_min_margin(net, lo, hi, bounds, 0) if i % 4 == 0 else \
            encode_margin(net, lo, hi, bounds, 0, 2, stable_active=mode)
        x = lo + rng.random(len(lo)) * (hi - lo)
        v = complete_assignment(milp, x)
        activity = milp.A @ v
        assert np.all(activity >= milp.row_lower - 1e-9) and np.all(activity <= milp.row_upper + 1e-9)
        assert np.all(v >= milp.col_lower - 1e-12) and np.all(v <= milp.col_upper + 1e-12)
        z = net.forward(x)[0]
        expected = z[0] - (z[[1, 2]].max() if milp.max_columns is not None else z[2])
        assert milp.objective(v) == pytest.approx(expected, abs=1e-9)


def test_logit_expression_matches_forward():
    rng = np.random.default_rng(6)
    net, lo, hi, bounds = _instance(rng)
    milp, logits = encode_network(net, lo, hi, bounds)
    x = (lo + hi) / 2
    np.testing.assert_allclose(logits.evaluate(complete_assignment(milp, x)), net.forward(x)[0], atol=1e-9)
    assert margin_objective(milp, logits, 1, 0).A is milp.A  # per-target objectives share the constraints


def test_arrays_are_consistent():
    rng = np.random.default_rng(8)
    net, lo, hi, bounds = _instance(rng)
    milp = encode_margin(net, lo, hi, bounds, 0, 1)
    assert sp.isspmatrix_csr(milp.A)
    assert milp.A.shape == (len(milp.row_lower), len(milp.c)) == (milp.n_rows, milp.n_cols)
    assert len(milp.col_lower) == len(milp.col_upper) == len(milp.integrality) == milp.n_cols
    assert milp.integrality.dtype == np.uint8
    np.testing.assert_array_equal(milp.input_cols, np.arange(net.input_size))


def test_bad_arguments_raise():
    rng = np.random.default_rng(9)
    net, lo, hi, bounds = _instance(rng)
    with pytest.raises(HamverifyError):
        encode_margin(net, lo[:-1], hi[:-1], bounds, 0, 1)
    with pytest.raises(HamverifyError):
        encode_margin(net, lo, hi, bounds[:-1], 0, 1)
    with pytest.raises(HamverifyError):
        encode_margin(net, lo, hi, bounds, 0, 0)
    with pytest.raises(HamverifyError):
        encode_margin(net, lo, hi, bounds, 0, 1, stable_active="nope")
