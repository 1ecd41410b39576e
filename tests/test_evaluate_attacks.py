"""`hamverify evaluate --attack ...` (hamverify.evaluation): repeatable --attack, the paper's Table 1
set on a tiny model with small budgets, several models side by side, the --json schema, per-attack
resume from --results-dir, the membership check of attack points, and one-line errors for a bad
attack name, a bad --bound and a missing optional extra."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from click.testing import CliRunner

from hamverify.attacks.pgd import PGD
from hamverify.cli import main
from hamverify.curves import attack_masks
from hamverify.evaluation import NAMES, SCHEMA, TABLE1, parse_columns
from hamverify.models import save_checkpoint

try:  # tests/ is on sys.path under pytest's default import mode
    from test_attacks_autoattack import train_undefended
    from test_curves import invoke, net, one_error_line, root  # noqa: F401  (fixtures)
except ImportError:  # tests/ as a package
    from tests.test_attacks_autoattack import train_undefended
    from tests.test_curves import invoke, net, one_error_line, root  # noqa: F401


@pytest.fixture(scope="module")
def checkpoints(net, root, tmp_path_factory):
    """Two tiny MNIST checkpoints: the trained one and an untrained one of the same architecture."""
    folder = tmp_path_factory.mktemp("evaluate")
    a, b = folder / "tiny_a.pt", folder / "tiny_b.pt"
    save_checkpoint(a, net[0], arch="tiny_mlp", dataset="mnist", eps=0.1)
    torch.manual_seed(3)
    other, _, _ = train_undefended(root, hidden=8, epochs=1, seed=3)
    save_checkpoint(b, other, arch="tiny_mlp", dataset="mnist", eps=0.1)
    return a, b


def run_json(*args):
    res = invoke("evaluate", *args, "--json", "--quiet")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_attack_is_repeatable_and_json_has_its_schema(checkpoints, root):
    a, _ = checkpoints
    out = run_json("--model", a, "--attack", "pgd", "--attack", "lpa", "--attack", "pgd", "--count", 8,
                   "--steps", 2, "--restarts", 1, "--data-dir", root)
    assert out["schema"] == SCHEMA and out["columns"] == ["pgd", "lpa"]  # a repeated name counts once
    for key in ("norm", "split", "start", "count", "seed", "models", "hamverify_version", "torch_version"):
        assert key in out
    (m,) = out["models"]
    assert m["count"] == 8 and m["dataset"] == "mnist" and set(m["results"]) == {"pgd", "lpa"}
    pgd, lpa = m["results"]["pgd"], m["results"]["lpa"]
    assert pgd["eps"] == 0.1 and pgd["implementation"]["steps"] == 2 and pgd["implementation"]["restarts"] == 1
    assert lpa["eps"] == 0.5 and "self-bound" in lpa["lpips_network"]
    for r in (pgd, lpa):
        assert 0 <= r["robust_accuracy"] <= m["clean_accuracy"] and r["rejected_points"] == 0
        assert r["implementation"]["name"] == "hamverify" and "hamverify" in r["description"]
        assert r["point_check"] and r["reused"] is False and r["file"] is None


def test_table1_on_a_tiny_model_with_small_budgets(checkpoints, root):
    pytest.importorskip("torchattacks")
    a, _ = checkpoints
    res = invoke("evaluate", "--model", a, "--attack", "table1", "--count", 6, "--steps", 2, "--data-dir", root)
    assert res.exit_code == 0, res.output
    rows = [line for line in res.stdout.splitlines() if line.startswith("tiny_a ")]
    assert len(rows) == 1 and len(rows[0].split()) == 4 + len(TABLE1)  # name, dataset, n, clean, 7 columns
    assert "torchattacks 3.5.1" in res.stdout and "LPIPS network: self-bound" in res.stdout
    assert "[1/1 tiny_a.pt | 7/7 lpa]" in res.stderr  # progress lines
    out = run_json("--model", a, "--attack", "table1", "--count", 6, "--steps", 2, "--data-dir", root)
    (m,) = out["models"]
    assert out["columns"] == list(TABLE1)
    assert m["results"]["autoattack-linf"]["eps"] == 0.3 and m["results"]["autoattack-l2"]["eps"] == 2.0
    assert m["results"]["autoattack-linf"]["implementation"]["name"] == "torchattacks"
    assert m["results"]["autoattack-linf"]["implementation"]["version"] == "3.5.1"
    for key in ("stadv", "recolor", "jpeg", "ppgd", "lpa"):
        assert m["results"][key]["implementation"]["name"] == "hamverify"
    # An undefended net: the large-budget AutoAttack breaks (nearly) every input.
    assert m["results"]["autoattack-linf"]["robust_accuracy"] <= 0.2
    for r in m["results"].values():
        assert r["robust_accuracy"] <= m["clean_accuracy"] and r["rejected_points"] == 0


def test_several_models_side_by_side(checkpoints, root):
    a, b = checkpoints
    res = invoke("evaluate", "--model", a, "--model", b, "--attack", "pgd", "--attack", "stadv", "--count", 8,
                 "--steps", 2, "--restarts", 1, "--data-dir", root, "--quiet")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "dataset", "n", "clean"] and "StAdv" in lines[0]
    assert lines[1].startswith("tiny_a ") and lines[2].startswith("tiny_b ")
    out = run_json("--model", a, "--model", b, "--attack", "pgd", "--count", 8, "--steps", 2, "--restarts", 1,
                   "--data-dir", root)
    assert [m["name"] for m in out["models"]] == ["tiny_a", "tiny_b"]


def test_default_is_pgd_and_l2_norm_and_bound_overrides(checkpoints, root):
    a, _ = checkpoints
    res = invoke("evaluate", "--model", a, "--count", 8, "--steps", 2, "--restarts", 1, "--data-dir", root)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("mnist test[0:8]  eps 0.1  clean ") and "PGD-2x1 " in res.stdout
    assert "(hamverify" in res.stdout and res.stderr == ""  # the old one-line output, no progress lines
    out = run_json("--model", a, "--norm", "l2", "--attack", "pgd", "--attack", "ppgd", "--eps", "1.5",
                   "--bound", "ppgd=0.2", "--count", 8, "--steps", 2, "--restarts", 1, "--data-dir", root)
    r = out["models"][0]["results"]
    assert out["columns"] == ["pgd-l2", "ppgd"] and r["pgd-l2"]["eps"] == 1.5 and r["ppgd"]["eps"] == 0.2
    assert parse_columns(["autoattack"], "l2")[0].key == "autoattack-l2"


def test_results_dir_resumes_per_attack(checkpoints, root, tmp_path):
    a, _ = checkpoints
    args = ("--model", a, "--attack", "pgd", "--attack", "jpeg", "--count", 8, "--steps", 2, "--restarts", 1,
            "--data-dir", root, "--results-dir", tmp_path)
    first = invoke("evaluate", *args)
    assert first.exit_code == 0, first.output
    assert len(list(tmp_path.glob("*.json"))) == 2
    again = invoke("evaluate", *args)
    assert again.exit_code == 0 and again.stderr.count("reusing") == 2
    assert again.stdout == first.stdout
    other_seed = invoke("evaluate", *args, "--seed", 1)
    assert other_seed.exit_code == 0 and "reusing" not in other_seed.stderr
    fresh = invoke("evaluate", *args, "--fresh")
    assert fresh.exit_code == 0 and "reusing" not in fresh.stderr


def test_bad_attack_name_and_bad_bound_are_one_line(checkpoints, root):
    a, _ = checkpoints
    line = one_error_line(invoke("evaluate", "--model", a, "--attack", "nosuch", "--data-dir", root))
    assert "nosuch" in line and all(name in line for name in NAMES)
    assert "COLUMN=VALUE" in one_error_line(invoke("evaluate", "--model", a, "--bound", "lpa", "--data-dir", root))
    assert "unknown column" in one_error_line(invoke("evaluate", "--model", a, "--bound", "nope=1",
                                                     "--data-dir", root))
    assert "norm" in one_error_line(invoke("evaluate", "--model", a, "--norm", "l1", "--data-dir", root))
    assert "division by zero" in one_error_line(invoke("evaluate", "--model", a, "--eps", "1/0"))


def test_missing_torchattacks_is_one_line_with_the_install_hint(checkpoints, root, monkeypatch):
    a, _ = checkpoints
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # `import torchattacks` now raises ImportError
    for attack in ("table1", "autoattack"):
        res = invoke("evaluate", "--model", a, "--attack", attack, "--count", 4, "--data-dir", root)
        line = one_error_line(res)
        assert "pip install --no-deps torchattacks==3.5.1" in line
        assert "attacking" not in res.stderr  # refused before any work


class _Cheat(PGD):
    """A 'PGD' that returns points far outside its ball (and so misclassified)."""

    def perturb(self, model, x, y):
        return torch.zeros_like(x)


def test_points_outside_the_threat_model_do_not_count(net):
    model, x, y = net
    checks = {}
    clean, robust, _ = attack_masks(model, x[:32], y[:32], _Cheat(0.01, steps=1, restarts=1), "linf", checks=checks)
    assert torch.equal(robust, clean)  # nothing counted as broken
    with torch.no_grad():
        fooled = int(((model(torch.zeros_like(x[:32])).argmax(1) != y[:32]) & clean).sum())
    assert checks["rejected_points"] == fooled > 0 and "linf" in checks["point_check"]


def test_curves_grid_and_png_out(checkpoints, root, tmp_path, monkeypatch):
    from hamverify.curves import parse_radii
    monkeypatch.chdir(tmp_path)  # the curves' JSON goes to the default results/curves_*.json
    grid = parse_radii("0:32/255:9", "linf")
    assert len(grid) == 9 and grid[0] == 0 and abs(grid[-1] - 32 / 255) < 1e-12
    assert parse_radii("0:1:3,0.25", "l2") == [0.0, 0.25, 0.5, 1.0]
    assert "FIRST:LAST:N" in one_error_line(invoke("curves", "--model", checkpoints[0], "--eps-grid", "0:1",
                                                   "--data-dir", root))
    pytest.importorskip("matplotlib")
    png = tmp_path / "c.png"
    res = invoke("curves", "--model", checkpoints[0], "--model", checkpoints[1], "--norm", "l2", "--eps-grid",
                 "0:2:3", "--count", 8, "--steps", 2, "--restarts", 1, "--out", png, "--data-dir", root, "--quiet")
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot written to {png}" in res.stderr
    assert (tmp_path / "results" / "curves_tiny_a+tiny_b_l2.json").is_file()
