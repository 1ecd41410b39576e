"""alpha-CROWN margin bounds (hamverify.bounds.alpha): never looser than the symbolic ones, sound on
sampled points of the box and of split subdomains, and the deadline is honoured."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from hamverify import HamverifyError
from hamverify.bounds import alpha_crown, alpha_margin_bounds, margin_lower_bounds, split_bounds, symbolic_bounds
from hamverify.models import Normalize
from hamverify.network import Affine, Network, from_torch

TOL = 1e-9  # float64 rounding between the bound computations and the forward pass
NUM_SAMPLES = 10_000


def random_mlp(seed: int, sizes: list[int]) -> Network:
    rng = np.random.default_rng(seed)
    affines = [Affine(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.2)
               for i, o in zip(sizes[:-1], sizes[1:])]
    return Network(tuple(affines), (sizes[0],))


def tiny_conv_net(seed: int) -> Network:
    torch.manual_seed(seed)
    model = nn.Sequential(Normalize((0.5, 0.4), (0.25, 0.3)), nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, stride=1, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 6 * 6, 12), nn.ReLU(), nn.Linear(12, 5))
    net = from_torch(model.eval(), (2, 12, 12))
    assert sp.issparse(net.affines[0].W)  # the sparse IR path of the float64 evaluation
    return net


NETWORKS = {
    "mlp": lambda: random_mlp(0, [5, 16, 16, 16, 4]),
    "deep": lambda: random_mlp(1, [6, 24, 24, 24, 24, 5]),
    "conv": lambda: tiny_conv_net(2),
}


def random_box(net: Network, seed: int, radius: float):
    x = np.random.default_rng(seed).random(net.input_size)
    return np.clip(x - radius, 0.0, 1.0), np.clip(x + radius, 0.0, 1.0)


def sample_box(lo, hi, seed: int, n: int = NUM_SAMPLES) -> np.ndarray:
    """Corners (all when few, else random ones) plus uniform interior points."""
    rng = np.random.default_rng(seed)
    d = lo.size
    if d <= 10:
        corners = np.array(list(itertools.product([0.0, 1.0], repeat=d)))
    else:
        corners = rng.integers(0, 2, size=(n // 4, d)).astype(np.float64)
    unit = np.vstack([corners, rng.random((n - len(corners), d))])
    return lo + (hi - lo) * unit


def true_margins(net: Network, X: np.ndarray, label: int) -> np.ndarray:
    z = net.forward(X)
    return z[:, [label]] - z  # column label is 0


@pytest.mark.parametrize("net_name", list(NETWORKS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_alpha_is_at_least_as_tight_as_symbolic_and_sound(net_name, dtype):
    net = NETWORKS[net_name]()
    for seed, radius in [(10, 0.05), (11, 0.2)]:
        lo, hi = random_box(net, seed, radius)
        bounds = symbolic_bounds(net, lo, hi)
        X = sample_box(lo, hi, seed)
        for label in range(net.num_classes):
            sym = margin_lower_bounds(net, lo, hi, bounds, label)
            res = alpha_crown(net, lo, hi, label, bounds=bounds, steps=15, dtype=dtype)
            assert res.margins[label] == np.inf and not res.infeasible
            others = [j for j in range(net.num_classes) if j != label]
            assert np.all(res.margins[others] >= sym[others] - TOL)
            assert np.all(true_margins(net, X, label)[:, others] >= res.margins[others] - TOL)
            for a, b in zip(res.alpha, bounds):  # slopes in [0, 1], exact on stable neurons
                assert a.shape == (len(others), b.lower.size) and np.all((a >= 0) & (a <= 1))
                assert np.all(a[:, b.stably_active] == 1) and np.all(a[:, b.stably_inactive] == 0)


def test_alpha_is_strictly_tighter_on_a_deep_net():
    net = NETWORKS["deep"]()
    lo, hi = random_box(net, 20, 0.2)
    bounds = symbolic_bounds(net, lo, hi)
    sym = margin_lower_bounds(net, lo, hi, bounds, 0)
    res = alpha_crown(net, lo, hi, 0, bounds=bounds, steps=30)
    assert res.steps == 30
    assert np.max(res.margins[1:] - sym[1:]) > 1e-2
    # Computing the intermediate bounds itself gives the same answer as passing them.
    np.testing.assert_allclose(alpha_margin_bounds(net, lo, hi, 0, steps=30), res.margins, rtol=0, atol=1e-12)


def _reference_split(net: Network, lo, hi, bounds, X, seed: int):
    """Splits on unstable neurons of every layer, set to their signs at one sampled point (so the
    subdomain is not empty), plus the preactivations of the samples and which samples satisfy them."""
    rng = np.random.default_rng(seed)
    pre = net.preactivations(X)
    ref = pre_ref = None
    for _ in range(50):  # a reference point away from the split hyperplanes
        ref = int(rng.integers(len(X)))
        pre_ref = [p[ref] for p in pre]
        if all(np.all(np.abs(p) > 1e-6) for p in pre_ref):
            break
    splits, inside = {}, np.ones(len(X), dtype=bool)
    for layer, (b, p) in enumerate(zip(bounds, pre_ref)):
        unstable = np.flatnonzero(b.unstable)
        chosen = rng.choice(unstable, size=min(2, unstable.size), replace=False)
        active = np.zeros(b.lower.size, dtype=bool)
        inactive = np.zeros(b.lower.size, dtype=bool)
        active[chosen[p[chosen] > 0]] = True
        inactive[chosen[p[chosen] < 0]] = True
        splits[layer] = (active, inactive)
        inside &= np.all(pre[layer][:, active] >= 0, axis=1) & np.all(pre[layer][:, inactive] <= 0, axis=1)
    return splits, pre, inside


@pytest.mark.parametrize("net_name", list(NETWORKS))
@pytest.mark.parametrize("with_prior", [False, True])
def test_split_bounds_hold_on_the_subdomain(net_name, with_prior):
    net = NETWORKS[net_name]()
    lo, hi = random_box(net, 30, 0.2)
    box_bounds = symbolic_bounds(net, lo, hi)
    X = sample_box(lo, hi, 31)
    splits, pre, inside = _reference_split(net, lo, hi, box_bounds, X, 32)
    assert inside.sum() >= 20  # enough sampled points in the subdomain to test anything
    label = int(np.argmax(net.forward(X[inside][:1])))
    res = alpha_crown(net, lo, hi, label, bounds=box_bounds if with_prior else None, splits=splits, steps=15)
    assert not res.infeasible
    others = [j for j in range(net.num_classes) if j != label]
    assert np.all(true_margins(net, X[inside], label)[:, others] >= res.margins[others] - TOL)
    for layer, (b, p) in enumerate(zip(res.bounds, pre)):
        assert np.all(p[inside] >= b.lower - TOL) and np.all(p[inside] <= b.upper + TOL)
        active, inactive = splits[layer]
        assert np.all(b.lower[active] >= 0) and np.all(b.upper[inactive] <= 0)
        if with_prior:
            ref = box_bounds[layer]
            assert np.all(b.lower >= ref.lower) and np.all(b.upper <= ref.upper)
    # The split subdomain's bounds are never looser than the symbolic method on the same bounds.
    sym = margin_lower_bounds(net, lo, hi, res.bounds, label)
    assert np.all(res.margins[others] >= sym[others] - TOL)


def test_contradictory_split_is_infeasible():
    net = NETWORKS["mlp"]()
    lo, hi = random_box(net, 40, 0.05)
    bounds = symbolic_bounds(net, lo, hi)
    dead = np.flatnonzero(bounds[0].upper < -1e-3)
    assert dead.size
    active = np.zeros(bounds[0].lower.size, dtype=bool)
    active[dead[0]] = True
    res = alpha_crown(net, lo, hi, 0, splits={0: (active, None)})
    assert res.infeasible and res.bounds is None and np.all(res.margins == np.inf)
    assert split_bounds(net, lo, hi, {0: (active, None)}) is None
    # Without splits, split_bounds is the symbolic method (or the prior, copied).
    for a, b in zip(split_bounds(net, lo, hi), bounds):
        np.testing.assert_array_equal(a.lower, b.lower)
        np.testing.assert_array_equal(a.upper, b.upper)


def test_bad_splits_and_labels_are_hamverify_errors():
    net = NETWORKS["mlp"]()
    lo, hi = random_box(net, 41, 0.1)
    with pytest.raises(HamverifyError):
        alpha_crown(net, lo, hi, 0, splits={7: (None, None)})
    with pytest.raises(HamverifyError):
        alpha_crown(net, lo, hi, 0, splits={0: (np.ones(3, dtype=bool), None)})
    with pytest.raises(HamverifyError):
        alpha_crown(net, lo, hi, 9)


def test_deadline_in_the_past_gives_the_symbolic_bounds():
    net = NETWORKS["deep"]()
    lo, hi = random_box(net, 50, 0.2)
    bounds = symbolic_bounds(net, lo, hi)
    res = alpha_crown(net, lo, hi, 1, bounds=bounds, steps=10_000, deadline=time.monotonic() - 1.0)
    assert res.steps == 0
    np.testing.assert_array_equal(res.margins, margin_lower_bounds(net, lo, hi, bounds, 1))


def test_deadline_stops_a_long_optimization():
    net = NETWORKS["deep"]()
    lo, hi = random_box(net, 51, 0.2)
    bounds = symbolic_bounds(net, lo, hi)
    t = time.monotonic()
    res = alpha_crown(net, lo, hi, 1, bounds=bounds, steps=10_000_000, deadline=t + 0.3)
    assert time.monotonic() - t < 1.5
    assert 0 < res.steps < 10_000_000
    sym = margin_lower_bounds(net, lo, hi, bounds, 1)
    assert np.all(res.margins >= sym - TOL)


def test_warm_start_targets_and_stop_at():
    net = NETWORKS["deep"]()
    lo, hi = random_box(net, 60, 0.2)
    bounds = symbolic_bounds(net, lo, hi)
    sym = margin_lower_bounds(net, lo, hi, bounds, 2)
    first = alpha_crown(net, lo, hi, 2, bounds=bounds, steps=20)
    # Starting from the optimized slopes, one evaluation reproduces the bounds.
    again = alpha_crown(net, lo, hi, 2, bounds=bounds, steps=1, alpha_init=first.alpha)
    np.testing.assert_allclose(again.margins, first.margins, rtol=0, atol=1e-9)
    # Only the targets are optimized; the other classes keep the symbolic bound.
    sub = alpha_crown(net, lo, hi, 2, bounds=bounds, targets=[0, 4], steps=20)
    assert list(sub.targets) == [0, 4] and sub.alpha[0].shape[0] == 2
    np.testing.assert_array_equal(sub.margins[[1, 3]], sym[[1, 3]])
    assert np.all(sub.margins[[0, 4]] >= sym[[0, 4]] - TOL)
    # stop_at far below every bound: the first evaluation already settles it.
    assert alpha_crown(net, lo, hi, 2, bounds=bounds, steps=20, stop_at=float(sym.min()) - 10).steps == 1
