"""HiGHS and PuLP back ends: same verdicts and optima, verdict rules, time limits, errors."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from hamverify import HamverifyError
from hamverify.milp import COUNTEREXAMPLE, ROBUST, TIMEOUT, UNKNOWN
from hamverify.milp.encode import encode_margin, encode_network
from hamverify.milp.highs import solve_highs
from hamverify.milp.pulp import solve_pulp

from . import Bounds, interval_bounds, random_box, random_net, twin_net


def _instance(rng, sizes=None):
    sizes = sizes or [int(rng.integers(2, 6)), int(rng.integers(4, 9)), int(rng.integers(4, 9)), 3]
    net = random_net(rng, sizes)
    lo, hi = random_box(rng, sizes[0])
    return net, lo, hi, interval_bounds(net, lo, hi)


def _optimum(milp) -> float:
    res = solve_highs(milp, time_limit=30, cutoff=None, stop_on_negative=False, feasibility_tol=1e-9)
    assert res.solver_status == "Optimal"
    return res.objective_value


def _shifted(milp, optimum, new_optimum):
    """The same MILP with its objective moved so that its minimum is ``new_optimum``."""
    return dataclasses.replace(milp, offset=milp.offset - optimum + new_optimum)


def _margin(net, x, label=0, target=1):
    z = net.forward(x)[0]
    return z[label] - z[target]


def test_highs_and_cbc_agree_on_verdicts_and_optima():
    rng = np.random.default_rng(11)
    verdicts = []
    for i in range(24):
        net, lo, hi, bounds = _instance(rng)
        milp = encode_margin(net, lo, hi, bounds, 0, 1)
        # Move the minimum to a known sign, half positive and half negative.
        target_value = (1 if i % 2 else -1) * rng.uniform(0.01, 1.0)
        milp = _shifted(milp, _optimum(milp), target_value)

        exact_highs = solve_highs(milp, time_limit=30, cutoff=None, stop_on_negative=False)
        exact_cbc = solve_pulp(milp, time_limit=30)
        assert exact_cbc.solver_status == "Optimal / Optimal Solution Found"
        assert exact_highs.objective_value == pytest.approx(target_value, abs=1e-5)
        assert exact_cbc.objective_value == pytest.approx(target_value, abs=1e-5)

        quick_highs = solve_highs(milp, time_limit=30)  # cutoff at tol, stop on the first negative
        assert quick_highs.status == exact_highs.status == exact_cbc.status
        assert quick_highs.status == (ROBUST if target_value > 0 else COUNTEREXAMPLE)
        verdicts.append(quick_highs.status)
        if quick_highs.status == COUNTEREXAMPLE:
            for res in (quick_highs, exact_cbc):
                assert np.all(res.x >= lo) and np.all(res.x <= hi)
                assert res.objective_value < 0
        else:
            assert quick_highs.objective_bound is not None and quick_highs.objective_bound >= 1e-6
    assert verdicts.count(ROBUST) == verdicts.count(COUNTEREXAMPLE) == 12


@pytest.mark.parametrize("solve", [solve_highs, solve_pulp], ids=["highs", "pulp"])
def test_doctored_margins(solve):
    rng = np.random.default_rng(12)
    net, lo, hi, bounds = _instance(rng, [4, 8, 8, 3])
    milp = encode_margin(net, lo, hi, bounds, 0, 1)
    assert milp.n_binaries > 0
    optimum = _optimum(milp)

    robust = solve(_shifted(milp, optimum, 0.25), time_limit=30)
    assert robust.status == ROBUST
    falsified = solve(_shifted(milp, optimum, -0.25), time_limit=30)
    assert falsified.status == COUNTEREXAMPLE
    assert np.all(falsified.x >= lo) and np.all(falsified.x <= hi)
    # The point is a real counterexample of the doctored margin (shifted by the same constant).
    assert _margin(net, falsified.x) - optimum - 0.25 < 0


@pytest.mark.parametrize("solve", [solve_highs, solve_pulp], ids=["highs", "pulp"])
def test_margin_within_tol_is_unknown_not_robust(solve):
    rng = np.random.default_rng(13)
    net, lo, hi, bounds = _instance(rng, [4, 8, 8, 3])
    milp = encode_margin(net, lo, hi, bounds, 0, 1)
    optimum = _optimum(milp)
    for tiny in (1e-7, 5e-7):
        res = solve(_shifted(milp, optimum, tiny), time_limit=30, tol=1e-6)
        assert res.status == UNKNOWN, (tiny, res)


def test_highs_zero_objective_is_not_a_proof():
    rng = np.random.default_rng(14)
    net, lo, hi, bounds = _instance(rng, [4, 8, 8, 3])
    milp, _ = encode_network(net, lo, hi, bounds)
    assert milp.n_binaries > 0
    res = solve_highs(milp, time_limit=10)  # objective identically 0
    assert res.status == UNKNOWN and res.objective_value == 0.0


def test_highs_lp_without_binaries():
    """An all-stable encoding is an LP: solved plainly, verdict from its optimum."""
    rng = np.random.default_rng(15)
    net, lo, hi, bounds = _instance(rng, [3, 4, 4, 2])
    lo = hi = (lo + hi) / 2  # a point box: every ReLU is stable
    bounds = interval_bounds(net, lo, hi)
    milp = encode_margin(net, lo, hi, bounds, 0, 1)
    assert milp.n_binaries == 0
    value = _margin(net, lo)
    res = solve_highs(milp, time_limit=10)
    assert res.objective_value == pytest.approx(value, abs=1e-9)
    assert res.status == (ROBUST if value > 1e-6 else COUNTEREXAMPLE)
    flipped = solve_highs(_shifted(milp, value, -abs(value)), time_limit=10)
    assert flipped.status == COUNTEREXAMPLE


def test_highs_seed_point_is_used_as_incumbent():
    rng = np.random.default_rng(16)
    net, lo, hi, bounds = _instance(rng, [4, 8, 8, 3])
    milp = encode_margin(net, lo, hi, bounds, 0, 1)
    x = lo + rng.random(len(lo)) * (hi - lo)
    # Shift so that the seed point itself has margin -0.5: a counterexample from the start.
    seeded = dataclasses.replace(milp, offset=milp.offset - _margin(net, x) - 0.5)
    res = solve_highs(seeded, time_limit=10, seed_point=x, stop_on_negative=True)
    assert res.status == COUNTEREXAMPLE
    assert res.objective_value <= -0.5 + 1e-9


def _hard_instance():
    """~80 unstable ReLUs whose margin is 0.05 everywhere, but only provably so by branching."""
    net = twin_net(np.random.default_rng(0), d=8, n1=20, n2=20)
    lo, hi = np.zeros(8), np.ones(8)
    bounds = interval_bounds(net, lo, hi)
    milp = encode_margin(net, lo, hi, bounds, 0, 1)
    assert milp.n_binaries >= 60
    return net, milp


@pytest.mark.parametrize("solve", [solve_highs, solve_pulp], ids=["highs", "pulp"])
def test_time_limit_gives_timeout(solve):
    net, milp = _hard_instance()
    start = time.perf_counter()
    res = solve(milp, time_limit=1.0)
    elapsed = time.perf_counter() - start
    assert res.status == TIMEOUT, res
    assert elapsed < 1.0 + 1.5, elapsed  # time limit plus model build/start-up overhead


def test_timeout_bound_is_valid():
    """Whatever bound a timed-out solve reports must not exceed the true minimum (0.05)."""
    _, milp = _hard_instance()
    res = solve_highs(milp, time_limit=0.5)
    assert res.status == TIMEOUT
    assert res.objective_bound is None or res.objective_bound <= 0.05


def test_unknown_pulp_solver_is_a_user_error():
    rng = np.random.default_rng(17)
    net, lo, hi, bounds = _instance(rng, [2, 3, 3, 2])
    milp = encode_margin(net, lo, hi, bounds, 0, 1)
    with pytest.raises(HamverifyError, match="available"):
        solve_pulp(milp, time_limit=1, solver_name="NO_SUCH_SOLVER")
    with pytest.raises(HamverifyError, match="PULP_CBC_CMD"):
        solve_pulp(milp, time_limit=1, solver_name="GUROBI_CMD")  # known to PuLP, not installed here


def test_pulp_solver_by_name():
    rng = np.random.default_rng(18)
    net, lo, hi, bounds = _instance(rng, [3, 6, 6, 3])
    milp = encode_margin(net, lo, hi, bounds, 0, 2)
    optimum = _optimum(milp)
    res = solve_pulp(milp, time_limit=30, solver_name="HiGHS")
    assert res.objective_value == pytest.approx(optimum, abs=1e-5)


def test_highs_recovers_from_a_scheduler_started_with_other_threads():
    """Another component (e.g. bounds LPs) may have started HiGHS's scheduler with threads=2;
    HiGHS then refuses threads=1 until the scheduler is reset."""
    import highspy

    other = highspy.Highs()
    other.setOptionValue("output_flag", False)
    other.setOptionValue("threads", 2)
    other.passModel(1, 0, 0, 1, 1, 0.0, np.array([1.0]), np.array([0.0]), np.array([1.0]),
                    np.zeros(0), np.zeros(0), np.array([0, 0], dtype=np.int32), np.zeros(0, dtype=np.int32),
                    np.zeros(0), np.array([1], dtype=np.int32))
    other.run()
    rng = np.random.default_rng(19)
    net, lo, hi, bounds = _instance(rng, [3, 6, 6, 3])
    milp = encode_margin(net, lo, hi, bounds, 0, 1)
    res = solve_highs(milp, time_limit=10)
    assert res.status in (ROBUST, COUNTEREXAMPLE)


def test_highs_does_not_turn_invalid_bounds_into_a_proof():
    """Bounds that exclude the network's own behaviour make the MILP infeasible; that must not
    read as "infeasible under the cutoff, hence robust"."""
    rng = np.random.default_rng(20)
    while True:
        net, lo, hi, bounds = _instance(rng, [3, 6, 6, 3])
        active = np.flatnonzero(bounds[0].lower > 0.1)
        if len(active):
            break
    lower, upper = bounds[0].lower.copy(), bounds[0].upper.copy()
    lower[active[0]], upper[active[0]] = -1e-3, 1e-3  # claims the neuron stays near 0: false
    bad = [Bounds(lower, upper)] + bounds[1:]
    milp = encode_margin(net, lo, hi, bad, 0, 1)
    res = solve_highs(milp, time_limit=10)
    assert res.solver_status.startswith("Infeasible")
    assert res.status == UNKNOWN


def test_highs_keeps_its_time_limit_on_a_large_trained_network():
    """A 10 s limit on a plain-trained CIFAR-10 net's MILP at eps 1/255 (~1M nonzeros): with HiGHS's
    feasibility-jump heuristic on, the solve ended after 46 s (the heuristic ignores the clock)."""
    import pathlib

    from hamverify.bounds import symbolic_bounds
    from hamverify.data import load_dataset
    from hamverify.milp.encode import margin_objective
    from hamverify.models import load_checkpoint
    from hamverify.network import from_torch
    from tests.conftest import shared_data_root

    path = pathlib.Path(__file__).resolve().parents[2] / "models" / "cifar10_small_none_8_255.pt"
    try:
        x, y = load_dataset("cifar10", "test", shared_data_root())
    except HamverifyError as exc:
        pytest.skip(f"CIFAR-10 test data not found: {exc}")
    model, _ = load_checkpoint(path)
    net = from_torch(model.eval(), (3, 32, 32))
    img = np.transpose(x[3].astype(np.float64) / 255, (2, 0, 1)).ravel()
    lo, hi = np.clip(img - 1 / 255, 0, 1), np.clip(img + 1 / 255, 0, 1)
    milp, logits = encode_network(net, lo, hi, symbolic_bounds(net, lo, hi))
    start = time.perf_counter()
    res = solve_highs(margin_objective(milp, logits, int(y[3]), 7), time_limit=10.0)
    elapsed = time.perf_counter() - start
    assert res.status == TIMEOUT, res
    assert elapsed < 10.0 + 4.0, elapsed
