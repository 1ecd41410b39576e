"""Optimized intermediate bounds (hamverify.bounds.optimized): never looser than the symbolic ones,
tighter where there is something to optimize, sound on sampled points, and the deadline is honoured."""
from __future__ import annotations

import time

import numpy as np
import pytest

from hamverify.bounds import alpha_bounds, compute_bounds, symbolic_bounds
from hamverify.bounds.optimized import ROW_CHUNK, prefix_network
from hamverify.network import Network
from test_bounds_alpha import NETWORKS, TOL, random_box, random_mlp, sample_box


def assert_inside(inner, outer):
    """Every layer of ``inner`` within that of ``outer``."""
    for a, b in zip(inner, outer):
        assert np.all(a.lower >= b.lower - TOL) and np.all(a.upper <= b.upper + TOL)


@pytest.mark.parametrize("net_name", list(NETWORKS))
def test_alpha_bounds_within_symbolic_and_contain_sampled_points(net_name):
    net = NETWORKS[net_name]()
    for seed, radius in [(20, 0.05), (21, 0.2)]:
        lo, hi = random_box(net, seed, radius)
        sym = symbolic_bounds(net, lo, hi)
        opt = alpha_bounds(net, lo, hi, prior=sym, steps=15)
        assert_inside(opt, sym)
        pre = net.preactivations(sample_box(lo, hi, seed))
        for z, b in zip(pre, opt):
            assert np.all(z >= b.lower[None] - TOL) and np.all(z <= b.upper[None] + TOL)
        assert np.array_equal(opt[0].lower, sym[0].lower)  # layer 0 is affine in x: left as it is


def test_alpha_bounds_are_tighter_where_there_is_slack():
    # a deep random MLP at a wide radius: many unstable ReLUs, so CROWN's fixed slopes leave slack
    net = random_mlp(3, [6, 32, 32, 32, 3])
    lo, hi = random_box(net, 5, 0.3)
    sym = symbolic_bounds(net, lo, hi)
    opt = alpha_bounds(net, lo, hi, prior=sym, steps=20)
    width = lambda bs: sum(float(np.sum(b.upper - b.lower)) for b in bs[1:])  # noqa: E731
    assert width(opt) < 0.97 * width(sym)
    assert sum(int(b.unstable.sum()) for b in opt) <= sum(int(b.unstable.sum()) for b in sym)


def test_alpha_bounds_against_brute_force_extremes_on_a_tiny_net():
    # 2 inputs: a 401 x 401 grid gets within a hair of each pre-activation's true extremes
    net = random_mlp(7, [2, 8, 8, 2])
    lo, hi = np.array([0.2, 0.3]), np.array([0.7, 0.9])
    g = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 401), np.linspace(lo[1], hi[1], 401)), -1).reshape(-1, 2)
    pre = net.preactivations(g)
    opt = alpha_bounds(net, lo, hi, steps=30)
    for z, b in zip(pre, opt):
        assert np.all(z.min(axis=0) >= b.lower - TOL) and np.all(z.max(axis=0) <= b.upper + TOL)


def test_row_chunks_give_the_same_bounds_as_one_chunk(monkeypatch):
    net = random_mlp(4, [5, 40, 400, 3])  # layer 1 has more unstable neurons than one chunk holds
    lo, hi = random_box(net, 8, 0.3)
    sym = symbolic_bounds(net, lo, hi)
    assert 2 * int(sym[1].unstable.sum()) > ROW_CHUNK
    chunked = alpha_bounds(net, lo, hi, prior=sym, steps=10)
    import hamverify.bounds.optimized as opt_mod
    monkeypatch.setattr(opt_mod, "ROW_CHUNK", 100_000)
    whole = alpha_bounds(net, lo, hi, prior=sym, steps=10)
    for a, b in zip(chunked, whole):  # rows are optimized independently: chunking changes nothing
        np.testing.assert_allclose(a.lower, b.lower, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a.upper, b.upper, rtol=1e-6, atol=1e-6)


def test_deadline_keeps_the_prior_bounds():
    net = NETWORKS["deep"]()
    lo, hi = random_box(net, 9, 0.2)
    sym = symbolic_bounds(net, lo, hi)
    late = alpha_bounds(net, lo, hi, prior=sym, steps=50, deadline=time.monotonic() - 1.0)
    for a, b in zip(late, sym):
        assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
    assert late[1] is not sym[1]  # a copy: the prior is never changed in place


def test_deadline_stops_a_long_optimization():
    net = random_mlp(11, [20, 300, 300, 300, 10])
    lo, hi = random_box(net, 12, 0.3)
    sym = symbolic_bounds(net, lo, hi)
    t = time.monotonic()
    out = alpha_bounds(net, lo, hi, prior=sym, steps=100_000, deadline=t + 0.5)
    assert time.monotonic() - t < 0.5 + 1.0
    assert_inside(out, sym)


def test_compute_bounds_alpha_and_the_prefix_cache():
    net = NETWORKS["conv"]()
    lo, hi = random_box(net, 13, 0.1)
    direct = alpha_bounds(net, lo, hi, steps=20)
    via = compute_bounds(net, lo, hi, "alpha", steps=20)
    for a, b in zip(direct, via):
        assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
    cut = prefix_network(net, 1)
    assert isinstance(cut, Network) and cut is prefix_network(net, 1)
    x = sample_box(lo, hi, 1, n=16)
    np.testing.assert_allclose(cut.forward(x), net.preactivations(x)[1], rtol=1e-12, atol=1e-12)


def test_a_rounding_crossing_never_leaves_an_empty_interval(monkeypatch):
    """A float64 bound that crosses the prior's by rounding keeps the interval ordered (an empty one
    would make the MILP column infeasible)."""
    import hamverify.bounds.rows as rows

    net = NETWORKS["mlp"]()
    lo, hi = random_box(net, 14, 0.2)
    sym = symbolic_bounds(net, lo, hi)
    real = rows.backsub64

    def crossing(cut, lo_, hi_, layers, C, alpha, beta, box_rows=None):
        low, *rest = real(cut, lo_, hi_, layers, C, alpha, beta, box_rows)
        m = C.shape[0] // 2
        ks = np.argmax(np.abs(C[:m]), axis=1)
        prior = sym[len(layers)]
        low[:m] = prior.upper[ks] + 1e-12  # "lower" just above the prior's upper bound
        return (low, *rest)

    monkeypatch.setattr(rows, "backsub64", crossing)
    out = alpha_bounds(net, lo, hi, prior=sym, steps=2)
    for b in out:
        assert np.all(b.lower <= b.upper)
