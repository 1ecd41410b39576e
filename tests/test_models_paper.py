"""Appendix A's robustness networks (hamverify.models): PreActResNet18 (He et al. 2016's
pre-activation blocks) and Carlini & Wagner's MNIST CNN.  Layer shapes as the papers, every ReLU's
pre-activation for the regularizers, checkpoints, a regularized SGD step, attacks run on them, and
the verifier refuses both with one line (residual connections / max-pool are outside its IR)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from hamverify import HamverifyError
from hamverify.cli import main
from hamverify.models import (ARCHITECTURES, INPUT_SHAPE, TRAINING_ONLY_ARCHITECTURES, PreActResNet18, build_model,
                              load_checkpoint, preact_resnet18, save_checkpoint)

try:  # tests/ is on sys.path under pytest's default import mode
    from conftest import has_data, shared_data_root
except ImportError:  # tests/ as a package
    from tests.conftest import has_data, shared_data_root


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res) -> str:
    """The command's one error line (verify announces its run on stderr first); no traceback."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    assert "Traceback" not in res.output
    return errors[0]


# -- the architectures -------------------------------------------------------------------------
def test_registered_beside_the_verifiable_ones():
    assert set(TRAINING_ONLY_ARCHITECTURES) == {"preact_resnet18", "cw_mnist"}
    assert not set(TRAINING_ONLY_ARCHITECTURES) & set(ARCHITECTURES)  # ARCHITECTURES: the IR's networks
    with pytest.raises(HamverifyError) as err:
        build_model("resnet50", "cifar10")
    assert "preact_resnet18" in str(err.value) and "cw_mnist" in str(err.value) and "\n" not in str(err.value)


def test_cw_mnist_is_carlini_wagners_cnn():
    torch.manual_seed(0)
    model = build_model("cw_mnist", "mnist").eval()
    convs = [(m.in_channels, m.out_channels, m.kernel_size, m.padding) for m in model if isinstance(m, nn.Conv2d)]
    assert convs == [(1, 32, (3, 3), (0, 0)), (32, 32, (3, 3), (0, 0)), (32, 64, (3, 3), (0, 0)),
                     (64, 64, (3, 3), (0, 0))]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == 2
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [
        (1024, 200), (200, 200), (200, 10)]
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        logits, preacts = model.forward_with_preacts(x)
        assert torch.equal(logits, model(x))
    assert [p.shape[1] for p in preacts] == [32 * 26 * 26, 32 * 24 * 24, 64 * 10 * 10, 64 * 8 * 8, 200, 200]


def test_preact_resnet18_shapes_and_preacts():
    torch.manual_seed(0)
    model = build_model("preact_resnet18", "cifar10").eval()
    assert isinstance(model, PreActResNet18)
    # He et al. 2016 put a BN-ReLU after the last block (1,024 parameters more than the common variant without it).
    assert sum(p.numel() for p in model.parameters()) == 11_172_170
    assert len(model.blocks) == 8
    assert [b.conv1.stride for b in model.blocks] == [(1, 1), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert [b.shortcut is not None for b in model.blocks] == [False, False, True, False, True, False, True, False]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, preacts = model.forward_with_preacts(x)
        assert torch.allclose(logits, model(x))
    assert logits.shape == (2, 10)
    # Two ReLUs per block (before each conv; the first at the block's input resolution), then the final one.
    a, b, c, d = 64 * 32 * 32, 128 * 16 * 16, 256 * 8 * 8, 512 * 4 * 4
    assert [p.shape[1] for p in preacts] == [a, a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d]
    # The normalization is inside: the model takes [0, 1] images.
    assert torch.allclose(model.normalize(torch.full((1, 3, 1, 1), 0.4914))[0, 0], torch.zeros(1, 1), atol=1e-6)
    # A narrower network for smoke runs, the same structure.
    small = preact_resnet18("cifar10", width=8)
    assert small.linear.in_features == 64 and len(small.forward_with_preacts(x)[1]) == 17
    with pytest.raises(HamverifyError, match="residual connections"):
        list(model)  # interval bounds walk layers: one clear error instead of "not iterable"


def test_checkpoints_round_trip(tmp_path):
    for arch, dataset in (("preact_resnet18", "cifar10"), ("cw_mnist", "mnist")):
        torch.manual_seed(0)
        model = build_model(arch, dataset)
        model.train()
        with torch.no_grad():  # move BatchNorm's running statistics away from their initial values
            model(torch.rand(4, *INPUT_SHAPE[dataset]))
        model.eval()
        path = tmp_path / f"{arch}.pt"
        save_checkpoint(path, model, arch=arch, dataset=dataset, eps=0.1)
        loaded, meta = load_checkpoint(path)
        assert meta["arch"] == arch
        x = torch.rand(2, *INPUT_SHAPE[dataset])
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_a_regularized_sgd_step_on_preact_resnet18():
    from hamverify.train import TrainConfig, regularized_loss
    cfg = TrainConfig.from_sources(recipe="paper-sgd", cli_values={"arch": "preact_resnet18", "batch_size": 4})
    assert cfg.reg == "hamming" and cfg.loss == "ce" and cfg.optimizer == "sgd"
    torch.manual_seed(0)
    model = build_model(cfg.arch, cfg.dataset).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=cfg.weight_decay)
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4)
    gen = torch.Generator().manual_seed(0)
    loss, terms = regularized_loss(model, cfg, x, y, 8 / 255, 1.0, gen)
    assert torch.isfinite(loss) and float(terms["lh"].detach()) > 0  # the Hamming term sees all 17 ReLU layers
    before = model.linear.weight.detach().clone()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.linear.weight)


# -- the commands ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paper_models")
    out = {}
    for arch, dataset, eps in (("preact_resnet18", "cifar10", 8 / 255), ("cw_mnist", "mnist", 0.1)):
        torch.manual_seed(0)
        out[arch] = folder / f"{arch}.pt"
        save_checkpoint(out[arch], build_model(arch, dataset).eval(), arch=arch, dataset=dataset, eps=eps)
    return out


@pytest.fixture(scope="module")
def root():
    r = shared_data_root()
    if not (has_data(r, "cifar10") and has_data(r, "mnist")):
        pytest.skip(f"CIFAR-10 / MNIST not found under {r}")
    return r


@pytest.mark.parametrize("arch, what", [("preact_resnet18", "PreActResNet18"), ("cw_mnist", "MaxPool2d")])
def test_verify_refuses_with_one_line(saved, root, tmp_path, arch, what):
    line = one_error_line(invoke("verify", "--model", saved[arch], "--count", 1, "--data-dir", root,
                                 "--results", tmp_path / "v.jsonl"))
    assert "unsupported" in line and what in line


@pytest.mark.parametrize("arch, attack", [("preact_resnet18", "pgd"), ("cw_mnist", "stadv")])
def test_attacks_run_on_them(saved, root, tmp_path, arch, attack):
    out = tmp_path / "a.json"
    res = invoke("attack", "--model", saved[arch], "--attack", attack, "--count", 2, "--steps", 2,
                 *(["--restarts", 1] if attack == "pgd" else []), "--out", out, "--data-dir", root, "--quiet")
    assert res.exit_code == 0, (res.output, res.exception)
    assert json.loads(out.read_text())["count"] == 2


@pytest.mark.parametrize("arch, dataset", [("preact_resnet18", "cifar10"), ("cw_mnist", "mnist")])
def test_train_small_runs(root, tmp_path, arch, dataset):
    config = tmp_path / "tiny.toml"
    config.write_text("eval_pgd_steps = 1\n")
    res = invoke("train-small", "--recipe", "paper-sgd", "--arch", arch, "--dataset", dataset, "--subset", 32,
                 "--batch-size", 16, "--epochs", 1, "--eval-count", 4, "--config", config,
                 "--out", tmp_path / "m.pt", "--data-dir", root, "--quiet")
    text = f"{res.output} {res.exception}"
    assert res.exit_code == 0, text
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["arch"] == arch


def test_bound_based_training_is_refused_on_them(root, tmp_path):
    """The certified losses need interval bounds, which a ResNet / max-pool net does not have: one line."""
    res = invoke("train-small", "--arch", "cw_mnist", "--dataset", "mnist", "--epochs", 1, "--subset", 32,
                 "--out", tmp_path / "m.pt", "--data-dir", root, "--quiet")  # the default recipe is certified
    assert res.exit_code == 2 and "for training and attacks only" in res.output
    assert len(res.output.strip().splitlines()) == 1
