"""l_2 PGD (hamverify.attacks.pgd_l2) and AutoAttack through torchattacks (hamverify.attacks.autoattack):
points stay inside B(x) ∩ [0, 1], they break an undefended tiny MNIST net, AutoAttack is at least
as strong as PGD, and a missing torchattacks is a one-line error with the install command."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hamverify import HamverifyError
from hamverify.attacks import PGD, PGDL2, AutoAttack
from hamverify.models import tiny_mlp
from hamverify.train import _accuracy

try:  # tests/ is on sys.path under pytest's default import mode
    from conftest import has_data, shared_data_root
except ImportError:  # tests/ as a package
    from tests.conftest import has_data, shared_data_root


def train_undefended(root, n_train=2000, n_test=100, epochs=3, seed=0, hidden=32):
    """tiny_mlp (``hidden`` units; checkpoints hold the default 8) trained for a few epochs of plain CE on MNIST; the first test images."""
    from hamverify.data import load_dataset, to_tensor
    x, y = load_dataset("mnist", "train", root)
    xt, yt = load_dataset("mnist", "test", root)
    x, y = to_tensor(x[:n_train]), torch.as_tensor(y[:n_train], dtype=torch.long)
    xt, yt = to_tensor(xt[:n_test]), torch.as_tensor(yt[:n_test], dtype=torch.long)
    torch.manual_seed(seed)
    model = tiny_mlp("mnist", hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 100):
            idx = perm[i:i + 100]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), xt, yt


@pytest.fixture(scope="module")
def net():
    root = shared_data_root()
    if not has_data(root, "mnist"):
        pytest.skip(f"MNIST not found under {root}")
    model, x, y = train_undefended(root)
    assert _accuracy(model, x, y) > 0.7  # it learned something, so there is something to break
    return model, x, y


def _random_linear(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


def _l2(d):
    return d.reshape(len(d), -1).norm(dim=1)


def test_pgd_l2_stays_in_the_ball_and_the_box():
    model = _random_linear()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 2, 4, 4, generator=g)
    x[:8] = 0.0  # inputs on the box's corner: the [0, 1] clip matters
    x[8:16] = 1.0
    y = torch.randint(0, 5, (32,), generator=g)
    for eps in (0.0, 0.3, 2.0, 10.0):
        x_adv = PGDL2(eps, steps=10, restarts=2, generator=torch.Generator().manual_seed(1))(model, x, y)
        assert x_adv.shape == x.shape
        assert (_l2(x_adv - x) <= eps * (1 + 1e-5) + 1e-7).all()
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(PGDL2(0.0)(model, x, y), x)
    # the default step size is Engstrom et al.'s 2.5 * eps / steps, as for l_inf PGD
    assert PGDL2(1.0, steps=20).step_size == pytest.approx(2.5 / 20)


def test_pgd_l2_beats_random_noise_of_the_same_norm(net):
    model, x, y = net
    eps = 1.5
    x_adv = PGDL2(eps, steps=20, restarts=2, generator=torch.Generator().manual_seed(0))(model, x, y)
    assert (_l2(x_adv - x) <= eps * (1 + 1e-5)).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    noisy = (x + eps * noise / _l2(noise).view(-1, 1, 1, 1)).clamp(0, 1)  # clipping only shrinks the norm
    with torch.no_grad():
        acc_adv = (model(x_adv).argmax(1) == y).float().mean().item()
        acc_noise = (model(noisy).argmax(1) == y).float().mean().item()
    clean = _accuracy(model, x, y)
    assert acc_adv < acc_noise - 0.3, (clean, acc_noise, acc_adv)
    assert acc_adv <= 0.3


def test_missing_torchattacks_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import raises ImportError
    model = _random_linear()
    x, y = torch.rand(2, 2, 4, 4), torch.tensor([0, 1])
    with pytest.raises(HamverifyError) as info:
        AutoAttack(0.1)(model, x, y)
    msg = str(info.value)
    assert "\n" not in msg and "pip install --no-deps torchattacks==3.5.1" in msg


def test_autoattack_rejects_bad_settings():
    with pytest.raises(HamverifyError, match="unknown norm"):
        AutoAttack(0.1, norm="L1")
    with pytest.raises(HamverifyError, match="version"):
        AutoAttack(0.1, version="fast")


def test_autoattack_breaks_an_undefended_net_inside_the_ball(net):
    pytest.importorskip("torchattacks")
    model, x, y = net
    x, y = x[:50], y[:50]
    eps = 0.3
    atk = AutoAttack(eps, norm="Linf", version="standard", seed=0)
    x_adv = atk(model, x, y)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    robust = atk.robust_mask(model, x, y).float().mean().item()
    assert robust <= 0.05
    info = atk.implementation()
    assert info["name"] == "torchattacks" and info["version"] == "3.5.1"
    assert [c["name"] for c in info["components"]] == ["APGD", "APGDT", "FAB", "Square"]
    assert "torchattacks 3.5.1" in atk.describe()


def test_autoattack_at_least_as_strong_as_pgd(net):
    pytest.importorskip("torchattacks")
    model, x, y = net
    # radii where PGD-20x10 leaves 10-30 % robust (clean 89 %): AutoAttack may not do worse
    for norm, eps, pgd in (("Linf", 0.08, PGD(0.08, generator=torch.Generator().manual_seed(0))),
                           ("L2", 2.0, PGDL2(2.0, generator=torch.Generator().manual_seed(0)))):
        aa = AutoAttack(eps, norm=norm, seed=0)
        x_adv = aa(model, x, y)
        dist = (x_adv - x).abs().reshape(len(x), -1).amax(1) if norm == "Linf" else _l2(x_adv - x)
        assert (dist <= eps * (1 + 1e-5) + 1e-7).all()
        with torch.no_grad():
            aa_acc = ((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).float().mean().item()
        pgd_acc = pgd.robust_mask(model, x, y).float().mean().item()
        clean = _accuracy(model, x, y)
        assert aa_acc < clean  # the ball is large enough for the attacks to matter
        assert aa_acc <= pgd_acc + 0.02, (norm, aa_acc, pgd_acc)


def test_autoattack_leaves_the_global_generator_alone(net):
    pytest.importorskip("torchattacks")
    model, x, y = net
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    AutoAttack(0.3, seed=0)(model, x[:5], y[:5])
    assert torch.equal(torch.rand(3), expected)
