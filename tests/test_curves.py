"""Robustness curves (hamverify.curves) and the `hamverify attack` / `hamverify curves` commands:
the curve equals the clean accuracy at eps 0 and never rises, both commands run end to end on a
tiny checkpoint and write their JSON (and CSV), verified accuracy from `hamverify verify` records
joins the curves (--verified-at / --records) and never exceeds PGD's on the same inputs, and bad
input -- records of another model or eps among them -- is one `error:` line with exit code 2."""
from __future__ import annotations

import csv
import json

import pytest

from hamverify import HamverifyError
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


def test_curves_without_eps_take_figure_2s_grid_and_draw_the_plot(checkpoint, root, tmp_path, monkeypatch):
    """`hamverify curves --model A --model B --norm l2` (issue 15's done-when): the MNIST l_2 grid
    0:4:9 and, with matplotlib installed, the PNG beside the JSON; without it one line says so."""
    monkeypatch.chdir(tmp_path)
    args = ("curves", "--model", checkpoint, "--model", checkpoint, "--norm", "l2", "--count", 6, "--steps", 2,
            "--restarts", 1, "--data-dir", root, "--quiet")
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    (json_path,) = (tmp_path / "results").glob("curves_*_l2.json")
    data = json.loads(json_path.read_text())
    assert data["eps"] == pytest.approx([0.5 * k for k in range(9)])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no plot: matplotlib is missing" in res.stderr
    else:
        assert json_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    json_path.with_suffix(".png").unlink(missing_ok=True)
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "no plot: matplotlib is missing" in res.stderr and not json_path.with_suffix(".png").exists()


def test_curves_default_grid_per_data_set():
    from hamverify.curves import DEFAULT_GRIDS, default_grid
    assert default_grid([], "linf", "cifar10") == "0:32/255:9" and DEFAULT_GRIDS[("mnist", "linf")] == "0:0.4:9"
    with pytest.raises(HamverifyError, match="ONNX"):
        default_grid(["net.onnx"], "linf")


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


# -- --csv, --json, and verified accuracy from `hamverify verify` records -----------------------
CURVE = ("--eps", "0,0.02,0.05", "--count", 20, "--steps", 5, "--restarts", 2)


@pytest.fixture(scope="module")
def records(checkpoint, root, tmp_path_factory):
    """`hamverify verify` results of the checkpoint on the curve's 20 inputs at eps 0.02 and 0.05."""
    folder = tmp_path_factory.mktemp("records")
    out = {}
    for eps in ("0.02", "0.05"):
        path = folder / f"tiny_eps{eps}.jsonl"
        res = invoke("verify", "--model", checkpoint, "--eps", eps, "--count", 20, "--timeout", 10,
                     "--results", path, "--quiet", "--data-dir", root)
        assert res.exit_code == 0, res.output
        out[float(eps)] = path
    return out


@pytest.fixture(scope="module")
def other_checkpoint(net, tmp_path_factory):
    """Another model (one weight changed): another sha256."""
    import copy
    model = copy.deepcopy(net[0])
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    path = tmp_path_factory.mktemp("other") / "other.pt"
    save_checkpoint(path, model, arch="tiny_mlp", dataset="mnist", eps=0.1)
    return path


def test_curves_csv_and_json(checkpoint, other_checkpoint, root, tmp_path):
    csv_path = tmp_path / "c.csv"
    res = invoke("curves", "--model", checkpoint, "--model", other_checkpoint, *CURVE, "--out", tmp_path / "c.json",
                 "--csv", csv_path, "--json", "--data-dir", root)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # --json: the JSON on stdout instead of the table
    assert data == json.loads((tmp_path / "c.json").read_text())
    assert "verified_at" not in data and all("verified" not in m for m in data["models"])
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 2 * 3  # one row per model x eps
    assert {"model", "norm", "eps", "robust_accuracy", "count", "attack", "steps", "restarts", "seed"} <= set(rows[0])
    for m in data["models"]:
        mine = [r for r in rows if r["model"] == m["model"]]
        assert [float(r["eps"]) for r in mine] == data["eps"]
        acc = [float(r["robust_accuracy"]) for r in mine]
        assert acc == m["robust_accuracy"] and acc == sorted(acc, reverse=True)  # monotone, same seed
        assert acc[0] == m["clean_accuracy"] == float(mine[0]["clean_accuracy"])
        for r in mine:
            assert (r["norm"], r["measure"], r["attack"], r["count"], r["steps"], r["restarts"], r["seed"]) == \
                ("linf", "pgd", "pgd", "20", "5", "2", "0")
            assert r["model_sha256"] == m["model_sha256"] and r["implementation"].startswith("hamverify ")
    assert "CSV written to" in res.stderr


def test_verified_at_from_records(checkpoint, records, root, tmp_path):
    csv_path, png = tmp_path / "c.csv", tmp_path / "c.png"
    args = ["curves", "--model", checkpoint, *CURVE, "--out", tmp_path / "c.json", "--csv", csv_path,
            "--verified-at", "0.05,0.02", "--records", records[0.02], "--records", records[0.05], "--data-dir", root]
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", png]
    except ImportError:
        png = None
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["verified_at"] == [0.02, 0.05] and "lower bound" not in data["verified_note"]
    (m,) = data["models"]
    for k, eps in enumerate(data["verified_at"]):
        v = m["verified"][k]
        assert v["eps"] == eps and v["records"] == str(records[eps]) and v["count"] == 20
        assert (v["first_index"], v["last_index"], v["threat_model"]) == (0, 19, "linf")
        summary = json.loads(invoke("summary", records[eps], "--json").stdout)  # the same records, the same numbers
        assert v["verified_accuracy"] == summary["verified_accuracy"] and v["verified"] == summary["verified"]
        # the same 20 inputs at the same eps: a proof beats no attack, so verified <= PGD-robust
        assert v["verified_accuracy"] <= m["robust_accuracy"][data["eps"].index(eps)]
        assert v["clean_accuracy"] == m["clean_accuracy"]
    assert m["verified"][1]["verified_accuracy"] <= m["verified"][0]["verified_accuracy"]
    assert 0 < m["verified"][0]["verified_accuracy"]
    table = res.stdout.splitlines()
    assert table[6].startswith("verified accuracy (hamverify verify records, l_inf")
    assert len(table) == 6 + 2 + 2  # PGD block, then title, header and one row per verified radius
    assert f"{m['verified'][0]['verified_accuracy']:.2%} (20)" in table[8]
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["measure"] for r in rows] == ["pgd"] * 3 + ["verified"] * 2
    for r, v in zip(rows[3:], m["verified"]):
        assert (float(r["eps"]), float(r["robust_accuracy"]), int(r["count"]), r["norm"], r["attack"], r["records"]) \
            == (v["eps"], v["verified_accuracy"], 20, "linf", "verify", v["records"])
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_records_alone_give_their_radii_and_l2_says_lower_bound(checkpoint, records, root, tmp_path):
    res = invoke("curves", "--model", checkpoint, "--norm", "l2", "--eps", "0,0.5", "--count", 20, "--steps", 2,
                 "--restarts", 1, "--out", tmp_path / "c.json", "--records", records[0.05], "--json", "--quiet",
                 "--data-dir", root)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["verified_at"] == [0.05] and "lower bound on l_2" in data["verified_note"]
    assert data["models"][0]["verified"][0]["eps"] == 0.05


def test_verified_at_finds_verifys_default_results_file(checkpoint, records, root, tmp_path, monkeypatch):
    import shutil
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    shutil.copy(records[0.02], tmp_path / "results" / "tiny_mnist_test_eps0.02000.jsonl")  # verify's default name
    res = invoke("curves", "--model", checkpoint, *CURVE, "--out", tmp_path / "c.json", "--verified-at", "0.02",
                 "--quiet", "--json", "--data-dir", root)
    assert res.exit_code == 0, res.output
    (v,) = json.loads(res.stdout)["models"][0]["verified"]
    assert v["records"].endswith("tiny_mnist_test_eps0.02000.jsonl") and v["count"] == 20
    line = one_error_line(invoke("curves", "--model", checkpoint, *CURVE, "--out", tmp_path / "c.json",
                                 "--verified-at", "0.03", "--data-dir", root))
    assert "no verify records for tiny at eps 0.03" in line and "--records" in line


@pytest.mark.parametrize("extra, words", [
    (["--verified-at", "0.03", "--records", "R0.02"], "holds records at eps 0.02, not one of --verified-at 0.03"),
    (["--verified-at", "0.02,0.05", "--records", "R0.02"], "no verify records for tiny at eps 0.05"),
    (["--verified-at", "0.02", "--model", "OTHER", "--records", "R0.02"], "no verify records for other at eps 0.02"),
    (["--verified-at", "0.02", "--records", "R0.02", "--records", "COPY"], "two --records files for tiny at eps 0.02"),
    (["--records", "NOPE"], "verify records not found"),
    (["--records", "EMPTY"], "holds no verify records"),
    (["--verified-at", "abc", "--records", "R0.02"], "invalid --verified-at 'abc'"),
    (["--verified-at", "2", "--records", "R0.02"], "[0, 1]"),
])
def test_records_mismatch_is_one_line(checkpoint, other_checkpoint, records, root, tmp_path, extra, words):
    import shutil
    shutil.copy(records[0.02], tmp_path / "copy.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    subs = {"R0.02": records[0.02], "OTHER": other_checkpoint, "COPY": tmp_path / "copy.jsonl",
            "NOPE": tmp_path / "nope.jsonl", "EMPTY": tmp_path / "empty.jsonl"}
    out = tmp_path / "c.json"
    line = one_error_line(invoke("curves", "--model", checkpoint, *CURVE, "--out", out, "--data-dir", root,
                                 *[subs.get(a, a) for a in extra]))
    assert words in line, line
    assert not out.exists()  # refused before any work


def test_records_of_another_model_is_one_line(other_checkpoint, records, root, tmp_path):
    line = one_error_line(invoke("curves", "--model", other_checkpoint, *CURVE, "--out", tmp_path / "c.json",
                                 "--records", records[0.02], "--data-dir", root))
    assert "holds records of model sha256" in line and "none of the --model's (other " in line
