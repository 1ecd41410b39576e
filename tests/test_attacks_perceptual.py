"""The perceptual attacks of the paper's Table 1 (hamverify.attacks.stadv / jpeg / recolor / lpa), each
against its paper's qualitative behaviour on an undefended tiny CIFAR-10 CNN: the attack drops the
accuracy far below clean and far below random perturbations of the same budget, its points lie in
[0, 1] and inside its own threat model (StAdv's flow within the bound, JPEG's perturbation in the
quantized coefficients' l_inf ball, ReColorAdv one bounded colour function per image, LPA within
its self-bound LPIPS ball); and the `hamverify attack --attack stadv|jpeg|recolor|lpa` command end
to end, with one-line errors."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from hamverify import HamverifyError
from hamverify.attacks import LPA, JPEGAttack, ReColorAdv, StAdv
from hamverify.attacks.jpeg import JPEGCodec
from hamverify.attacks.lpa import feature_distance, self_features
from hamverify.attacks.recolor import cieluv_to_rgb, rgb_to_cieluv
from hamverify.attacks.stadv import apply_flow, flow_loss
from hamverify.cli import main
from hamverify.curves import PERCEPTUAL_BOUNDS, make_attack
from hamverify.models import NORMALIZATION, Normalize, ReLUNet, save_checkpoint, tiny_mlp

try:  # tests/ is on sys.path under pytest's default import mode
    from conftest import has_data, shared_data_root
except ImportError:  # tests/ as a package
    from tests.conftest import has_data, shared_data_root

N_TEST = 256


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def root():
    r = shared_data_root()
    if not has_data(r, "cifar10"):
        pytest.skip(f"CIFAR-10 not found under {r}")
    return r


@pytest.fixture(scope="module")
def net(root):
    """A small CNN trained for 4 epochs of plain CE on 2,000 CIFAR-10 images (about a second), the
    first 256 test images and its clean accuracy on them."""
    from hamverify.data import load_dataset, to_tensor
    x, y = load_dataset("cifar10", "train", root)
    xt, yt = load_dataset("cifar10", "test", root)
    x, y = to_tensor(x[:2000]), torch.as_tensor(y[:2000], dtype=torch.long)
    xt, yt = to_tensor(xt[:N_TEST]), torch.as_tensor(yt[:N_TEST], dtype=torch.long)
    torch.manual_seed(0)
    model = ReLUNet(Normalize(*NORMALIZATION["cifar10"]), nn.Conv2d(3, 16, 4, 2, 1), nn.ReLU(),
                    nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2048, 64), nn.ReLU(),
                    nn.Linear(64, 10))
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
    clean = _accuracy(model, xt, yt)
    assert clean > 0.25  # well above chance (0.1): there is something to break
    return model, xt, yt, clean


def _qualitative(clean: float, random: float, adv: float):
    """The papers' behaviour: random perturbations of the budget barely hurt, the attack does."""
    print(f"clean {clean:.3f}  random {random:.3f}  attack {adv:.3f}")
    assert random > clean - 0.06, (clean, random)
    assert adv < 0.5 * clean, (clean, adv)
    assert adv < random - 0.15, (random, adv)


# -- StAdv -------------------------------------------------------------------------------------
def test_zero_flow_is_the_identity():
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(apply_flow(x, torch.zeros(3, 2, 32, 32)), x, atol=1e-6)
    # A flow of one pixel (2 / side in normalized units) to the right reads the right neighbour.
    flow = torch.zeros(3, 2, 32, 32)
    flow[:, 0] = 2 / 32
    assert torch.allclose(apply_flow(x, flow)[..., :-1], x[..., 1:], atol=1e-5)
    # A constant flow has no variation: the loss is the floor sqrt(delta) of each neighbour pair.
    assert torch.allclose(flow_loss(torch.full((1, 2, 8, 8), 0.3)), flow_loss(torch.zeros(1, 2, 8, 8)))
    assert float(flow_loss(torch.zeros(1, 2, 8, 8))) < 0.05


def test_stadv_breaks_an_undefended_net_within_its_bound(net):
    model, x, y, clean = net
    attack = StAdv(bound=0.05, steps=50)
    x_adv = attack(model, x, y)
    flow = attack.last_flow
    assert float(flow.abs().max()) <= 0.05 + 1e-6
    assert torch.allclose(attack.last_distance, flow.abs().flatten(1).amax(1))
    assert torch.allclose(x_adv, apply_flow(x, flow), atol=1e-6)  # the point is the flow's resampling
    assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    g = torch.Generator().manual_seed(1)
    random_flow = (torch.rand(flow.shape, generator=g) * 2 - 1) * 0.05
    _qualitative(clean, _accuracy(model, apply_flow(x, random_flow), y), _accuracy(model, x_adv, y))


def test_stadv_lbfgs_keeps_the_bound(net):
    model, x, y, clean = net
    attack = StAdv(bound=0.02, steps=8, optimizer="lbfgs")
    x_adv = attack(model, x[:32], y[:32])
    assert float(attack.last_flow.abs().max()) <= 0.02 + 1e-6
    assert _accuracy(model, x_adv, y[:32]) <= _accuracy(model, x[:32], y[:32])
    with pytest.raises(HamverifyError):
        StAdv(optimizer="sgd")


# -- JPEG --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, sub", [((3, 32, 32), True), ((3, 32, 32), False), ((1, 32, 32), True)])
def test_jpeg_codec_round_trip(shape, sub):
    codec = JPEGCodec(shape, sub)
    g = torch.Generator().manual_seed(0)
    deltas = [torch.randn(s, generator=g, dtype=torch.float64) for s in codec.delta_shapes(2)]
    back = codec.encode_difference(codec.decode(deltas))
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(deltas, back))
    # One quantized step of the DC coefficient of the luminance moves its 8x8 block by 16/8/255 in Y.
    one = [torch.zeros(s, dtype=torch.float64) for s in codec.delta_shapes(1)]
    one[0][0, 0, 0, 0, 0] = 1
    pix = codec.decode(one)[0]
    assert torch.allclose(pix[:, :8, :8], torch.full((shape[0], 8, 8), 2 / 255, dtype=torch.float64))
    assert float(pix[:, 8:, :].abs().max()) == 0


def test_jpeg_breaks_an_undefended_net_inside_the_coefficient_ball(net):
    model, x, y, clean = net
    attack = JPEGAttack(eps=0.25, steps=50, generator=torch.Generator().manual_seed(0))
    x_adv = attack(model, x, y)
    bound = attack.coefficient_bound
    assert bound == 0.125
    assert all(float(d.abs().max()) <= bound + 1e-6 for d in attack.last_delta)
    codec = JPEGCodec(x.shape[1:])
    assert torch.allclose(x_adv, (x + codec.decode(attack.last_delta)).clamp(0, 1), atol=1e-6)
    assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    # Read the perturbation back from the pixels with the encoder (where nothing was clipped).
    unclipped = ((x_adv > 0) & (x_adv < 1)).flatten(1).all(1)
    if unclipped.any():
        back = codec.encode_difference((x_adv - x)[unclipped].double())
        assert max(float(b.abs().max()) for b in back) <= bound + 1e-4
    g = torch.Generator().manual_seed(1)
    random = [(torch.rand(s, generator=g) * 2 - 1) * bound for s in codec.delta_shapes(len(x))]
    _qualitative(clean, _accuracy(model, (x + codec.decode(random)).clamp(0, 1), y), _accuracy(model, x_adv, y))


def test_jpeg_on_grey_28x28_images():
    torch.manual_seed(0)
    model = tiny_mlp("mnist").eval()
    x = torch.rand(4, 1, 28, 28)
    y = model(x).argmax(1)
    attack = JPEGAttack(eps=1.0, steps=3, generator=torch.Generator().manual_seed(0))
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    assert [tuple(d.shape) for d in attack.last_delta] == [(4, 4, 4, 8, 8)]  # padded to 32 x 32
    assert float(attack.last_distance.max()) <= 0.5 + 1e-6


# -- ReColorAdv --------------------------------------------------------------------------------
def test_cieluv_round_trip_and_zero_function():
    x = torch.rand(2, 3, 16, 16)
    x[0, :, 0, 0] = 0  # black: L = 0
    assert float((cieluv_to_rgb(rgb_to_cieluv(x)) - x).abs().max()) < 1e-4
    attack = ReColorAdv()
    grid = torch.zeros(attack._grid_shape(x))
    assert torch.equal(attack.recolor(x, grid), x)


def test_recolor_breaks_an_undefended_net_with_one_bounded_colour_function(net):
    model, x, y, clean = net
    x, y = x[:64].clone(), y[:64]
    x[:, :, 5, 5] = x[:, :, 0, 0]  # two pixels of one colour must stay of one colour
    clean = _accuracy(model, x, y)
    attack = ReColorAdv(bound=0.06, steps=40, lr=0.002)
    x_adv = attack(model, x, y)
    assert float(attack.last_distance.max()) <= 0.06 + 1e-6
    assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    assert torch.allclose(x_adv[:, :, 5, 5], x_adv[:, :, 0, 0], atol=1e-6)  # a function of the colour
    g = torch.Generator().manual_seed(1)
    random = (torch.rand(attack._grid_shape(x), generator=g) * 2 - 1) * 0.06
    _qualitative(clean, _accuracy(model, attack.recolor(x, random), y), _accuracy(model, x_adv, y))


def test_recolor_grey_images():
    torch.manual_seed(0)
    model = tiny_mlp("mnist").eval()
    x = torch.rand(3, 1, 28, 28)
    y = model(x).argmax(1)
    attack = ReColorAdv(bound=0.1, steps=3)
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and float((x_adv - x).abs().max()) <= 0.1 + 1e-6


# -- LPA, self-bound ---------------------------------------------------------------------------
def test_lpa_breaks_an_undefended_net_inside_its_self_bound_lpips_ball(net):
    model, x, y, _ = net
    x, y = x[:128], y[:128]
    clean = _accuracy(model, x, y)
    attack = LPA(bound=0.5, steps=20, generator=torch.Generator().manual_seed(0))
    x_adv = attack(model, x, y)
    feats = self_features(model)
    with torch.no_grad():
        f0 = feats(x)
        dist = feature_distance(feats(x_adv), f0)
    assert float(dist.max()) <= 0.5 + 1e-5 and torch.allclose(dist, attack.last_distance, atol=1e-6)
    assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    assert "self-bound" in attack.describe() and "self-bound" in attack.implementation()["lpips_network"]
    # Random directions scaled (by bisection) to the same LPIPS distance.
    g = torch.Generator().manual_seed(1)
    r = torch.randn(x.shape, generator=g)
    r = r / r.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    lo, hi = torch.zeros(len(x)), torch.full((len(x),), 60.0)
    with torch.no_grad():
        for _ in range(20):
            mid = (lo + hi) / 2
            inside = feature_distance(feats((x + mid.view(-1, 1, 1, 1) * r).clamp(0, 1)), f0) <= 0.5
            lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    _qualitative(clean, _accuracy(model, (x + lo.view(-1, 1, 1, 1) * r).clamp(0, 1), y), _accuracy(model, x_adv, y))


def test_lpa_needs_hidden_activations():
    onnx_like = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    with pytest.raises(HamverifyError, match="forward_with_preacts"):
        LPA(steps=1)(onnx_like, torch.rand(2, 3, 2, 2), torch.tensor([0, 1]))


# -- the attack command ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("perceptual") / "tiny.pt"
    save_checkpoint(path, tiny_mlp("cifar10"), arch="tiny_mlp", dataset="cifar10", eps=8 / 255)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize("attack", ["stadv", "jpeg", "recolor", "lpa"])
def test_attack_command_runs_each_perceptual_attack(checkpoint, root, tmp_path, attack):
    out = tmp_path / "r.json"
    res = invoke("attack", "--model", checkpoint, "--attack", attack, "--count", 6, "--steps", 3,
                 "--batch-size", 4, "--out", out, "--data-dir", root, "--quiet")
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["attack"] == attack and result["eps"] == PERCEPTUAL_BOUNDS[attack]
    assert result["implementation"]["name"] == "hamverify"
    assert "hamverify" in result["description"] and result["description"] in res.stdout
    assert f"{attack} bound" in res.stdout
    assert result["robust_accuracy"] <= result["clean_accuracy"]
    assert "distance" in result and len(result["inputs"]) == 6
    for row in result["inputs"]:
        if row["adv_distance"] is not None:  # in the attack's own measure, inside its bound
            assert row["adv_distance"] <= PERCEPTUAL_BOUNDS[attack] + 1e-6


def test_attack_command_errors(checkpoint, root):
    line = one_error_line(invoke("attack", "--model", checkpoint, "--attack", "nosuch", "--data-dir", root))
    assert all(name in line for name in ("stadv", "jpeg", "recolor", "lpa", "autoattack"))
    assert "l_inf" in one_error_line(invoke("attack", "--model", checkpoint, "--attack", "stadv", "--norm", "l2",
                                            "--data-dir", root))
    assert "--restarts" in one_error_line(invoke("attack", "--model", checkpoint, "--attack", "jpeg",
                                                 "--restarts", 2, "--data-dir", root))
    one_error_line(invoke("attack", "--model", checkpoint, "--attack", "recolor", "--eps", "-1", "--data-dir", root))


def test_make_attack_builds_each_with_its_bound():
    assert isinstance(make_attack("stadv", "linf", 0.05), StAdv)
    jpeg = make_attack("jpeg", "linf", 0.5, seed=3, steps=7)
    assert isinstance(jpeg, JPEGAttack) and jpeg.steps == 7 and jpeg.coefficient_bound == 0.25
    assert isinstance(make_attack("recolor", "linf", 0.06), ReColorAdv)
    lpa = make_attack("lpa", "linf", 0.5)
    assert isinstance(lpa, LPA) and lpa.steps == 40
