"""The paper's ablations (issue 15 item 4): the dense regularizer of Eq. 14 against a brute-force double
loop over pairs, and the stability-only / Hamming-only recipes and --reg hamming-dense through the CLI."""
from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch
from click.testing import CliRunner

from hamverify.cli import main
from hamverify.models import load_checkpoint, tiny_mlp
from hamverify.recipes import RECIPES
from hamverify.regularizers import (STABILITY_FORMS, default_dense_scale, dense_pairs, hamming_loss,
                                    hamming_loss_dense, relaxed_hamming, sample_corners, stability_loss,
                                    stability_loss_dense)
from hamverify.train import TrainConfig, regularized_loss

try:  # tests/ is on sys.path under pytest's default import mode
    from conftest import has_data, shared_data_root
except ImportError:  # tests/ as a package
    from tests.conftest import has_data, shared_data_root

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NEW_RECIPES = ("paper-sgd-stability-only", "paper-sgd-hamming-only", "hv-stability-only", "hv-hamming-only")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _corner_batch(n=5, seed=0, eps=0.3, lo=0.0, hi=1.0):
    x = lo + (hi - lo) * torch.rand(n, 1, 28, 28, generator=_gen(seed))
    xp, xm = sample_corners(x, eps, _gen(seed + 1))
    return x, torch.cat([xp, xm])


def _brute_force(model, points, n, scale, alpha, form, min_weight=0.0):
    """Eq. 14 pair by pair: (1/n) Σ_{a<b} L_ab d(a, b), L_ab = exp(-||p_a - p_b||²/s) / mean corner weight."""
    logits, preacts = model.forward_with_preacts(points)
    if form.startswith("softmax"):
        logits = torch.softmax(logits, dim=1)
    flat = points.flatten(1)
    kernel = lambda a, b: math.exp(-float(((flat[a] - flat[b]) ** 2).sum()) / scale)
    corner = sum(kernel(k, k + n) for k in range(n)) / n
    lh = ls = 0.0
    for a in range(2 * n):
        for b in range(a + 1, 2 * n):
            w = kernel(a, b) / corner
            if w < min_weight:
                continue
            per_layer = [float(relaxed_hamming(z[a], z[b], alpha).mean().detach()) ** 2 for z in preacts]
            lh += w * sum(per_layer) / len(per_layer)
            ls += w * float(((logits[a] - logits[b]) ** 2).sum().detach())
    return lh / n, (ls if form.endswith("sum") else ls / n)


@pytest.mark.parametrize("form", STABILITY_FORMS)
@pytest.mark.parametrize("min_weight", [0.0, 0.5])
def test_dense_equals_brute_force_double_loop(form, min_weight):
    torch.manual_seed(0)
    model = tiny_mlp("mnist", hidden=6).double()
    n = 5
    _, points = _corner_batch(n)
    points = points.double()
    scale = 200.0  # pairs of different images weigh 0.1-1 here: the cross terms matter
    i, j, w = dense_pairs(points, n, scale, min_weight)
    assert len(i) <= 2 * n * (2 * n - 1) // 2 and (i < j).all()
    logits, preacts = model.forward_with_preacts(points)
    lh = hamming_loss_dense(preacts, i, j, w, n, alpha=8.0)
    ls = stability_loss_dense(logits, i, j, w, n, form)
    want_lh, want_ls = _brute_force(model, points, n, scale, 8.0, form, min_weight)
    assert lh.item() == pytest.approx(want_lh, rel=1e-9, abs=1e-12)
    assert ls.item() == pytest.approx(want_ls, rel=1e-9, abs=1e-12)
    if min_weight == 0:
        assert len(i) == n * (2 * n - 1)  # every pair of the 2n points


def test_dense_reduces_to_sparse_when_cross_pairs_weigh_nothing():
    """A tiny kernel scale leaves only the corner pairs, at weight 1: the sparse regularizer (Eq. 16-17).
    (Inputs away from 0 and 1, so no clipping makes one corner pair shorter than another.)"""
    torch.manual_seed(1)
    model = tiny_mlp("mnist", hidden=6).double()
    n = 6
    _, points = _corner_batch(n, seed=3, eps=0.05, lo=0.1, hi=0.9)
    points = points.double()
    i, j, w = dense_pairs(points, n, scale=1.0, min_weight=1e-6)
    assert sorted(zip(i.tolist(), j.tolist())) == [(k, k + n) for k in range(n)]
    assert torch.allclose(w, torch.ones_like(w))
    logits, preacts = model.forward_with_preacts(points)
    sparse_lh = hamming_loss([z[:n] for z in preacts], [z[n:] for z in preacts])
    assert hamming_loss_dense(preacts, i, j, w, n).item() == pytest.approx(sparse_lh.item(), rel=1e-5)
    for form in STABILITY_FORMS:
        want = stability_loss(logits[:n], logits[n:], form).item()
        assert stability_loss_dense(logits, i, j, w, n, form).item() == pytest.approx(want, rel=1e-5)


def test_dense_scale_default_and_checks():
    x = torch.zeros(2, 3, 32, 32)
    assert default_dense_scale(x, 8 / 255) == pytest.approx(2 * 4 * 3072 * (8 / 255) ** 2)  # 24.2
    with pytest.raises(ValueError):
        dense_pairs(torch.zeros(4, 3), 2, scale=0.0)
    from hamverify import HamverifyError
    with pytest.raises(HamverifyError, match="dense_scale"):
        TrainConfig(dataset="mnist", reg="hamming-dense", dense_scale=-1.0)
    with pytest.raises(HamverifyError, match="dense_min_weight"):
        TrainConfig(dataset="mnist", reg="hamming-dense", dense_min_weight=1.5)


@pytest.mark.parametrize("scale", [None, 5.0])
def test_dense_training_loss_gradients_finite(scale):
    torch.manual_seed(2)
    model = tiny_mlp("mnist", hidden=8)
    cfg = TrainConfig(dataset="mnist", arch="tiny_mlp", reg="hamming-dense", dense_scale=scale,
                      stability_form="logits-mean", gamma_s=8.0, gamma_h=3000.0)
    x = torch.rand(16, 1, 28, 28, generator=_gen(4))
    y = torch.randint(0, 10, (16,), generator=_gen(5))
    loss, terms = regularized_loss(model, cfg, x, y, 0.1, 1.0, _gen(6))
    loss.backward()
    assert math.isfinite(loss.item()) and terms["lh"].item() > 0 and terms["ls"].item() > 0
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_ablation_recipes_zero_one_weight_and_keep_the_rest():
    for prefix, base in (("paper-sgd", "paper-sgd"), ("hv", "hv-gs8-gh3000")):
        s_only, h_only = RECIPES[f"{prefix}-stability-only"], RECIPES[f"{prefix}-hamming-only"]
        assert s_only == {**RECIPES[base], "gamma_h": 0.0}
        assert h_only == {**RECIPES[base], "gamma_s": 0.0}
    cfg = TrainConfig.from_sources(recipe="hv-hamming-only")
    assert cfg.gamma_s == 0 and cfg.gamma_h == 3000 and cfg.stability_form == "logits-mean"
    cfg = TrainConfig.from_sources(recipe="paper-sgd-stability-only")
    assert cfg.gamma_h == 0 and cfg.gamma_s == 0.4 and cfg.optimizer == "sgd" and cfg.lr == 0.1


# ------------------------------------------------------------------------------------------ through the CLI


@pytest.fixture(scope="module")
def mnist_root():
    root = shared_data_root()
    if not has_data(root, "mnist"):
        pytest.skip(f"MNIST data not found at {root}")
    return root


QUICK = ["--dataset", "mnist", "--arch", "tiny_mlp", "--subset", 256, "--epochs", 1, "--eval-count", 16,
         "--batch-size", 64, "--quiet"]


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def test_train_small_hamming_dense_through_the_cli(tmp_path, mnist_root):
    out = tmp_path / "dense"
    result = _invoke(["train-small", *QUICK, "--recipe", "hv-gs8-gh3000", "--val-count", 64,
                      "--reg", "hamming-dense", "--dense-scale", 40, "--dense-min-weight", 0,
                      "--data-dir", mnist_root, "--out", out])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "reg hamming-dense" in result.output
    _, meta = load_checkpoint(out / "model.pt")
    assert meta["config"]["reg"] == "hamming-dense"
    assert meta["config"]["dense_scale"] == 40 and meta["config"]["dense_min_weight"] == 0
    bad = _invoke(["train-small", *QUICK, "--reg", "hamming-dense", "--dense-scale", -2,
                   "--data-dir", mnist_root, "--out", tmp_path / "bad"])
    assert bad.exit_code != 0 and "dense_scale" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("recipe", NEW_RECIPES)
def test_each_ablation_recipe_trains_through_the_cli(tmp_path, mnist_root, recipe):
    out = tmp_path / recipe
    extra = ["--val-count", 64] if RECIPES[recipe].get("val_count") else []
    result = _invoke(["train-small", *QUICK, *extra, "--recipe", recipe, "--data-dir", mnist_root, "--out", out])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"recipe {recipe}" in result.output
    _, meta = load_checkpoint(out / "model.pt")
    assert meta["config"]["recipe"] == recipe
    want = {k: v for k, v in RECIPES[recipe].items() if k != "val_count"}
    assert {k: meta["config"][k] for k in want} == want


# ------------------------------------------------------------------------------------------ the tables script


def _load_tables_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("ablation_tables", REPO_ROOT / "scripts" / "ablation_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_tables_read_the_measurements(tmp_path):
    """docs/ABLATIONS.md's numbers come from the evaluate / stats JSON and the run's log, not by hand."""
    tables = _load_tables_script()
    common, args = tables.script_runs()
    assert set(args) == {"hv_both", "hv_stability-only", "hv_hamming-only", "hv_dense", "hv_none"}
    assert "--epochs" in common and "$EPOCHS" not in " ".join(common)
    assert "--reg hamming-dense" in args["hv_dense"]
    run = tmp_path / "hv_both"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"epochs": 7}))
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"epoch": 1, "epoch_time": 30.0}, {"epoch": 2, "epoch_time": 50.0},
        {"epoch": "final", "selected_epoch": 2, "rollbacks": 0, "train_seconds": 600.0})))
    (tmp_path / "hv_both.evaluate.json").write_text(json.dumps(
        {"count": 500, "clean_accuracy": 0.4321, "pgd_accuracy": 0.2468, "pgd_steps": 20, "pgd_restarts": 10}))
    layer = {"unstable": 2.5}
    (tmp_path / "hv_both.stats.json").write_text(json.dumps({"indices": list(range(500)), "models": [
        {"methods": {"ia": {"per_layer": [layer, layer], "bounds_proven_share": 0.1},
                     "symbolic": {"per_layer": [{"unstable": 1.0}, {"unstable": 0.5}], "bounds_proven_share": 0.2}}}]}))
    out = tables.blocks(runs=tmp_path)
    both = next(line for line in out["table3"].splitlines() if "hv-gs8-gh3000" in line)
    assert "| 24.68 | 43.21 |" in both and "5.0 (2.5 / 2.5)" in both and "1.5 (1.0 / 0.5)" in both
    assert "| 20.00 |" in both and "2 of 7, 10 min" in both
    assert "not run yet" in out["table4"] and "--epochs 7 --recipe hv-gs8-gh3000" in out["commands"]
    doc = tmp_path / "doc.md"
    doc.write_text("".join(f"x\n<!-- ablation_tables:{k} -->\nold\n<!-- /ablation_tables:{k} -->\n" for k in out))
    assert tables.main(["--runs", str(tmp_path), "--check", str(doc)]) == 1
    assert tables.main(["--runs", str(tmp_path), "--write", str(doc)]) == 0
    assert tables.main(["--runs", str(tmp_path), "--check", str(doc)]) == 0
    assert "24.68" in doc.read_text() and "old" not in doc.read_text()
