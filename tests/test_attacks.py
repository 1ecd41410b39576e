"""PGD (hamverify.attacks): it finds adversarial points, stays inside B(x) ∩ [0,1], and is reproducible."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hamverify.attacks import PGD, Attack
from hamverify.models import tiny_mlp
from hamverify.train import _accuracy, robust_accuracy

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]




def _data_root() -> pathlib.Path:
    env = os.environ.get("HAMVERIFY_DATA")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def mnist_model():
    """tiny_mlp trained briefly on 2000 MNIST images (undefended), and 200 held-out test images."""
    root = _data_root()
    if not (root / "mnist").is_dir():
        pytest.skip(f"MNIST not found under {root}")
    from hamverify.data import load_dataset, to_tensor
    x, y = load_dataset("mnist", "train", root)
    xt, yt = load_dataset("mnist", "test", root)
    x, y = to_tensor(x[:2000]), torch.as_tensor(y[:2000])
    xt, yt = to_tensor(xt[:200]), torch.as_tensor(yt[:200])
    torch.manual_seed(0)
    model = tiny_mlp("mnist", hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 100):
            idx = perm[i:i + 100]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, xt, yt


def test_pgd_breaks_undefended_model(mnist_model):
    model, x, y = mnist_model
    clean = _accuracy(model, x, y)
    assert clean > 0.7  # the model did learn something, so the attack has something to break
    x_adv = PGD(0.3, steps=20, restarts=1, generator=torch.Generator().manual_seed(1))(model, x, y)
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y).float().mean().item()
    assert fooled >= 0.9
    assert robust_accuracy(model, x, y, 0.3, steps=20, restarts=1) <= 0.1


def test_pgd_accuracy_below_clean(mnist_model):
    model, x, y = mnist_model
    clean = _accuracy(model, x, y)
    for eps in (0.0, 0.02, 0.05, 0.1):
        rob = robust_accuracy(model, x, y, eps, steps=10, restarts=2, seed=3)
        assert rob <= clean
        clean_mask = model(x).argmax(1) == y
        mask = PGD(eps, steps=10, restarts=1, generator=torch.Generator().manual_seed(4)).robust_mask(model, x, y)
        assert not (mask & ~clean_mask).any()  # robust implies clean-correct
    assert robust_accuracy(model, x, y, 0.0, steps=5, restarts=1) == pytest.approx(clean)
    # Larger balls never help the model (same seed: nested search spaces, monotone in practice here).
    accs = [robust_accuracy(model, x, y, e, steps=10, restarts=1, seed=5) for e in (0.02, 0.1, 0.3)]
    assert accs[0] >= accs[1] >= accs[2]


def _linear_model():
    """logit_1 - logit_0 = 10 * (mean(x) - 0.5): any x can be flipped by moving every pixel by 0.2."""
    lin = nn.Linear(16, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([-torch.ones(16), torch.ones(16)]) * 10 / 32)
        lin.bias.copy_(torch.tensor([2.5, -2.5]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_pgd_on_linear_model_is_exact():
    model = _linear_model()
    g = torch.Generator().manual_seed(6)
    x = 0.3 + 0.4 * torch.rand(50, 1, 4, 4, generator=g)
    y = model(x).argmax(1)
    margin = (x.flatten(1).mean(1) - 0.5).abs()
    # eps above each margin: always broken; below: never (the model is linear, PGD's sign step is optimal).
    x_adv = PGD(0.25, steps=10, restarts=1, generator=g)(model, x, y)
    assert (model(x_adv).argmax(1) != y).all()
    eps_small = float(margin.min()) * 0.5
    x_adv = PGD(eps_small, steps=10, restarts=2, generator=g)(model, x, y)
    assert (model(x_adv).argmax(1) == y).all()


@pytest.mark.parametrize("eps", [0.05, 0.3, 0.9])
def test_adversarial_points_in_box(eps):
    torch.manual_seed(7)
    model = tiny_mlp("mnist", hidden=16).eval()
    g = torch.Generator().manual_seed(8)
    x = torch.rand(20, 1, 28, 28, generator=g)
    x[:5] = 0.0
    x[5:10] = 1.0
    x[10:15] = (x[10:15] > 0.5).float()  # binary images: every pixel on the border of [0, 1]
    y = torch.randint(0, 10, (20,), generator=g)
    for attack in (PGD(eps, steps=5, restarts=3, generator=g), PGD(eps, steps=3, restarts=1, random_start=False),
                   PGD(eps, steps=3, restarts=1, step_size=10.0, generator=g)):
        x_adv = attack(model, x, y)
        assert x_adv.shape == x.shape and not x_adv.requires_grad
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv - x).abs().max() <= eps + 1e-6


def test_seeded_pgd_is_reproducible():
    torch.manual_seed(9)
    model = tiny_mlp("mnist", hidden=16).eval()
    x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(10))
    y = torch.randint(0, 10, (12,), generator=torch.Generator().manual_seed(11))
    run = lambda seed: PGD(0.1, steps=4, restarts=2, generator=torch.Generator().manual_seed(seed))(model, x, y)  # noqa: E731
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    assert robust_accuracy(model, x, y, 0.1, 4, 2, seed=3) == robust_accuracy(model, x, y, 0.1, 4, 2, seed=3)


def test_pgd_defaults_and_mode():
    a = PGD(8 / 255)
    assert a.steps == 20 and a.restarts == 10
    assert a.step_size == pytest.approx(2.5 * (8 / 255) / 20)  # docs/METHOD.md §1
    assert PGD(0.1, steps=10).step_size == pytest.approx(0.025)
    model = tiny_mlp("mnist", hidden=4).train()
    x, y = torch.rand(3, 1, 28, 28), torch.zeros(3, dtype=torch.long)
    PGD(0.1, steps=1, restarts=1)(model, x, y)
    assert model.training  # the attack runs in eval mode and restores the mode it found
    with pytest.raises(NotImplementedError):
        Attack(0.1)(model, x, y)
    # Projection: onto the eps-box around x, then into [0, 1].
    np.testing.assert_array_equal(Attack(0.1).project(x + 1.0, x).numpy(), (x + 0.1).clamp(0, 1).numpy())
