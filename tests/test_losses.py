"""Certified-training losses (hamverify.losses): the bounds are sound on sampled points, the
robust CE bounds the clean CE, gradients are finite, schedules hit their knots, and every
certified recipe trains through the CLI."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from hamverify.cli import main
from hamverify.losses import (certified_margin_lower, crown_margin_lower, ibp_margin_lower, initialize,
                              relu_balance_loss, robust_cross_entropy, robust_loss, tightness_loss)
from hamverify.losses.certified import sabr_box
from hamverify.losses.interval import box, propagate_interval
from hamverify.models import cifar_small, cifar_small_bn, mnist_small, tiny_mlp
from hamverify.train import TrainConfig, beta_at, eps_at, kappa_at, warmup_at

ARCHS = [(tiny_mlp, (1, 28, 28)), (mnist_small, (1, 28, 28)), (cifar_small, (3, 32, 32)),
         (cifar_small_bn, (3, 32, 32))]


def _with_running_statistics(model, shape, seed=5):
    """``model`` with its BatchNorm running statistics moved off their initial 0 / 1 (a few
    training-mode passes), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, *shape, generator=g))
    return model.eval()


def _batch(shape, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def _sampled_worst_margins(model, lo, hi, y, samples=300, seed=1):
    """Smallest z_y - z_j over random points and corners of the box (an upper bound of the true min)."""
    g = torch.Generator().manual_seed(seed)
    worst = None
    with torch.no_grad():
        for k in range(samples):
            u = torch.rand(lo.shape, generator=g)
            if k % 2:
                u = (u > 0.5).to(lo.dtype)  # corners, where the extremes of a ReLU net often sit
            z = model(lo + (hi - lo) * u)
            m = z.gather(1, y[:, None]) - z
            worst = m if worst is None else torch.min(worst, m)
    return worst


@pytest.mark.parametrize("arch, shape", ARCHS)
@pytest.mark.parametrize("eps", [0.005, 0.03])
def test_ibp_and_crown_bounds_contain_sampled_margins(arch, shape, eps):
    torch.manual_seed(3)
    model = _with_running_statistics(arch(), shape)
    x, y = _batch(shape)
    lo, hi = box(x, eps)
    pre: list = []
    m_ibp = ibp_margin_lower(model, lo, hi, y, pre)
    m_crown = crown_margin_lower(model, lo, hi, y, pre)
    worst = _sampled_worst_margins(model, lo, hi, y)
    assert (m_ibp <= worst + 1e-5).all() and (m_crown <= worst + 1e-5).all()
    assert torch.allclose(m_ibp.gather(1, y[:, None]), torch.zeros(len(y), 1))
    # ReLU pre-activation intervals contain the clean pre-activations
    _, preacts = model.forward_with_preacts(x)
    for (l, u), z in zip(pre, preacts):
        assert (l <= z + 1e-5).all() and (z <= u + 1e-5).all()


def test_batch_norm_bounds_use_the_centres_statistics_in_training_mode():
    """In training mode a BatchNorm's interval is the affine map of the box centres' batch
    statistics: the same bounds as eval mode with the running statistics set to exactly those, and
    the running statistics untouched by the bound pass."""
    torch.manual_seed(4)
    model = cifar_small_bn()
    x, y = _batch((3, 32, 32), n=8)
    lo, hi = box(x, 2 / 255)
    bns = [m for m in model if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    model.train()
    m_train = ibp_margin_lower(model, lo, hi, y)
    for bn, (mean, var) in zip(bns, before):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    # each BatchNorm's statistics from the interval centres that reach it, set as running statistics
    layers = list(model)
    with torch.no_grad():
        for i, layer in enumerate(layers):
            if isinstance(layer, torch.nn.BatchNorm2d):
                _, (mid, _) = propagate_interval(torch.nn.Sequential(*layers[:i]).eval(), lo, hi)
                layer.running_mean.copy_(mid.mean(dim=(0, 2, 3)))
                layer.running_var.copy_(mid.var(dim=(0, 2, 3), unbiased=False))
    model.eval()
    assert torch.allclose(m_train, ibp_margin_lower(model, lo, hi, y), atol=1e-5)
    assert not torch.allclose(m_train, ibp_margin_lower(_with_running_statistics(model, (3, 32, 32)), lo, hi, y))


def test_batch_norm_arch_folds_into_the_ir_and_crown_ibp_refuses_it():
    from hamverify import HamverifyError
    from hamverify.network import check_against_torch, from_torch
    model = _with_running_statistics(cifar_small_bn(), (3, 32, 32))
    net = from_torch(model, (3, 32, 32))
    assert len(net.affines) == 4 and net.affines[0].conv is not None and net.affines[1].conv is not None
    assert check_against_torch(net, model) < 1e-9
    with pytest.raises(HamverifyError, match="crown-ibp"):
        TrainConfig(dataset="cifar10", arch="cifar_small_bn", loss="crown-ibp")


def test_margin_elision_is_tighter_than_logit_intervals():
    torch.manual_seed(0)
    model = mnist_small().eval()
    x, y = _batch((1, 28, 28))
    lo, hi = box(x, 0.02)
    _, (mid, rad) = propagate_interval(model, lo, hi, last=True)
    naive = (mid - rad).gather(1, y[:, None]) - (mid + rad)
    naive.scatter_(1, y[:, None], 0.0)
    assert (ibp_margin_lower(model, lo, hi, y) >= naive - 1e-5).all()


def test_at_eps_zero_the_bounds_are_the_margins():
    torch.manual_seed(0)
    model = mnist_small().eval()
    x, y = _batch((1, 28, 28))
    z = model(x)
    exact = z.gather(1, y[:, None]) - z
    for beta in (0.0, 1.0):
        assert torch.allclose(certified_margin_lower(model, x, x, y, beta), exact, atol=1e-4)


@pytest.mark.parametrize("name", ["ibp", "crown-ibp", "sabr", "mtl-ibp"])
def test_robust_losses_bound_the_clean_ce_and_have_finite_gradients(name):
    torch.manual_seed(1)
    model = mnist_small()
    x, y = _batch((1, 28, 28), n=8)
    out = robust_loss(name, model, x, y, 0.1, beta=0.5, generator=torch.Generator().manual_seed(0))
    clean = F.cross_entropy(model(x), y)
    if name in ("ibp", "crown-ibp"):
        assert out["robust"] >= clean - 1e-6
    out["robust"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert 0 <= float(out["robust_acc"]) <= 1


def test_robust_ce_upper_bounds_the_ce_at_every_point_of_the_box():
    torch.manual_seed(2)
    model = tiny_mlp().eval()
    x, y = _batch((1, 28, 28))
    lo, hi = box(x, 0.05)
    bound = F.cross_entropy(-ibp_margin_lower(model, lo, hi, y), y, reduction="none")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(100):
            p = lo + (hi - lo) * torch.rand(lo.shape, generator=g)
            assert (F.cross_entropy(model(p), y, reduction="none") <= bound + 1e-5).all()
    assert robust_cross_entropy(ibp_margin_lower(model, lo, hi, y), y) >= F.cross_entropy(model(x), y)


def test_sabr_box_lies_inside_the_eps_ball():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 28, 28, generator=g)
    x_adv = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * 0.3).clamp(0, 1)  # may leave the ball
    for lam in (0.1, 0.5, 1.0):
        lo, hi = sabr_box(x, x_adv, 0.1, lam)
        assert (lo >= (x - 0.1).clamp(0, 1) - 1e-7).all() and (hi <= (x + 0.1).clamp(0, 1) + 1e-7).all()
        assert (hi - lo <= 2 * lam * 0.1 + 1e-7).all() and (lo <= hi).all()


def test_ibp_init_keeps_interval_widths_from_exploding():
    widths = {}
    for init in ("default", "ibp"):
        torch.manual_seed(0)
        model = initialize(cifar_small(), init)
        x, _ = _batch((3, 32, 32))
        with torch.no_grad():
            pre, _ = propagate_interval(model, *box(x, 8 / 255))
        widths[init] = [float((u - l).mean()) for l, u in pre]
    growth = {k: w[-1] / w[0] for k, w in widths.items()}
    assert growth["ibp"] < growth["default"]
    model = initialize(mnist_small(), "ibp")
    fc = model[6]
    assert abs(float(fc.weight.detach().std()) - math.sqrt(2 * math.pi) / fc.in_features) < 2e-4
    assert float(fc.bias.detach().abs().max()) == 0.0


def test_warmup_regularizers_are_zero_on_healthy_bounds_and_positive_otherwise():
    l = torch.tensor([[-1.0, 0.5], [-0.5, 1.0], [-2.0, 0.1]])
    tight_ok = [(l, l + 0.01)]
    assert float(tightness_loss(tight_ok)) == 0.0
    assert float(tightness_loss([(l, l + 50.0)])) > 0
    balanced = [(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]), torch.tensor([[-0.9, 1.1], [1.1, -0.9]]))]
    assert float(relu_balance_loss(balanced)) == 0.0
    dead = [(-torch.ones(4, 3), -torch.ones(4, 3) * 0.5)]
    assert float(relu_balance_loss(dead)) == pytest.approx(1.0)


def test_schedules_hit_their_knots():
    cfg = TrainConfig(dataset="mnist", epochs=20, eps=0.1, eps_start_ratio=0.0, eps_ramp_start=0.1,
                      eps_ramp_end=0.6, kappa_start=1.0, kappa_end=0.25, beta_start=1.0, beta_end=0.0,
                      warmup_reg=0.5)
    for t, want in ((0, 0.0), (2, 0.0), (7, 0.05), (12, 0.1), (20, 0.1)):
        assert eps_at(cfg, t) == pytest.approx(want)
    for t, want in ((0, 1.0), (2, 1.0), (7, 0.625), (12, 0.25), (20, 0.25)):
        assert kappa_at(cfg, t) == pytest.approx(want)
    assert beta_at(cfg, 2) == 1.0 and beta_at(cfg, 7) == pytest.approx(0.5) and beta_at(cfg, 13) == 0.0
    assert warmup_at(cfg, 0) == 0.5 and warmup_at(cfg, 12) == 0.0
    # the default ramp is the paper's: eps/4 until 10 %, eps at 35 %
    paper = TrainConfig(dataset="cifar10", epochs=100)
    assert eps_at(paper, 10) == pytest.approx(paper.eps / 4) and eps_at(paper, 35) == pytest.approx(paper.eps)


@pytest.mark.parametrize("bad", [{"loss": "lp"}, {"init": "xavier"}, {"kappa_end": 1.5},
                                 {"eps_ramp_start": 0.6, "eps_ramp_end": 0.5}, {"sabr_lambda": 0.0}])
def test_bad_certified_settings_are_refused(bad):
    from hamverify import HamverifyError
    with pytest.raises(HamverifyError):
        TrainConfig(dataset="mnist", **bad)


@pytest.mark.parametrize("args", [["--recipe", "ibp"], ["--recipe", "crown-ibp-hv"], ["--recipe", "sabr-hv"],
                                  ["--recipe", "mtl-ibp-hv"],
                                  ["--loss", "ibp", "--reg", "hamming", "--init", "ibp", "--kappa-end", "0.5",
                                   "--eps-ramp-start", "0", "--eps-ramp-end", "0.5", "--warmup-reg", "0.5"]])
def test_certified_recipes_train_through_the_cli(args, mnist, tmp_path):
    from conftest import shared_data_root
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train-small", "--dataset", "mnist", "--epochs", "1", "--subset", "256",
                                    "--val-count", "64", "--eval-count", "32", "--quiet", "--device", "cpu",
                                    "--data-dir", str(shared_data_root()), "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    import json
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epoch = [r for r in rows if r["epoch"] == 1][0]
    assert "robust" in epoch and 0 <= epoch["test_cert"] <= epoch["test_clean"] + 1e-9
    final = rows[-1]
    assert final["epoch"] == "final" and 0 <= final["cert"] <= 1
