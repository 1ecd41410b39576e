"""Robustness curves (hamverify.curves) and the `hamverify attack` / `hamverify curves` commands:
the curve equals the clean accuracy at eps 0 and never rises, both commands run end to end on a
tiny checkpoint and write their JSON, and bad input is one `error:` line with exit code 2."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from hamverify.cli import main
from hamverify.curves import parse_radii, robustness_curve
from hamverify.models import save_checkpoint

try:  # tests/ is on sys.path under pytest's default import mode
    from conftest import has_data, shared_data_root
    from test_attacks_autoattack import train_undefended
except ImportError:  # tests/ as a package
    from tests.conftest import has_data, shared_data_root
    from tests.test_attacks_autoattack import train_undefended


@pytest.fixture(scope="module")
def root():
    r = shared_data_root()
    if not has_data(r, "mnist"):
        pytest.skip(f"MNIST not found under {r}")
    return r


@pytest.fixture(scope="module")
def net(root):
    return train_undefended(root, hidden=8)  # the width of the "tiny_mlp" architecture of checkpoints


@pytest.fixture(scope="module")
def checkpoint(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("curves") / "tiny.pt"
    save_checkpoint(path, net[0], arch="tiny_mlp", dataset="mnist", eps=0.1)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize("norm, radii", [("linf", [0.0, 0.02, 0.05, 0.1, 0.2]), ("l2", [0.0, 0.5, 1.0, 2.0])])
def test_curve_starts_at_clean_and_never_rises(net, norm, radii):
    model, x, y = net
    curve = robustness_curve(model, x, y, radii, norm, steps=10, restarts=2, batch_size=64)
    acc = curve["robust_accuracy"]
    assert acc[0] == pytest.approx(1.0 * curve["clean_accuracy"])
    assert all(b <= a for a, b in zip(acc, acc[1:])), acc
    assert acc[-1] < acc[0]  # the largest ball breaks some inputs of an undefended net
    assert curve["implementation"]["name"] == "hamverify"
    assert curve["implementation"]["class"].endswith("PGD" if norm == "linf" else "PGDL2")


def test_parse_radii():
    assert parse_radii("0.04, 0,8/255", "linf") == [0.0, 8 / 255, 0.04]
    assert parse_radii("0,1.5,3", "l2") == [0.0, 1.5, 3.0]  # l_2 radii may exceed 1


@pytest.mark.parametrize("attack, norm, eps", [("pgd", "linf", "0.1"), ("pgd-l2", "l2", "1.5"),
                                               ("autoattack", "linf", "0.3")])
def test_attack_command_end_to_end(checkpoint, root, tmp_path, attack, norm, eps):
    if attack == "autoattack":
        pytest.importorskip("torchattacks")
    out = tmp_path / "r.json"
    res = invoke("attack", "--model", checkpoint, "--attack", attack, "--norm", norm, "--eps", eps,
                 "--count", 30, "--start", 5, "--batch-size", 16, "--seed", 1, "--out", out, "--data-dir", root)
    assert res.exit_code == 0, res.output
    progress = [line for line in res.stderr.splitlines() if line.startswith("batch ")]
    assert len(progress) == 2  # 30 inputs in batches of 16
    data = json.loads(out.read_text())
    assert data["schema"] == "hamverify-attack-v1"
    assert (data["attack"], data["norm"], data["eps"], data["count"], data["start"]) == (attack, norm, float(eps), 30, 5)
    assert [r["index"] for r in data["inputs"]] == list(range(5, 35))
    robust = [r["robust"] for r in data["inputs"]]
    assert data["robust_accuracy"] == pytest.approx(sum(robust) / 30)
    assert data["robust_accuracy"] <= data["clean_accuracy"]
    assert all(r["clean"] for r in data["inputs"] if r["robust"])
    for r in data["inputs"]:  # every adversarial point found lies in the ball
        if r["adv_distance"] is not None:
            assert r["adv_distance"] <= float(eps) * (1 + 1e-5) + 1e-6
    impl = data["implementation"]
    if attack == "autoattack":
        assert (impl["name"], impl["version"]) == ("torchattacks", "3.5.1")
        assert "torchattacks 3.5.1" in res.stdout and "torchattacks 3.5.1" in res.stderr
        assert data["robust_accuracy"] <= 0.1  # undefended net, eps 0.3
    else:
        assert impl["name"] == "hamverify" and (impl["steps"], impl["restarts"]) == (20, 10)
        assert "PGD-20x10" in res.stdout
    assert f"robust {data['robust_accuracy']:.2%}" in res.stdout


def test_attack_defaults_to_the_checkpoints_eps(checkpoint, root, tmp_path):
    out = tmp_path / "r.json"
    res = invoke("attack", "--model", checkpoint, "--attack", "pgd", "--count", 8, "--out", out, "--data-dir", root,
                 "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["eps"] == 0.1
    assert res.stderr == ""


def test_curves_command_end_to_end(checkpoint, root, tmp_path):
    out = tmp_path / "c.json"
    res = invoke("curves", "--model", checkpoint, "--model", checkpoint, "--norm", "linf",
                 "--eps", "0.1,0,0.05", "--count", 40, "--steps", 5, "--restarts", 2, "--out", out,
                 "--data-dir", root)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["schema"] == "hamverify-curves-v1" and data["eps"] == [0.0, 0.05, 0.1]
    assert data["implementation"]["name"] == "hamverify"
    assert len(data["models"]) == 2
    for m in data["models"]:
        acc = m["robust_accuracy"]
        assert acc[0] == pytest.approx(m["clean_accuracy"]) and acc == sorted(acc, reverse=True)
    assert data["models"][0]["robust_accuracy"] == data["models"][1]["robust_accuracy"]  # same seed, same model
    assert "robust accuracy, PGD-5x2 linf (hamverify" in res.stdout
    assert len(res.stdout.strip().splitlines()) == 2 + 3 + 1  # title, header, 3 radii, clean


def test_curves_plot(checkpoint, root, tmp_path):
    png = tmp_path / "c.png"
    args = ("curves", "--model", checkpoint, "--norm", "l2", "--eps", "0,1", "--count", 10, "--steps", 3,
            "--restarts", 1, "--out", tmp_path / "c.json", "--plot", png, "--data-dir", root)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        line = one_error_line(invoke(*args))
        assert "pip install 'hamverify[plot]'" in line
        assert not (tmp_path / "c.json").exists()  # failed before the work
        return
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, words", [
    (["--attack", "cw"], "unknown attack 'cw'"),
    (["--eps", "-0.1"], "must be >= 0"),
    (["--eps", "abc"], "invalid --eps"),
    (["--norm", "l1"], "unknown norm"),
    (["--attack", "pgd", "--norm", "l2"], "pgd-l2"),
    (["--norm", "linf", "--eps", "2"], "[0, 1]"),
    (["--attack", "pgd-l2", "--norm", "l2"], "no --eps given"),
    (["--attack", "autoattack", "--restarts", "3"], "--restarts applies to pgd"),
])
def test_attack_bad_input_is_one_line(checkpoint, root, args, words):
    if "autoattack" in args:
        pytest.importorskip("torchattacks")
    line = one_error_line(invoke("attack", "--model", checkpoint, "--count", 2, "--data-dir", root, *args))
    assert words in line, line


def test_missing_model_is_one_line(tmp_path):
    line = one_error_line(invoke("attack", "--model", tmp_path / "nope.pt", "--attack", "pgd", "--eps", "0.1"))
    assert "nope.pt" in line
    line = one_error_line(invoke("curves", "--model", tmp_path / "nope.pt", "--eps", "0,0.1"))
    assert "nope.pt" in line


@pytest.mark.parametrize("args, words", [
    (["--eps", "0,-0.1"], "must be >= 0"),
    (["--eps", ","], "comma-separated"),
    (["--norm", "l1", "--eps", "0"], "unknown norm"),
])
def test_curves_bad_input_is_one_line(checkpoint, args, words):
    line = one_error_line(invoke("curves", "--model", checkpoint, *args))
    assert words in line, line


def test_autoattack_missing_is_one_line_with_the_hint(checkpoint, root, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    line = one_error_line(invoke("attack", "--model", checkpoint, "--attack", "autoattack", "--eps", "0.1",
                                 "--count", 2, "--data-dir", root))
    assert "pip install --no-deps torchattacks==3.5.1" in line
