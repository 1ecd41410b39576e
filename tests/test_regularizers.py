"""The regularizers of docs/METHOD.md §3: corners, H_alpha, L_H, L_S, interval bounds, RS loss."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hamverify.models import build_model, tiny_mlp
from hamverify.regularizers import (STABILITY_FORMS, hamming_loss, interval_preact_bounds, l1_penalty,
                                    relaxed_hamming, rs_loss, sample_corners, stability_loss, unstable_counts_ia)
from hamverify.train import TrainConfig, regularized_loss




def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _away_from_zero(shape, seed, margin=0.01):
    v = torch.randn(shape, generator=_gen(seed))
    return torch.where(v >= 0, 1.0, -1.0) * (margin + v.abs())


# ------------------------------------------------------------------------------------------ relaxed Hamming


def test_relaxed_hamming_tends_to_pattern_distance():
    z, y = _away_from_zero((64, 50), 1), _away_from_zero((64, 50), 2)
    exact = ((z > 0) != (y > 0)).float() * 2  # |tanh - tanh| -> |sign - sign| = 2 on a flip
    assert torch.equal(relaxed_hamming(z, y, alpha=1e4), exact)
    # With the default a = 8: a flip costs more than 2*tanh(8*0.01), an unflipped pair less than 1.
    soft = relaxed_hamming(z, y)
    assert (soft[exact == 2] > 2 * math.tanh(0.08) - 1e-6).all() and (soft <= 2).all()
    assert (soft[exact == 0] < 1).all()
    # Monotone in alpha on a flipped pair.
    vals = [relaxed_hamming(torch.tensor(0.05), torch.tensor(-0.05), a).item() for a in (1, 8, 64, 1e4)]
    assert vals == sorted(vals) and vals[-1] == 2.0


def test_relaxed_hamming_zero_and_symmetric():
    z = torch.randn(10, 30, generator=_gen(3))
    assert torch.equal(relaxed_hamming(z, z.clone()), torch.zeros_like(z))
    y = torch.randn(10, 30, generator=_gen(4))
    assert torch.equal(relaxed_hamming(z, y), relaxed_hamming(y, z))
    assert torch.allclose(relaxed_hamming(z, y, 8.0), (torch.tanh(8 * z) - torch.tanh(8 * y)).abs())


def test_hamming_loss_formula_at_large_alpha():
    """L_H = mean_i (1/n) sum_j (mean_k H(z+, z-))^2; at large alpha H = 2 * [pattern differs]."""
    widths = [12, 5, 30]
    zp = [_away_from_zero((4, w), 10 + j) for j, w in enumerate(widths)]
    zm = [_away_from_zero((4, w), 20 + j) for j, w in enumerate(widths)]
    frac = torch.stack([((a > 0) != (b > 0)).float().mean(1) for a, b in zip(zp, zm)], dim=1)  # (N, n)
    expected = ((2 * frac) ** 2).mean(1).mean()
    assert hamming_loss(zp, zm, alpha=1e4).item() == pytest.approx(expected.item(), rel=1e-6)
    assert hamming_loss(zp, [z.clone() for z in zp]).item() == 0.0
    # Bounded: each per-layer mean of H is at most 2.
    assert 0 <= hamming_loss(zp, zm).item() <= 4


# ------------------------------------------------------------------------------------------ stability term


def test_stability_forms():
    lp, lm = torch.randn(16, 10, generator=_gen(5)), torch.randn(16, 10, generator=_gen(6))
    vals = {f: stability_loss(lp, lm, f).item() for f in STABILITY_FORMS}
    assert vals["softmax-sum"] == pytest.approx(16 * vals["softmax-mean"], rel=1e-6)
    assert vals["logits-sum"] == pytest.approx(16 * vals["logits-mean"], rel=1e-6)
    assert vals["logits-mean"] == pytest.approx(((lp - lm) ** 2).sum(1).mean().item(), rel=1e-6)
    sp, sm = lp.softmax(1), lm.softmax(1)
    assert vals["softmax-mean"] == pytest.approx(((sp - sm) ** 2).sum(1).mean().item(), rel=1e-6)
    assert 0 < vals["softmax-mean"] <= 2  # ||p - q||^2 <= 2 for probability vectors
    assert stability_loss(lp, lm).item() == vals["softmax-mean"]  # docs/METHOD.md's choice is the default
    # Shift invariance of the softmax forms (softmax ignores a constant added to all logits).
    assert stability_loss(lp + 3.0, lm - 1.0, "softmax-mean").item() == pytest.approx(vals["softmax-mean"], rel=1e-5)
    for f in STABILITY_FORMS:
        assert stability_loss(lp, lp.clone(), f).item() == 0.0
    with pytest.raises(ValueError):
        stability_loss(lp, lm, "softmax-median")


# ------------------------------------------------------------------------------------------ constant network


def _input_ignoring_net():
    """All weights 0, biases positive: every pre-activation is a positive constant, logits constant."""
    model = tiny_mlp("mnist", hidden=6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.zeros_like(p) if name.endswith("weight") else torch.rand(p.shape, generator=_gen(7)) + 0.1)
    return model


def test_losses_vanish_on_input_ignoring_network():
    model = _input_ignoring_net()
    x = torch.rand(8, 1, 28, 28, generator=_gen(8))
    xp, xm = sample_corners(x, 0.3, _gen(9))
    assert not torch.equal(xp, xm)
    _, pp = model.forward_with_preacts(xp)
    _, pm = model.forward_with_preacts(xm)
    lp, lm = model(xp), model(xm)
    assert hamming_loss(pp, pm).item() == 0.0
    for f in STABILITY_FORMS:
        assert stability_loss(lp, lm, f).item() == 0.0
    # ... which is the collapse trap of docs/METHOD.md §4: the regularized loss equals the CE alone.
    cfg = TrainConfig(dataset="mnist", arch="tiny_mlp")
    y = torch.randint(0, 10, (8,), generator=_gen(10))
    loss, terms = regularized_loss(model, cfg, x, y, 0.3, 1.0, _gen(11))
    assert terms["lh"].item() == 0.0 and terms["ls"].item() == 0.0
    assert loss.item() == pytest.approx(terms["ce"].item())


def test_losses_vanish_when_corners_coincide():
    torch.manual_seed(0)
    model = build_model("mnist_small", "mnist")
    x = torch.rand(4, 1, 28, 28, generator=_gen(12))
    xp, xm = sample_corners(x, 0.0, _gen(13))
    assert torch.equal(xp, x) and torch.equal(xm, x)
    lo, pre = model.forward_with_preacts(x)
    assert hamming_loss(pre, [p.clone() for p in pre]).item() == 0.0
    assert stability_loss(lo, lo.clone(), "logits-mean").item() == 0.0


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("reg", ["hamming", "rs", "none"])
def test_regularized_loss_gradients_finite(reg):
    torch.manual_seed(0)
    model = build_model("cifar_small", "cifar10")
    cfg = TrainConfig(reg=reg, adv_steps=2, stability_form="logits-mean", corner_ce=0.5 if reg == "hamming" else 0.0)
    x = torch.rand(6, 3, 32, 32, generator=_gen(14))
    y = torch.randint(0, 10, (6,), generator=_gen(15))
    loss, terms = regularized_loss(model, cfg, x, y, 8 / 255, 3.0, _gen(16))
    assert math.isfinite(loss.item())
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    assert bool(terms["dead"]) is False
    if reg == "hamming":
        gs, gh = cfg.gamma_s * 3.0, cfg.gamma_h * 3.0
        assert terms["gs_ls"].item() == pytest.approx(gs * terms["ls"].item(), rel=1e-5)
        assert terms["gh_lh"].item() == pytest.approx(gh * terms["lh"].item(), rel=1e-5)
        assert loss.item() == pytest.approx((terms["ce"] + terms["gs_ls"] + terms["gh_lh"]).item(), rel=1e-5)
    if reg == "rs":
        assert loss.item() == pytest.approx((terms["ce"] + cfg.rs_weight * terms["rs"] + cfg.l1 * terms["l1"]).item(),
                                            rel=1e-5)


def test_hamming_gradient_flows_through_both_corners():
    torch.manual_seed(1)
    model = build_model("mnist_small", "mnist")
    x = torch.rand(4, 1, 28, 28, generator=_gen(17))
    xp, xm = sample_corners(x, 0.1, _gen(18))
    xp.requires_grad_(True)
    xm.requires_grad_(True)
    _, pre = model.forward_with_preacts(torch.cat([xp, xm]))
    hamming_loss([p[:4] for p in pre], [p[4:] for p in pre]).backward()
    assert xp.grad.abs().sum() > 0 and xm.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ corners


def test_sample_corners_exact_and_clipped():
    # Interior points on a dyadic grid: x ± 1/4 is exact in floating point, so the offset is exactly ±eps.
    eps = 0.25
    x = torch.randint(2, 7, (16, 3, 8, 8), generator=_gen(19)).double() / 8  # in [0.25, 0.75]
    xp, xm = sample_corners(x, eps, _gen(20))
    assert torch.equal((xp - x).abs(), torch.full_like(x, eps))
    assert torch.equal(xp - x, x - xm)  # opposite corners
    frac_plus = ((xp - x) > 0).double().mean().item()
    assert 0.45 < frac_plus < 0.55  # fair signs
    # At the border the corners are clipped into [0, 1]; unclipped coordinates still sit at ±eps.
    x = torch.rand(64, 1, 28, 28, generator=_gen(21))
    xp, xm = sample_corners(x, 0.3, _gen(22))
    for c in (xp, xm):
        assert c.min() >= 0 and c.max() <= 1
        assert ((c - x).abs() <= 0.3 + 1e-6).all()
    inside = (x >= 0.3) & (x <= 0.7)
    assert torch.allclose((xp - x).abs()[inside], torch.tensor(0.3), atol=1e-6)
    assert torch.allclose((xp - x)[inside], (x - xm)[inside], atol=1e-6)
    # Seeded: same generator seed, same corners; another seed, other corners.
    a, b = sample_corners(x, 0.3, _gen(22)), sample_corners(x, 0.3, _gen(23))
    assert torch.equal(a[0], xp) and not torch.equal(b[0], xp)


# ------------------------------------------------------------------------------------------ interval bounds


@pytest.mark.parametrize("arch,dataset,shape,eps", [("cifar_small", "cifar10", (3, 32, 32), 8 / 255),
                                                    ("mnist_small", "mnist", (1, 28, 28), 0.1),
                                                    ("tiny_mlp", "mnist", (1, 28, 28), 0.3)])
def test_interval_bounds_are_sound(arch, dataset, shape, eps):
    torch.manual_seed(2)
    model = build_model(arch, dataset).eval()
    x = torch.rand(3, *shape, generator=_gen(24))
    x[0, :, :4] = 0.0  # some pixels at the border of [0, 1]
    x[1, :, :4] = 1.0
    bounds = interval_preact_bounds(model, x, eps)
    assert len(bounds) == len(model.forward_with_preacts(x)[1])
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    g = _gen(25)
    samples = [lo, hi, x]
    for _ in range(6):
        samples.append(sample_corners(x, eps, g)[0])
        samples.append(lo + (hi - lo) * torch.rand(x.shape, generator=g))
    with torch.no_grad():
        for s in samples:
            _, pre = model.forward_with_preacts(s)
            for (l, u), z in zip(bounds, pre):
                assert (l <= u).all()
                assert (z >= l - 1e-4).all() and (z <= u + 1e-4).all()
    # eps = 0: the bounds collapse onto the pre-activations, and nothing is unstable.
    with torch.no_grad():
        b0 = interval_preact_bounds(model, x, 0.0)
        _, pre = model.forward_with_preacts(x)
    for (l, u), z in zip(b0, pre):
        assert torch.allclose(l, z, atol=1e-4) and torch.allclose(u, z, atol=1e-4)
    assert unstable_counts_ia(model, x, 0.0) == [0.0] * len(pre)
    # Wider balls give wider (nested) bounds, and at least as many unstable ReLUs.
    wide = interval_preact_bounds(model, x, 2 * eps)
    for (l, u), (L, U) in zip(bounds, wide):
        assert (L <= l + 1e-5).all() and (U >= u - 1e-5).all()
    assert all(a <= b for a, b in zip(unstable_counts_ia(model, x, eps), unstable_counts_ia(model, x, 2 * eps)))


def test_interval_bounds_refuse_unknown_layers():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Sigmoid(), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match="Sigmoid"):
        interval_preact_bounds(model, torch.rand(1, 4), 0.1)


def test_rs_loss_and_l1():
    torch.manual_seed(3)
    model = build_model("mnist_small", "mnist")
    x = torch.rand(4, 1, 28, 28, generator=_gen(26))
    rs = rs_loss(model, x, 0.1)
    n_layers = len(interval_preact_bounds(model, x, 0.1))
    assert -n_layers <= rs.item() <= n_layers
    rs.backward()
    # The output layer has no ReLU after it, so no interval term reaches it.
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert model[1].weight.grad.abs().sum() > 0
    expected = sum(p.abs().sum().item() for n, p in model.named_parameters() if n.endswith("weight"))
    assert l1_penalty(model).item() == pytest.approx(expected, rel=1e-6)
    # At eps = 0 every l*u = z^2 >= 0, so each layer's term is <= -tanh(1).
    assert rs_loss(model, x, 0.0).item() <= -n_layers * math.tanh(1) + 1e-5
