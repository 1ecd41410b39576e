"""PPGD (hamverify.attacks.ppgd, Laidlaw et al. 2021's perceptual projected gradient descent) with the
self-bound LPIPS distance of lpa.py: on an undefended tiny CIFAR-10 CNN it breaks nearly every input
at a large bound, far more than random directions of the same LPIPS length; every point lies in
[0, 1] and inside its LPIPS ball (recomputed here); a seed gives the same points; and
`hamverify attack --attack ppgd` runs end to end."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hamverify import HamverifyError
from hamverify.attacks.lpa import checkpoint_features, feature_distance, self_features
from hamverify.attacks.ppgd import PPGD
from hamverify.curves import make_attack
from hamverify.models import save_checkpoint, tiny_mlp

try:  # tests/ is on sys.path under pytest's default import mode
    from test_attacks_perceptual import _accuracy, invoke, net, root  # noqa: F401  (fixtures)
except ImportError:  # tests/ as a package
    from tests.test_attacks_perceptual import _accuracy, invoke, net, root  # noqa: F401


def _distance(model, x, x_adv):
    feats = self_features(model)
    with torch.no_grad():
        return feature_distance(feats(x_adv), feats(x))


def test_ppgd_breaks_an_undefended_net_inside_its_self_bound_ball(net):
    model, x, y, _ = net
    x, y = x[:64], y[:64]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    attack = PPGD(bound=0.5, steps=10, generator=torch.Generator().manual_seed(0))
    x_adv = attack(model, x[correct], y[correct])
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y[correct]
    print(f"PPGD broke {int(fooled.sum())}/{int(correct.sum())} correctly classified inputs")
    assert float(fooled.float().mean()) >= 0.9
    dist = _distance(model, x[correct], x_adv)
    assert float(dist.max()) <= 0.5 + 1e-5 and torch.allclose(dist, attack.last_distance, atol=1e-5)
    assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    impl = attack.implementation()
    assert impl["name"] == "hamverify" and "self-bound" in impl["lpips_network"] and "PPGD" in attack.describe()


def test_ppgd_at_a_small_bound_beats_random_directions_of_the_same_length(net):
    model, x, y, clean = net
    x, y = x[:64], y[:64]
    clean = _accuracy(model, x, y)
    bound = 0.1
    x_adv = PPGD(bound=bound, steps=10, generator=torch.Generator().manual_seed(0))(model, x, y)
    assert float(_distance(model, x, x_adv).max()) <= bound + 1e-5
    # Random directions scaled (by bisection) to the same self-bound LPIPS distance.
    feats = self_features(model)
    g = torch.Generator().manual_seed(1)
    r = torch.randn(x.shape, generator=g)
    r = r / r.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    lo, hi = torch.zeros(len(x)), torch.full((len(x),), 60.0)
    with torch.no_grad():
        f0 = feats(x)
        for _ in range(20):
            mid = (lo + hi) / 2
            inside = feature_distance(feats((x + mid.view(-1, 1, 1, 1) * r).clamp(0, 1)), f0) <= bound
            lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    random = _accuracy(model, (x + lo.view(-1, 1, 1, 1) * r).clamp(0, 1), y)
    adv = _accuracy(model, x_adv, y)
    print(f"clean {clean:.3f}  random {random:.3f}  PPGD {adv:.3f}")
    assert adv < random - 0.1 and adv < 0.75 * clean


def test_ppgd_is_deterministic_under_a_seed(net):
    model, x, y, _ = net
    x, y = x[:16], y[:16]
    runs = [PPGD(bound=0.2, steps=3, generator=torch.Generator().manual_seed(s))(model, x, y) for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])  # the seed drives the random start


def test_ppgd_bound_zero_and_bad_settings():
    model = tiny_mlp("cifar10").eval()
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    attack = PPGD(bound=0.0)
    assert torch.equal(attack(model, x, y), x) and float(attack.last_distance.max()) == 0
    for kwargs in ({"bound": -1}, {"steps": 0}, {"cg_steps": 0}, {"step_size": 0}):
        with pytest.raises(HamverifyError):
            PPGD(**kwargs)
    onnx_like = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    with pytest.raises(HamverifyError, match="forward_with_preacts"):
        PPGD(steps=1)(onnx_like, torch.rand(2, 3, 2, 2), torch.tensor([0, 1]))


def test_make_attack_ppgd_and_a_local_lpips_network(tmp_path):
    ppgd = make_attack("ppgd", "linf", 0.5)
    assert isinstance(ppgd, PPGD) and ppgd.steps == 40 and "self-bound" in ppgd.lpips_network
    torch.manual_seed(1)
    other = tmp_path / "lpips.pt"
    save_checkpoint(other, tiny_mlp("cifar10"), arch="tiny_mlp", dataset="cifar10", eps=8 / 255)
    local = make_attack("ppgd", "linf", 0.5, steps=2, lpips_model=other)
    assert str(other) in local.lpips_network and "local weights file" in local.implementation()["lpips_network"]
    model = tiny_mlp("cifar10").eval()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    x_adv = local(model, x, y)
    feats = checkpoint_features(other)
    with torch.no_grad():
        assert float(feature_distance(feats(x_adv), feats(x)).max()) <= 0.5 + 1e-5
    with pytest.raises(HamverifyError, match="not found"):
        make_attack("lpa", "linf", 0.5, lpips_model=tmp_path / "none.pt")
    with pytest.raises(HamverifyError, match="applies to ppgd and lpa only"):
        make_attack("pgd", "linf", 0.1, lpips_model=other)


def test_attack_command_runs_ppgd(root, tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_mlp("cifar10"), arch="tiny_mlp", dataset="cifar10", eps=8 / 255)
    out = tmp_path / "r.json"
    res = invoke("attack", "--model", ckpt, "--attack", "ppgd", "--count", 6, "--steps", 3, "--out", out,
                 "--data-dir", root, "--quiet")
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["attack"] == "ppgd" and result["eps"] == 0.5 and result["rejected_points"] == 0
    assert "self-bound" in result["implementation"]["lpips_network"] and "LPIPS network: self-bound" in res.stdout
    for row in result["inputs"]:
        if row["adv_distance"] is not None:
            assert row["adv_distance"] <= 0.5 + 1e-5
