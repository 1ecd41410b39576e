"""MarginPGD (hamverify.attacks.margin): finds a planted counterexample that CE PGD misses, stays in
the box, honours its deadline, and is reproducible with a seeded generator."""
from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from torch import nn

from hamverify.attacks import PGD, MarginPGD
from hamverify.attacks.margin import checkpoint_steps
from hamverify.models import tiny_mlp

D = 20          # input size of the planted network
EPS = 0.3
X0 = 0.5        # every pixel of the clean input


def planted_net() -> nn.Module:
    """Three classes on x in R^20, m = mean(x):  z0 = 0,  z1 = 10 relu(1 - m) - 9,  z2 = 40 relu(m) - 31.5.

    At x = 0.5 (label 0) with eps 0.3, m ranges over [0.2, 0.8]: class 1 peaks at z1 = -1 (m = 0.2,
    never a counterexample), class 2 at z2 = +0.5 (m = 0.8, the only counterexample, a corner).
    CE's input gradient is proportional to 40 p2 - 10 p1, negative while z1 - z2 = 32.5 - 50 m > ln 4,
    i.e. for m < 0.62: from every random start (m = 0.5 +- 0.04) CE's sign steps lower every pixel,
    towards class 1, and p2 only shrinks on the way.  The margin attack aimed at class 2 raises them.
    """
    lin1 = nn.Linear(D, 2)
    lin2 = nn.Linear(2, 3)
    with torch.no_grad():
        lin1.weight.copy_(torch.stack([torch.full((D,), 1.0 / D), torch.full((D,), -1.0 / D)]))
        lin1.bias.copy_(torch.tensor([0.0, 1.0]))
        lin2.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 10.0], [40.0, 0.0]]))
        lin2.bias.copy_(torch.tensor([0.0, -9.0, -31.5]))
    return nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2).eval()


def planted_box():
    x = np.full(D, X0)
    return x, np.clip(x - EPS, 0, 1), np.clip(x + EPS, 0, 1)


def test_planted_counterexample_is_found_by_margin_attack_and_missed_by_ce_pgd():
    model = planted_net()
    x, lo, hi = planted_box()
    xt = torch.from_numpy(x).float().view(1, D)
    assert int(model(xt).argmax()) == 0
    # The planted point exists: every pixel at its upper end.
    with torch.no_grad():
        z = model(torch.from_numpy(hi).float().view(1, D))[0]
    assert float(z[0] - z[2]) < 0 and float(z[0] - z[1]) > 0

    x_pgd = PGD(EPS, steps=20, restarts=10, generator=torch.Generator().manual_seed(0))(model, xt, torch.tensor([0]))
    with torch.no_grad():
        z_pgd = model(x_pgd)[0]
    assert int(z_pgd.argmax()) == 0, "CE PGD was supposed to miss the planted counterexample"

    res = MarginPGD(EPS, steps=20, restarts=10, generator=torch.Generator().manual_seed(0)).attack_box(model, lo, hi, 0)
    assert res.found and res.margin < 0 and res.target == 2
    assert res.steps < 20  # early stop: the first step already reaches the corner
    with torch.no_grad():
        z_m = model(torch.from_numpy(res.point).float().view(1, D))[0]
    assert int(z_m.argmax()) == 2


def test_unreachable_target_is_not_reported():
    model = planted_net()
    _, lo, hi = planted_box()
    res = MarginPGD(EPS, steps=30, restarts=3, generator=torch.Generator().manual_seed(1)).attack_box(
        model, lo, hi, 0, targets=[1])
    assert not res.found and res.target == 1
    assert res.margin == pytest.approx(1.0, abs=1e-5)  # the best possible: z1 = -1 at m = 0.2
    assert res.steps == 30


def test_model64_gives_the_float64_margin_and_a_float64_point():
    model = planted_net()
    model64 = copy.deepcopy(model).double()
    _, lo, hi = planted_box()
    res = MarginPGD(EPS, steps=10, restarts=2, generator=torch.Generator().manual_seed(2)).attack_box(
        model, lo, hi, 0, model64=model64)
    assert res.found and res.point.dtype == np.float64
    with torch.no_grad():
        z = model64(torch.from_numpy(res.point).view(1, D))[0]
    # float64 to the last few ulps (a batched product may round differently from a single row);
    # a float32 evaluation would be off by ~1e-8 here.
    assert res.margin == pytest.approx(float(z[0] - z[res.target]), abs=1e-12)


def _binary_images(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x[: n // 3] = (x[: n // 3] > 0.5).float()  # pixels on the border of [0, 1]
    return x.double().numpy()


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_points_lie_inside_the_box(eps):
    torch.manual_seed(3)
    model = tiny_mlp("mnist", hidden=16).eval()
    attack = MarginPGD(eps, steps=15, restarts=3, generator=torch.Generator().manual_seed(4))
    for x in _binary_images(4, 5):
        lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
        outside = np.where(np.arange(x.size).reshape(x.shape) % 2 == 0, 5.0, -5.0)  # a start far off the box
        res = attack.attack_box(model, lo, hi, 3, starts=[outside, x])
        assert res.point.shape == x.shape and res.point.dtype == np.float64
        assert np.all(res.point >= lo) and np.all(res.point <= hi)
        assert res.evaluations == res.steps + 1
    # The flat layout of verify.py: flat box plus input_shape.
    x = _binary_images(1, 6)[0]
    lo, hi = np.clip(x - eps, 0, 1).ravel(), np.clip(x + eps, 0, 1).ravel()
    res = attack.attack_box(model, lo, hi, 1, targets=[0, 7], input_shape=(1, 28, 28))
    assert res.point.shape == (784,) and np.all(res.point >= lo) and np.all(res.point <= hi)
    assert res.target in (0, 7)


def test_perturb_stays_in_the_ball():
    torch.manual_seed(7)
    model = tiny_mlp("mnist", hidden=16).eval()
    x = torch.from_numpy(_binary_images(3, 8)).float()
    y = torch.tensor([0, 4, 9])
    x_adv = MarginPGD(0.1, steps=5, restarts=2, generator=torch.Generator().manual_seed(9))(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_deadline_in_the_past_returns_immediately():
    model = planted_net()
    _, lo, hi = planted_box()
    attack = MarginPGD(EPS, steps=10_000, restarts=50, generator=torch.Generator().manual_seed(10))
    t = time.monotonic()
    res = attack.attack_box(model, lo, hi, 0, deadline=t - 1.0)
    assert time.monotonic() - t < 0.05
    assert res.evaluations == 0 and res.steps == 0 and not res.found and res.margin == np.inf
    assert np.all(res.point >= lo) and np.all(res.point <= hi)


def test_deadline_stops_a_long_run():
    model = planted_net()
    _, lo, hi = planted_box()
    attack = MarginPGD(EPS, steps=1_000_000, restarts=2, generator=torch.Generator().manual_seed(13))
    t = time.monotonic()
    res = attack.attack_box(model, lo, hi, 0, targets=[1], deadline=t + 0.3)  # class 1 is unreachable
    assert time.monotonic() - t < 1.5
    assert 0 < res.steps < 1_000_000 and not res.found


def test_seeded_runs_are_reproducible():
    torch.manual_seed(14)
    model = tiny_mlp("mnist", hidden=16).eval()
    label = 5
    with torch.no_grad():
        model[-1].bias[label] += 100.0  # no counterexample: every run goes the full length
    x = _binary_images(1, 15)[0]
    lo, hi = np.clip(x - 0.1, 0, 1), np.clip(x + 0.1, 0, 1)

    def run(seed):
        return MarginPGD(0.02, steps=8, restarts=3, generator=torch.Generator().manual_seed(seed)).attack_box(
            model, lo, hi, label)

    a, b, c = run(1), run(1), run(2)
    assert not a.found  # otherwise early stops could hide a difference
    np.testing.assert_array_equal(a.point, b.point)
    assert a.margin == b.margin and a.target == b.target
    assert not np.array_equal(a.point, c.point)


def test_checkpoints_tighten():
    marks = checkpoint_steps(100)
    assert marks[:3] == [22, 41, 58]
    gaps = np.diff(marks)
    assert np.all(gaps[1:] <= gaps[:-1]) and gaps.min() >= 6 and marks[-1] < 100
    assert checkpoint_steps(0) == [] and checkpoint_steps(1) == []
