"""Soundness and tightness of the bounds methods (hamverify.bounds) on small random networks."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from hamverify import HamverifyError
from hamverify.bounds import (LayerBounds, compute_bounds, interval_bounds, lp_bounds, margin_lower_bounds,
                              output_bounds, symbolic_bounds)
from hamverify.bounds import symbolic as symbolic_module
from hamverify.bounds.lp import _LpArrays, certified_lower_bound
from hamverify.models import Normalize
from hamverify.network import Affine, Network, from_torch

METHODS = ("ia", "symbolic", "lp")
TOL = 1e-9  # float64 rounding between the bound computations and the forward pass
NUM_SAMPLES = 10_000


def random_mlp(seed: int, sizes: list[int], sparse_first: bool = False) -> Network:
    rng = np.random.default_rng(seed)
    affines = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.normal(size=(fan_out, fan_in)) / np.sqrt(fan_in)
        if sparse_first and i == 0:
            W = sp.csr_matrix(W * (rng.random(W.shape) < 0.4))
        affines.append(Affine(W, rng.normal(size=fan_out) * 0.2))
    return Network(tuple(affines), (sizes[0],))


def tiny_torch_mlp(seed: int) -> Network:
    torch.manual_seed(seed)
    model = nn.Sequential(Normalize((0.4,), (0.3,)), nn.Flatten(), nn.Linear(16, 12), nn.ReLU(),
                          nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4))
    return from_torch(model.eval(), (1, 4, 4))


def tiny_conv_net(seed: int) -> Network:
    torch.manual_seed(seed)
    model = nn.Sequential(Normalize((0.5, 0.4), (0.25, 0.3)), nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, stride=1, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 6 * 6, 12), nn.ReLU(), nn.Linear(12, 5))
    net = from_torch(model.eval(), (2, 12, 12))
    assert sp.issparse(net.affines[0].W) and sp.issparse(net.affines[1].W)  # exercise the sparse paths
    return net


NETWORKS = {
    "mlp": lambda: random_mlp(0, [5, 16, 16, 16, 4]),
    "sparse_mlp": lambda: random_mlp(1, [8, 20, 12, 3], sparse_first=True),
    "torch_mlp": lambda: tiny_torch_mlp(2),
    "conv": lambda: tiny_conv_net(3),
}


def random_box(net: Network, seed: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A box around a random point, intersected with [0, 1] as the verifier does."""
    rng = np.random.default_rng(seed)
    x = rng.random(net.input_size)
    return np.clip(x - radius, 0.0, 1.0), np.clip(x + radius, 0.0, 1.0)


def sample_box(lo: np.ndarray, hi: np.ndarray, seed: int, n: int = NUM_SAMPLES) -> np.ndarray:
    """Corners (all of them when few, else random ones) plus uniform interior points."""
    rng = np.random.default_rng(seed)
    d = lo.size
    if d <= 10:
        corners = np.array(list(itertools.product([0.0, 1.0], repeat=d)))
    else:
        corners = np.vstack([np.zeros(d), np.ones(d), rng.integers(0, 2, size=(n // 4, d))])
    inside = rng.random((n - len(corners), d))
    unit = np.vstack([corners, inside])
    return lo + (hi - lo) * unit


def bounds_for(method: str, net: Network, lo, hi) -> list[LayerBounds]:
    return compute_bounds(net, lo, hi, method=method)


# --- soundness ------------------------------------------------------------------------------


@pytest.mark.parametrize("net_name", list(NETWORKS))
@pytest.mark.parametrize("method", METHODS)
def test_samples_lie_inside_bounds(method, net_name):
    net = NETWORKS[net_name]()
    for seed, radius in [(10, 0.05), (11, 0.25)]:
        lo, hi = random_box(net, seed, radius)
        bounds = bounds_for(method, net, lo, hi)
        assert len(bounds) == len(net.affines) - 1
        X = sample_box(lo, hi, seed)
        for layer, (pre, b) in enumerate(zip(net.preactivations(X), bounds)):
            assert np.all(pre >= b.lower - TOL), f"{method} lower bound violated in layer {layer}"
            assert np.all(pre <= b.upper + TOL), f"{method} upper bound violated in layer {layer}"


@pytest.mark.parametrize("net_name", list(NETWORKS))
@pytest.mark.parametrize("method", METHODS)
def test_sampled_margins_respect_margin_lower_bounds(method, net_name):
    net = NETWORKS[net_name]()
    lo, hi = random_box(net, 20, 0.1)
    bounds = bounds_for(method, net, lo, hi)
    logits = net.forward(sample_box(lo, hi, 21))
    for label in range(net.num_classes):
        bound = margin_lower_bounds(net, lo, hi, bounds, label)
        assert bound[label] == np.inf
        others = [j for j in range(net.num_classes) if j != label]
        margins = logits[:, [label]] - logits[:, others]
        assert np.all(margins >= bound[others] - TOL)


@pytest.mark.parametrize("net_name", ["mlp", "conv"])
def test_output_bounds_contain_sampled_logits(net_name):
    net = NETWORKS[net_name]()
    lo, hi = random_box(net, 30, 0.1)
    out = output_bounds(net, lo, hi, symbolic_bounds(net, lo, hi))
    logits = net.forward(sample_box(lo, hi, 31))
    assert np.all(logits >= out.lower - TOL) and np.all(logits <= out.upper + TOL)


def test_point_box_gives_exact_margins():
    """With lo == hi every ReLU is stable, so the relaxation is exact."""
    net = NETWORKS["conv"]()
    x = np.random.default_rng(40).random(net.input_size)
    logits = net.forward(x)[0]
    bounds = symbolic_bounds(net, x, x)
    for label in range(net.num_classes):
        bound = margin_lower_bounds(net, x, x, bounds, label)
        others = [j for j in range(net.num_classes) if j != label]
        np.testing.assert_allclose(bound[others], logits[label] - logits[others], atol=1e-9)


# --- tightness ------------------------------------------------------------------------------


@pytest.mark.parametrize("net_name", list(NETWORKS))
@pytest.mark.parametrize("method", ["symbolic", "lp"])
def test_no_method_is_looser_than_interval_arithmetic(method, net_name):
    net = NETWORKS[net_name]()
    lo, hi = random_box(net, 50, 0.2)
    ia = interval_bounds(net, lo, hi)
    for b, ref in zip(bounds_for(method, net, lo, hi), ia):
        assert np.all(b.lower >= ref.lower) and np.all(b.upper <= ref.upper)


def test_symbolic_is_strictly_tighter_than_ia_on_a_deep_net():
    net = random_mlp(60, [6, 24, 24, 24, 24, 5])
    lo, hi = random_box(net, 61, 0.2)
    ia, sym = interval_bounds(net, lo, hi), symbolic_bounds(net, lo, hi)
    gain = [(r.upper - r.lower) - (s.upper - s.lower) for r, s in zip(ia, sym)]
    assert max(g.max() for g in gain[1:]) > 1e-3
    assert sum(s.unstable.sum() for s in sym) < sum(r.unstable.sum() for r in ia)


@pytest.mark.parametrize("net_name", list(NETWORKS))
def test_lp_is_tighter_or_equal_to_symbolic(net_name):
    net = NETWORKS[net_name]()
    lo, hi = random_box(net, 70, 0.2)
    sym, lp = symbolic_bounds(net, lo, hi), lp_bounds(net, lo, hi)
    for s, l in zip(sym, lp):
        assert np.all(l.lower >= s.lower) and np.all(l.upper <= s.upper)


def test_lp_is_strictly_tighter_than_symbolic_somewhere():
    net = random_mlp(80, [6, 20, 20, 20, 5])
    lo, hi = random_box(net, 81, 0.3)
    sym, lp = symbolic_bounds(net, lo, hi), lp_bounds(net, lo, hi)
    gain = [(s.upper - s.lower) - (l.upper - l.lower) for s, l in zip(sym, lp)]
    assert max(g.max() for g in gain) > 1e-3


def test_every_method_respects_a_tighter_prior():
    net = NETWORKS["mlp"]()
    lo, hi = random_box(net, 90, 0.2)
    sym = symbolic_bounds(net, lo, hi)
    prior = [LayerBounds(b.lower + 0.25 * (b.upper - b.lower), b.upper.copy()) for b in sym]
    for method in METHODS:
        refined = compute_bounds(net, lo, hi, method=method, prior=prior)
        for r, p in zip(refined, prior):
            assert np.all(r.lower >= p.lower) and np.all(r.upper <= p.upper)


# --- golden values and API ----------------------------------------------------------------------


def golden_net() -> Network:
    """z1 = x1 - x2, z2 = 2 x1 + x2 - 1;  z3 = h1 + h2 + 0.5, z4 = h1 - 2 h2;  out = h3 - h4."""
    return Network((Affine(np.array([[1.0, -1.0], [2.0, 1.0]]), np.array([0.0, -1.0])),
                    Affine(np.array([[1.0, 1.0], [1.0, -2.0]]), np.array([0.5, 0.0])),
                    Affine(np.array([[1.0, -1.0]]), np.array([0.0]))), (2,))


def test_interval_bounds_golden_values():
    bounds = interval_bounds(golden_net(), np.zeros(2), np.ones(2))
    # x in [0,1]^2: z1 in [-1, 1], z2 in [-1, 2]; then h1 in [0, 1], h2 in [0, 2].
    np.testing.assert_array_equal(bounds[0].lower, [-1.0, -1.0])
    np.testing.assert_array_equal(bounds[0].upper, [1.0, 2.0])
    np.testing.assert_array_equal(bounds[1].lower, [0.5, -4.0])
    np.testing.assert_array_equal(bounds[1].upper, [3.5, 1.0])
    np.testing.assert_array_equal(bounds[0].unstable, [True, True])
    np.testing.assert_array_equal(bounds[1].stably_active, [True, False])
    np.testing.assert_array_equal(bounds[1].stably_inactive, [False, False])


def test_sparse_and_dense_weights_give_the_same_bounds():
    dense = NETWORKS["conv"]()
    as_dense = Network(tuple(Affine(a.dense(), a.b) for a in dense.affines), dense.input_shape)
    lo, hi = random_box(dense, 100, 0.1)
    for method in METHODS:
        for a, b in zip(bounds_for(method, dense, lo, hi), bounds_for(method, as_dense, lo, hi)):
            np.testing.assert_allclose(a.lower, b.lower, atol=1e-7)
            np.testing.assert_allclose(a.upper, b.upper, atol=1e-7)


def test_chunked_back_substitution_matches_unchunked(monkeypatch):
    net = NETWORKS["conv"]()
    lo, hi = random_box(net, 110, 0.15)
    whole = symbolic_bounds(net, lo, hi)
    monkeypatch.setattr(symbolic_module, "MAX_ROWS_PER_CHUNK", 3)
    for a, b in zip(symbolic_bounds(net, lo, hi), whole):
        np.testing.assert_allclose(a.lower, b.lower, atol=1e-12)
        np.testing.assert_allclose(a.upper, b.upper, atol=1e-12)


@pytest.mark.parametrize("fraction", [0.0, 1.1])
def test_densify_threshold_does_not_change_bounds(monkeypatch, fraction):
    net = NETWORKS["conv"]()
    lo, hi = random_box(net, 115, 0.15)
    reference = symbolic_bounds(net, lo, hi)
    monkeypatch.setattr(symbolic_module, "DENSIFY_FRACTION", fraction)
    for a, b in zip(symbolic_bounds(net, lo, hi), reference):
        np.testing.assert_allclose(a.lower, b.lower, atol=1e-12)
        np.testing.assert_allclose(a.upper, b.upper, atol=1e-12)


def test_lp_with_a_passed_deadline_returns_symbolic_bounds():
    net = NETWORKS["mlp"]()
    lo, hi = random_box(net, 120, 0.2)
    sym = symbolic_bounds(net, lo, hi)
    for a, b in zip(lp_bounds(net, lo, hi, deadline=time.monotonic() - 1.0), sym):
        np.testing.assert_array_equal(a.lower, b.lower)
        np.testing.assert_array_equal(a.upper, b.upper)


def test_certified_lower_bound_is_weak_duality():
    """min x1 + 2 x2 s.t. x1 + x2 >= 3, 0 <= x <= 10 has optimum 3 (dual y = 1)."""
    arrays = _LpArrays(sp.csr_matrix(np.array([[1.0, 1.0]])), np.zeros(2), np.full(2, 10.0),
                       np.array([3.0]), np.array([np.inf]))
    cost = np.array([1.0, 2.0])
    assert certified_lower_bound(arrays, cost, np.array([1.0])) == pytest.approx(3.0)
    # Any multiplier gives a valid (maybe weak) bound; a wrong-signed one is clipped, not trusted.
    for y in (-5.0, 0.0, 0.5, 1.7, 40.0):
        assert certified_lower_bound(arrays, cost, np.array([y])) <= 3.0 + 1e-12


def test_compute_bounds_dispatch_and_unknown_method():
    net = NETWORKS["mlp"]()
    lo, hi = random_box(net, 130, 0.1)
    for a, b in zip(compute_bounds(net, lo, hi, method="ia"), interval_bounds(net, lo, hi)):
        np.testing.assert_array_equal(a.lower, b.lower)
    for a, b in zip(compute_bounds(net, lo, hi), symbolic_bounds(net, lo, hi)):
        np.testing.assert_array_equal(a.upper, b.upper)
    with pytest.raises(HamverifyError):
        compute_bounds(net, lo, hi, method="mip-magic")


def test_wrong_box_size_is_a_hamverify_error():
    net = NETWORKS["mlp"]()
    with pytest.raises(HamverifyError):
        interval_bounds(net, np.zeros(3), np.ones(3))
