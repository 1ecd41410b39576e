"""Ideal-formulation cuts: they never remove a reachable point, they tighten the LP relaxation,
and the strengthened MILP keeps the exact optimum (against brute force)."""
from __future__ import annotations

import numpy as np
import pytest

from hamverify.milp.cuts import separate, strengthen, with_rows
from hamverify.milp.encode import complete_assignment, encode_network, margin_objective
from hamverify.milp.highs import solve_highs, solve_lp_relaxation

from . import brute_force_min_margin, interval_bounds, random_box, random_net, widen


def _instance(seed, sizes=(4, 8, 8, 3), widened=False):
    rng = np.random.default_rng(seed)
    net = random_net(rng, list(sizes))
    lo, hi = random_box(rng, sizes[0])
    bounds = interval_bounds(net, lo, hi)
    if widened:
        bounds = widen(rng, bounds)
    return rng, net, lo, hi, bounds


def _cut_milp(net, lo, hi, bounds, label=0, target=1, rounds=6):
    milp, logits = encode_network(net, lo, hi, bounds)
    milp = margin_objective(milp, logits, label, target)
    return milp, strengthen(milp, rounds=rounds)


@pytest.mark.parametrize("seed", range(12))
def test_cuts_keep_every_reachable_point(seed):
    rng, net, lo, hi, bounds = _instance(seed, widened=seed % 2 == 1)
    milp, (cut, added) = _cut_milp(net, lo, hi, bounds)
    extra = cut.A[milp.n_rows:]
    for x in rng.uniform(lo, hi, size=(2000, len(lo))):
        v = complete_assignment(cut, x)
        assert np.all(extra @ v <= cut.row_upper[milp.n_rows:] + 1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_cuts_tighten_the_relaxation_and_keep_the_optimum(seed):
    _, net, lo, hi, bounds = _instance(seed, sizes=(3, 6, 6, 3), widened=seed % 3 == 0)
    milp, (cut, added) = _cut_milp(net, lo, hi, bounds)
    plain_lp = milp.objective(solve_lp_relaxation(milp))
    cut_lp = cut.objective(solve_lp_relaxation(cut))
    exact = brute_force_min_margin(net, lo, hi, bounds, 0, 1)
    assert plain_lp - 1e-7 <= cut_lp <= exact + 1e-6
    optimum = solve_highs(cut, time_limit=30, cutoff=None, stop_on_negative=False, feasibility_tol=1e-9)
    assert optimum.solver_status == "Optimal"
    assert optimum.objective_value == pytest.approx(exact, abs=1e-5)


def test_first_layer_cuts_raise_the_bound_on_a_one_layer_net():
    # One hidden layer over a box: the ideal cuts describe each neuron's convex hull, so the
    # relaxation must move strictly above the big-M one on some of these instances.
    gains = []
    for seed in range(10):
        _, net, lo, hi, bounds = _instance(100 + seed, sizes=(6, 16, 3))
        milp, (cut, added) = _cut_milp(net, lo, hi, bounds)
        gains.append(cut.objective(solve_lp_relaxation(cut)) - milp.objective(solve_lp_relaxation(milp)))
    assert min(gains) > -1e-7 and max(gains) > 1e-3


def test_separation_finds_nothing_at_a_reachable_point():
    rng, net, lo, hi, bounds = _instance(7)
    milp, _ = encode_network(net, lo, hi, bounds)
    for x in rng.uniform(lo, hi, size=(50, len(lo))):
        rows, upper = separate(milp, complete_assignment(milp, x), min_violation=1e-9)
        assert rows.shape[0] == 0


def test_with_no_rows_is_the_same_milp():
    _, net, lo, hi, bounds = _instance(3)
    milp, _ = encode_network(net, lo, hi, bounds)
    rows, upper = separate(milp, complete_assignment(milp, (lo + hi) / 2))
    assert with_rows(milp, rows, upper) is milp
