"""Architectures (docs/METHOD.md §2), forward_with_preacts, and checkpoints with metadata."""
from __future__ import annotations

import datetime as dt

import pytest
import torch
from torch import nn

import hamverify
from hamverify import HamverifyError
from hamverify.models import (ARCHITECTURES, CHECKPOINT_FORMAT, DEFAULT_ARCH, INPUT_SHAPE, NORMALIZATION,
                              Normalize, build_model, load_checkpoint, read_checkpoint, save_checkpoint)

# (architecture, dataset) pairs every test below runs on: each registered architecture with a dataset it fits.
ARCH_DATASETS = [("cifar_small", "cifar10"), ("mnist_small", "mnist"), ("mnist_small", "fashion-mnist"),
                 ("tiny_mlp", "mnist"), ("tiny_mlp", "cifar10"), ("cifar_small_bn", "cifar10")]
RELU_WIDTHS = {("cifar_small", "cifar10"): [4096, 2048, 128], ("mnist_small", "mnist"): [3136, 1568, 100],
               ("mnist_small", "fashion-mnist"): [3136, 1568, 100], ("tiny_mlp", "mnist"): [8, 8],
               ("tiny_mlp", "cifar10"): [8, 8], ("cifar_small_bn", "cifar10"): [4096, 2048, 128]}




def test_every_registered_architecture_is_covered():
    assert {a for a, _ in ARCH_DATASETS} == set(ARCHITECTURES)
    assert set(DEFAULT_ARCH.values()) <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch,dataset", ARCH_DATASETS)
def test_build_forward_and_preacts(arch, dataset):
    torch.manual_seed(0)
    model = build_model(arch, dataset).eval()
    assert isinstance(model[0], Normalize)
    mean, std = NORMALIZATION[dataset]
    assert model[0].mean.flatten().tolist() == pytest.approx(list(mean))
    assert model[0].std.flatten().tolist() == pytest.approx(list(std))
    x = torch.rand(5, *INPUT_SHAPE[dataset])
    with torch.no_grad():
        logits = model(x)
        logits2, preacts = model.forward_with_preacts(x)
    assert logits.shape == (5, 10)
    assert torch.equal(logits, logits2)
    n_relus = sum(isinstance(m, nn.ReLU) for m in model)
    assert len(preacts) == n_relus
    assert [p.shape for p in preacts] == [(5, w) for w in RELU_WIDTHS[(arch, dataset)]]
    # Each pre-activation is what the ReLU that follows it sees: recompute layer by layer.
    h, seen = x, []
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.ReLU):
                seen.append(h.flatten(1))
            h = layer(h)
    for a, b in zip(preacts, seen):
        assert torch.equal(a, b)


def test_paper_layer_shapes():
    m = build_model("cifar_small", "cifar10")
    convs = [l for l in m if isinstance(l, nn.Conv2d)]
    lins = [l for l in m if isinstance(l, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 16, (4, 4), (2, 2), (1, 1)), (16, 32, (4, 4), (2, 2), (1, 1))]
    assert [(l.in_features, l.out_features) for l in lins] == [(2048, 128), (128, 10)]
    m = build_model("mnist_small", "mnist")
    assert [(l.in_features, l.out_features) for l in m if isinstance(l, nn.Linear)] == [(1568, 100), (100, 10)]


def test_normalize_is_inside_the_model():
    m = build_model("mnist_small", "mnist")
    x = torch.full((1, 1, 28, 28), 0.1307)
    assert torch.allclose(m[0](x), torch.zeros_like(x), atol=1e-7)


@pytest.mark.parametrize("arch,dataset", [("nope", "cifar10"), ("cifar_small", "svhn")])
def test_build_unknown_is_user_error(arch, dataset):
    with pytest.raises(HamverifyError) as err:
        build_model(arch, dataset)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = build_model("cifar_small", "cifar10").eval()
    path = tmp_path / "sub" / "model.pt"
    config = {"epochs": 3, "reg": "hamming", "grad_clip": None, "augment": True}
    metrics = {"clean": 0.5, "unstable_ia": [1.0, 2.0]}
    save_checkpoint(path, model, arch="cifar_small", dataset="cifar10", config=config, eps=8 / 255,
                    metrics=metrics, extra={"note": "x"})
    return model, path, config, metrics


def test_checkpoint_round_trip_exact(saved):
    model, path, config, metrics = saved
    assert not path.with_name(path.name + ".tmp").exists()  # written atomically
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    x = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert meta["format"] == CHECKPOINT_FORMAT
    assert meta["arch"] == "cifar_small" and meta["dataset"] == "cifar10"
    assert meta["normalization"] == {"mean": list(NORMALIZATION["cifar10"][0]), "std": list(NORMALIZATION["cifar10"][1])}
    assert meta["config"] == config and meta["metrics"] == metrics
    assert meta["eps"] == 8 / 255
    assert meta["hamverify_version"] == hamverify.__version__
    assert meta["torch_version"] == str(torch.__version__)
    created = dt.datetime.fromisoformat(meta["created"])
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
    assert meta["note"] == "x"
    assert "state_dict" not in meta


def _one_line_error(path) -> str:
    with pytest.raises(HamverifyError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def test_truncated_checkpoint(saved, tmp_path):
    _, path, _, _ = saved
    raw = path.read_bytes()
    for cut in (len(raw) // 2, 100, 0):
        bad = tmp_path / f"trunc{cut}.pt"
        bad.write_bytes(raw[:cut])
        assert str(bad) in _one_line_error(bad)


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(build_model("cifar_small", "cifar10").state_dict(), path)
    assert "not a hamverify checkpoint" in _one_line_error(path)
    path2 = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path2)
    assert "not a hamverify checkpoint" in _one_line_error(path2)


def test_foreign_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "obj": dt.timedelta(days=1)}, path)  # weights_only refuses it
    _one_line_error(path)


def test_random_bytes_and_missing(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    _one_line_error(path)
    missing = tmp_path / "missing.pt"
    assert "not found" in _one_line_error(missing)
    assert "not found" in _one_line_error(tmp_path)  # a folder is not a checkpoint either


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("mnist_small", "mnist"), arch="mnist_small", dataset="mnist")
    payload = read_checkpoint(path)
    payload["arch"] = "cifar_small"
    payload["dataset"] = "cifar10"
    torch.save(payload, path)
    assert "do not fit" in _one_line_error(path)
