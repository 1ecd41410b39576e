"""ReLU-stability statistics (hamverify.stats) and `hamverify stats`."""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hamverify import HamverifyError
from hamverify.bounds import compute_bounds, unstable_counts
from hamverify.cli import main
from hamverify.models import INPUT_SHAPE, load_checkpoint, save_checkpoint, tiny_mlp
from hamverify.network import Affine, Network
from hamverify.stats import (PLOT_MISSING, SCHEMA, LayerCounts, compare_models, corner_hamming, corner_pairs,
                             format_table, model_stats, parse_methods, relu_stability, short_names,
                             stats_from_json, to_json)
from hamverify.verify import Verifier, VerifySettings

from conftest import shared_data_root  # noqa: E402

DATA = shared_data_root()
needs_mnist = pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason=f"MNIST test data not in {DATA}")
EPS = 8 / 255


# ------------------------------------------------------------------------------------------- a hand-made net

def hand_net() -> Network:
    """2 inputs; layer 1: n1 = x1 - .1, n2 = -x2 - .1, n3 = x1 - x2, n4 = x1 - .1;
    layer 2: m1 = h1 - h4 + .1, m2 = h2 + h3 - 1, m3 = h1 + .2; logits (relu(m3), relu(m1))."""
    W1 = np.array([[1.0, 0.0], [0.0, -1.0], [1.0, -1.0], [1.0, 0.0]])
    b1 = np.array([-0.1, -0.1, 0.0, -0.1])
    W2 = np.array([[1.0, 0.0, 0.0, -1.0], [0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    b2 = np.array([0.1, -1.0, 0.2])
    W3 = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    return Network((Affine(W1, b1), Affine(W2, b2), Affine(W3, np.zeros(2))), (2,))


X_HAND = np.array([0.5, 0.5])  # box [0.25, 0.75]^2 at eps 0.25


def test_hand_counts_exact():
    net = hand_net()
    # Layer 1 is affine in the input, so every method gives its exact ranges:
    # n1 in [.15, .65] active, n2 in [-.85, -.35] inactive, n3 in [-.5, .5] unstable, n4 active.
    # Layer 2 under IA: m1 in [.15-.65+.1, .65-.15+.1] = [-.4, .6] unstable, m2 in [-1, -.5] inactive,
    # m3 in [.35, .85] active.  Symbolic sees m1 = (x1-.1) - (x1-.1) + .1 = .1 exactly: active.
    ia = relu_stability(net, X_HAND, 0.25, "ia")
    assert ia == [LayerCounts(2, 1, 1), LayerCounts(1, 1, 1)]
    for method in ("symbolic", "lp"):
        assert relu_stability(net, X_HAND, 0.25, method) == [LayerCounts(2, 1, 1), LayerCounts(2, 1, 0)]
    # eps = 0: a point; n3 = 0 exactly, counted inactive (u <= 0); m1 = .1 active.
    assert relu_stability(net, X_HAND, 0.0, "ia") == [LayerCounts(2, 2, 0), LayerCounts(2, 1, 0)]
    # The box is clipped to [0, 1]: at x = (1, 0), eps .25 -> [.75, 1] x [0, .25], n3 in [.5, 1] active.
    assert relu_stability(net, np.array([1.0, 0.0]), 0.25, "ia")[0] == LayerCounts(3, 1, 0)


def test_hand_model_stats_means_proofs_and_hamming():
    net = hand_net()
    x = np.stack([X_HAND, X_HAND])
    # Label 0 is predicted (z = (.6, .1)); bounds prove it for both methods: margin relu(m3) - relu(m1)
    # >= .35 - .6 * (.1 + .4) = .05 with IA layer bounds, >= .35 - .1 with symbolic ones.  Label 1 is
    # misclassified, so it never counts as proven.
    s = model_stats(net, x, [0, 1], 0.25, ["ia", "symbolic"], corners=16, seed=3, indices=[7, 8])
    assert s["layer_sizes"] == [4, 3] and s["clean_accuracy"] == 0.5
    ia = s["methods"]["ia"]
    assert ia["per_layer"][1] == {"active": 1.0, "inactive": 1.0, "unstable": 1.0, "active_pct": 100 / 3,
                                  "inactive_pct": 100 / 3, "unstable_pct": 100 / 3}
    assert ia["total"]["unstable"] == 2.0 and ia["total"]["unstable_pct"] == pytest.approx(100 * 2 / 7)
    assert s["methods"]["symbolic"]["total"]["unstable"] == 1.0
    for m in ("ia", "symbolic"):
        assert s["methods"][m]["bounds_proven"] == 1 and s["methods"][m]["bounds_proven_share"] == 0.5
    # Hamming by hand: only n3 = x1 - x2 can change sign between opposite corners, and it does exactly when
    # the corner is off the diagonal (x1 != x2); layer 2 never changes.
    expected = []
    for index in (7, 8):
        plus, minus = corner_pairs(X_HAND, 0.25, 16, np.random.default_rng([3, index]))
        np.testing.assert_allclose(plus + minus, 2 * X_HAND[None].repeat(16, 0))
        expected.append(np.mean(plus[:, 0] != plus[:, 1]))
    h = s["hamming"]
    assert h["corners"] == 16
    assert h["per_layer"][0]["mean"] == pytest.approx(np.mean(expected))
    assert h["per_layer"][0]["normalized"] == pytest.approx(np.mean(expected) / 4)
    assert h["per_layer"][1]["mean"] == 0.0
    assert h["total"]["mean"] == pytest.approx(np.mean(expected))
    assert 0 < np.mean(expected) < 1  # both kinds of corner were drawn


def random_net(seed: int, sizes=(6, 14, 12, 10, 3)) -> Network:
    rng = np.random.default_rng(seed)
    affines = [Affine(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.3)
               for i, o in zip(sizes[:-1], sizes[1:])]
    return Network(tuple(affines), (sizes[0],))


@pytest.mark.parametrize("seed", range(6))
def test_partition_and_tighter_methods_never_more_unstable(seed):
    net = random_net(seed)
    rng = np.random.default_rng(100 + seed)
    methods = ("ia", "symbolic", "lp") if seed < 2 else ("ia", "symbolic")
    for _ in range(3):
        x, eps = rng.random(6), rng.choice([0.02, 0.1, 0.3])
        counts = {m: relu_stability(net, x, eps, m) for m in methods}
        for m in methods:
            assert [c.size for c in counts[m]] == net.relu_layer_sizes
            assert [c.active + c.inactive + c.unstable for c in counts[m]] == net.relu_layer_sizes
        for loose, tight in zip(methods, methods[1:]):
            assert all(t.unstable <= lo.unstable for lo, t in zip(counts[loose], counts[tight]))


def test_hamming_zero_at_eps_zero_and_bounded():
    net = random_net(0)
    x = np.random.default_rng(1).random(6)
    assert corner_hamming(net, x, 0.0, 5, np.random.default_rng(0)).tolist() == [0.0, 0.0, 0.0]
    h = corner_hamming(net, x, 0.3, 5, 0)
    assert np.all(h >= 0) and np.all(h <= np.array(net.relu_layer_sizes))
    # Same seed, same corners.
    assert np.array_equal(h, corner_hamming(net, x, 0.3, 5, 0))


def test_parse_methods_and_short_names():
    assert parse_methods("ia, symbolic,ia") == ["ia", "symbolic"]
    assert parse_methods("LP") == ["lp"]
    for bad in ("", " , ", "ia,crown"):
        with pytest.raises(HamverifyError):
            parse_methods(bad)
    assert short_names(["runs/hv_e100_s0/model.pt", "runs/none_e100_s0/model.pt", "x/tiny.pt"]) == \
        ["hv_e100_s0", "none_e100_s0", "tiny"]
    assert short_names(["a/s0/model.pt", "b/s0/model.pt"]) == ["a/s0", "b/s0"]
    assert short_names(["m.pt", "m.pt"]) == ["m", "m#2"]


# ------------------------------------------------------------------------------------------- real checkpoints

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    paths = {}
    for name, seed, dataset in (("a", 0, "mnist"), ("b", 1, "mnist"), ("fashion", 2, "fashion-mnist")):
        torch.manual_seed(seed)
        model = tiny_mlp(dataset)
        with torch.no_grad():  # a sharper first layer, so that eps 8/255 leaves some ReLUs stable
            model[2].weight.mul_(0.2)
        paths[name] = root / name / "model.pt"
        save_checkpoint(paths[name], model, arch="tiny_mlp", dataset=dataset, eps=EPS)
    return paths


@needs_mnist
def test_counts_match_the_verifier(ckpts):
    from hamverify.data import load_dataset
    idx = [0, 1, 2, 3, 4]
    result = compare_models([ckpts["a"]], EPS, count=len(idx), methods="ia,symbolic,lp", corners=2,
                            data_dir=DATA)
    assert result["indices"] == idx
    model, meta = load_checkpoint(ckpts["a"])
    images, labels = load_dataset("mnist", "test", DATA)
    for method in ("ia", "symbolic", "lp"):
        verifier = Verifier(model, INPUT_SHAPE["mnist"], VerifySettings(eps=EPS, tightening=method))
        per_input, correct = [], []
        for i in idx:
            # exactly the verifier's input (runner.verify_task) and box (Verifier.verify)
            x = np.transpose(np.asarray(images[i], dtype=np.float64) / 255.0, (2, 0, 1)).ravel()
            lo, hi = np.clip(x - EPS, 0, 1), np.clip(x + EPS, 0, 1)
            counts = unstable_counts(compute_bounds(verifier.net, lo, hi, method))
            assert [c.unstable for c in relu_stability(verifier.net, x, EPS, method)] == counts
            per_input.append(counts)
            correct.append(int(verifier.margin64(x, int(labels[i])) > 0))
        got = [e["unstable"] for e in result["models"][0]["methods"][method]["per_layer"]]
        assert got == pytest.approx(np.mean(per_input, axis=0).tolist(), abs=1e-12)
        assert result["models"][0]["clean_accuracy"] == pytest.approx(np.mean(correct))
    assert sum(np.mean(per_input, axis=0)) > 0  # the check is not vacuous


@needs_mnist
def test_json_round_trip_and_table(ckpts):
    result = compare_models([ckpts["a"], ckpts["b"]], EPS, count=3, start=5, corners=2, data_dir=DATA)
    text = to_json(result)
    back = stats_from_json(text)
    assert back == result and to_json(back) == text
    assert back["schema"] == SCHEMA and back["indices"] == [5, 6, 7] and back["dataset"] == "mnist"
    assert [m["name"] for m in back["models"]] == ["a", "b"]
    for m in back["models"]:
        assert m["layer_sizes"] == [8, 8] and len(m["sha256"]) == 64
        assert list(m["methods"]) == ["ia", "symbolic"]
        for body in m["methods"].values():
            assert set(body["total"]) == {"active", "inactive", "unstable", "active_pct", "inactive_pct",
                                          "unstable_pct"}
            assert len(body["per_layer"]) == 2 and 0 <= body["bounds_proven_share"] <= 1
            for e, size in zip(body["per_layer"], m["layer_sizes"]):
                assert e["active"] + e["inactive"] + e["unstable"] == pytest.approx(size)
        assert m["hamming"]["corners"] == 2 and len(m["hamming"]["per_layer"]) == 2
    with pytest.raises(HamverifyError, match="schema"):
        stats_from_json(json.dumps({**result, "schema": "other"}))
    with pytest.raises(HamverifyError, match="lack"):
        stats_from_json(json.dumps({k: v for k, v in result.items() if k != "models"}))
    table = format_table(result)
    lines = table.splitlines()
    assert "Unstable ReLUs" in table and "Hamming" in table and "proven" in table
    header = next(ln for ln in lines if ln.strip().startswith("layer"))
    assert header.index("ia") < header.index("symbolic")
    # rows of one section line up: the same length for every row
    section = lines[lines.index(next(ln for ln in lines if ln.startswith("Unstable"))) + 3:][:3]
    assert len({len(ln) for ln in section}) == 1


def test_mismatched_datasets(ckpts):
    with pytest.raises(HamverifyError, match="different datasets"):
        compare_models([ckpts["a"], ckpts["fashion"]], EPS, count=1, data_dir=DATA)


# ------------------------------------------------------------------------------------------- CLI

def run_cli(*args):
    return CliRunner().invoke(main, ["stats", *map(str, args)])


def one_line_error(res) -> str:
    assert res.exit_code != 0, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert res.stdout == ""
    return lines[0]


@needs_mnist
def test_cli_table_and_json(ckpts):
    res = run_cli("--model", ckpts["a"], "--model", ckpts["b"], "--eps", "8/255", "--count", 2, "--corners", 2,
                  "--data-dir", DATA, "--quiet")
    assert res.exit_code == 0, res.output
    assert "Unstable ReLUs" in res.stdout and " a " in res.stdout and "mnist test[0:2]" in res.stdout
    assert res.stderr == ""
    res = run_cli("--model", ckpts["a"], "--count", 2, "--corners", 2, "--tightening", "symbolic",
                  "--data-dir", DATA, "--json", "--quiet")
    assert res.exit_code == 0, res.output
    parsed = stats_from_json(res.stdout)
    assert parsed["eps"] == pytest.approx(EPS)  # the checkpoint's eps
    assert list(parsed["models"][0]["methods"]) == ["symbolic"]


def test_cli_bad_inputs(ckpts, tmp_path):
    res = run_cli("--eps", "8/255")
    assert res.exit_code != 0 and "--model" in res.output
    assert "division by zero" in one_line_error(run_cli("--model", ckpts["a"], "--eps", "8/0"))
    assert "--count" in one_line_error(run_cli("--model", ckpts["a"], "--count", 0))
    assert "not found" in one_line_error(run_cli("--model", tmp_path / "missing.pt"))
    assert "different datasets" in one_line_error(run_cli("--model", ckpts["a"], "--model", ckpts["fashion"]))
    assert "crown" in one_line_error(run_cli("--model", ckpts["a"], "--tightening", "ia,crown"))


def test_cli_plot_without_matplotlib(ckpts, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    res = run_cli("--model", ckpts["a"], "--plot", tmp_path / "u.png", "--data-dir", DATA)
    assert one_line_error(res) == f"error: {PLOT_MISSING}"
    assert not (tmp_path / "u.png").exists()


@needs_mnist
def test_cli_plot(ckpts, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "unstable.png"
    res = run_cli("--model", ckpts["a"], "--model", ckpts["b"], "--count", 2, "--corners", 1, "--data-dir", DATA,
                  "--plot", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
