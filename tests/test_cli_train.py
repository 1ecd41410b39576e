"""`hamverify train-small` and `hamverify evaluate` through click's CliRunner (in-process) and one real subprocess."""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from hamverify.cli import main
from hamverify.models import load_checkpoint, read_checkpoint
from hamverify.recipes import DEFAULT_RECIPE

try:  # tests/ is on sys.path under pytest's default import mode
    from conftest import has_data
except ImportError:  # tests/ as a package
    from tests.conftest import has_data

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def data_root():
    env = os.environ.get("HAMVERIFY_DATA")
    root = pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not has_data(root, "cifar10"):
        pytest.skip(f"shared data not found at {root}")
    return root


@pytest.fixture
def env(data_root, monkeypatch):
    monkeypatch.setenv("HAMVERIFY_DATA", str(data_root))
    return data_root


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def _assert_one_line_error(result, needle=None):
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = result.stderr if result.stderr else result.output
    assert "Traceback" not in result.output and "Traceback" not in text
    lines = [l for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if l.lower().startswith("error")]
    assert len(errors) == 1, text
    if needle:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """One short CIFAR-10 run through the CLI, shared by the tests below."""
    out = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.setenv("HAMVERIFY_DATA", str(data_root))
    try:
        result = _invoke(["train-small", "--subset", 512, "--epochs", 1, "--out", out, "--quiet",
                          "--eval-count", 32])
    finally:
        mp.undo()
    return out, result


def test_train_small_writes_a_loadable_checkpoint(trained):
    out, result = trained
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"training cifar_small on cifar10, reg none, recipe {DEFAULT_RECIPE}" in result.output
    assert re.search(r"done: clean \d+\.\d+%  PGD \d+\.\d+% on 32 test images", result.output)
    model, meta = load_checkpoint(out / "model.pt")
    assert meta["arch"] == "cifar_small" and meta["dataset"] == "cifar10" and meta["eps"] == 8 / 255
    assert meta["config"]["subset"] == 512 and meta["config"]["epochs"] == 1
    assert meta["metrics"]["eval_count"] == 32 and 0 <= meta["metrics"]["pgd"] <= meta["metrics"]["clean"]
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    for name in ("last.pt", "config.json", "log.jsonl"):
        assert (out / name).is_file()


def test_evaluate_prints_clean_and_pgd(trained, env):
    out, _ = trained
    result = _invoke(["evaluate", "--model", out / "model.pt", "--count", 50])
    assert result.exit_code == 0, result.output
    m = re.search(r"cifar10 test\[0:50\]  eps 0\.031373  clean (\d+\.\d+)%  PGD-20x10 (\d+\.\d+)%", result.output)
    assert m, result.output
    assert float(m.group(2)) <= float(m.group(1))
    js = _invoke(["evaluate", "--model", out / "model.pt", "--count", 20, "--eps", "2/255", "--json",
                  "--restarts", 1, "--steps", 5])
    assert js.exit_code == 0, js.output
    rec = json.loads(js.output)
    assert rec["count"] == 20 and rec["eps"] == 2 / 255 and rec["pgd_accuracy"] <= rec["clean_accuracy"]
    assert (rec["pgd_steps"], rec["pgd_restarts"]) == (5, 1)


def test_resume_finished_run_is_a_no_op(trained, env):
    out, _ = trained
    before = read_checkpoint(out / "last.pt")["state_dict"]
    result = _invoke(["train-small", "--resume", out / "last.pt", "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
    after = read_checkpoint(out / "last.pt")["state_dict"]
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_bad_data_dir(tmp_path, env):
    result = _invoke(["train-small", "--subset", 64, "--epochs", 1, "--out", tmp_path / "o", "--quiet",
                      "--data-dir", tmp_path / "no-such-folder"])
    assert result.exit_code == 2
    _assert_one_line_error(result, "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _invoke(["train-small", "--subset", 64, "--epochs", 1, "--out", tmp_path / "o2", "--quiet",
                      "--data-dir", empty])
    _assert_one_line_error(result, "not found")


def test_bad_eps(tmp_path, env):
    for cmd in (["train-small", "--out", tmp_path / "o", "--quiet"], ["evaluate", "--model", tmp_path / "m.pt"]):
        result = _invoke(cmd + ["--eps", "8/0"])
        assert result.exit_code == 2
        # click reports a bad option value as a usage error: one "Error:" line naming the value.
        line = _assert_one_line_error(result, "8/0")
        assert "division by zero" in line
    assert not (tmp_path / "o").exists()


def test_bad_settings_are_one_line(tmp_path, env):
    result = _invoke(["train-small", "--out", tmp_path / "o", "--recipe", "nope", "--quiet"])
    _assert_one_line_error(result, "unknown recipe")
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(b"epochs = \n")
    result = _invoke(["train-small", "--out", tmp_path / "o", "--config", cfg, "--quiet"])
    _assert_one_line_error(result, "invalid TOML")
    cfg.write_text('eps = "8/255"\nepochs = "ten"\n')
    result = _invoke(["train-small", "--out", tmp_path / "o", "--config", cfg, "--quiet"])
    _assert_one_line_error(result, "invalid training setting")
    result = _invoke(["train-small", "--out", tmp_path / "o", "--resume", tmp_path / "nope.pt", "--quiet",
                      "--subset", 16])
    _assert_one_line_error(result, "not found")


@pytest.mark.parametrize("kind", ["truncated", "random", "foreign", "missing"])
def test_evaluate_corrupt_checkpoint(trained, tmp_path, env, kind):
    out, _ = trained
    bad = tmp_path / "bad.pt"
    if kind == "truncated":
        bad.write_bytes((out / "model.pt").read_bytes()[:2000])
    elif kind == "random":
        bad.write_bytes(os.urandom(3000))
    elif kind == "foreign":
        torch.save({"weight": torch.zeros(2)}, bad)
    result = _invoke(["evaluate", "--model", bad, "--count", 5])
    assert result.exit_code == 2
    _assert_one_line_error(result, str(bad))


def test_real_process_error_has_no_traceback(tmp_path, data_root):
    """The installed entry point, as a user runs it: exit code 2 and one stderr line."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    proc = subprocess.run([sys.executable, "-m", "hamverify.cli", "evaluate", "--model", str(bad)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HAMVERIFY_DATA": str(data_root), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], proc.stderr


# ---------------------------------------------------- issue 16, items 10 and 12: --out, validation


@pytest.fixture(scope="module")
def mnist_root():
    env = os.environ.get("HAMVERIFY_DATA")
    root = pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not has_data(root, "mnist"):
        pytest.skip(f"MNIST data not found at {root}")
    return root


QUICK = ["--dataset", "mnist", "--arch", "tiny_mlp", "--subset", 256, "--epochs", 1, "--eval-count", 16,
         "--val-count", 64, "--quiet"]


def test_out_ending_in_pt_is_the_final_checkpoint(tmp_path, mnist_root):
    """`--out m.pt` writes the checkpoint m.pt with its run folder m/ beside it (it used to make a
    folder named m.pt holding model.pt)."""
    out = tmp_path / "m.pt"
    result = _invoke(["train-small", *QUICK, "--data-dir", mnist_root, "--out", out])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert out.is_file()
    model, meta = load_checkpoint(out)
    assert meta["arch"] == "tiny_mlp" and meta["dataset"] == "mnist"
    assert (tmp_path / "m").is_dir() and (tmp_path / "m" / "last.pt").is_file()
    assert (tmp_path / "m" / "model.pt").read_bytes() == out.read_bytes()
    assert f"checkpoint {out}" in result.output and f"run folder {tmp_path / 'm'}" in result.output
    # resuming without --out continues in the run's own folder
    again = _invoke(["train-small", "--resume", tmp_path / "m" / "last.pt", "--data-dir", mnist_root, "--quiet"])
    assert again.exit_code == 0, again.output
    assert f"-> {tmp_path / 'm'}" in again.output


@pytest.mark.parametrize("kind", ["under_a_file", "pt_under_a_file", "folder_is_a_file", "no_permission"])
def test_unwritable_out_is_one_line_before_any_work(tmp_path, monkeypatch, kind):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    if kind == "under_a_file":
        out, needle = blocker / "run", "is a file"
    elif kind == "pt_under_a_file":
        out, needle = blocker / "m.pt", "is a file"
    elif kind == "folder_is_a_file":
        (tmp_path / "m").write_text("in the way of the run folder m/")
        out, needle = tmp_path / "m.pt", "is not a folder"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if pathlib.Path(p) == locked
                            else real_access(p, mode, **kw))
        out, needle = locked / "run", "no permission"
    # no data root at all: the --out check comes first, before any data is read
    result = _invoke(["train-small", *QUICK, "--data-dir", tmp_path / "no-data", "--out", out])
    _assert_one_line_error(result, needle)
    assert not (tmp_path / "no-data").exists()


# One validation path: a bad value reads the same from a flag as from the TOML file (click's
# own type errors for flags aside, which are one line too).
@pytest.mark.parametrize("key, toml_value, flag_value, needle", [
    ("epochs", '"ten"', None, "epochs must be an integer"),
    ("epochs", "1.5", None, "epochs must be an integer"),
    ("epochs", "0", "0", "epochs 0"),
    ("lr", '"fast"', None, "lr must be a number"),
    ("lr", "-1.0", "-1", "lr -1"),
    ("batch_size", "0", "0", "batch size 0"),
    ("subset", "0", "0", "subset 0"),
    ("adv_ce", "2.0", "2", "adv_ce 2"),
    ("eps_ramp_start", "0.9", "0.9", "eps ramp"),
    ("sabr_lambda", "0.0", "0", "sabr_lambda"),
    ("augment", "1", None, "augment must be true or false"),
    ("reg", '"l2"', None, "reg 'l2'"),
    ("eps", '"8/0"', "8/0", "division by zero"),
    ("eps", "3.0", "3", "[0, 1]"),
])
def test_bad_training_settings_from_toml_and_flags(tmp_path, key, toml_value, flag_value, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"{key} = {toml_value}\n")
    result = _invoke(["train-small", "--out", tmp_path / "o", "--config", cfg, "--quiet"])
    line = _assert_one_line_error(result, needle)
    if "must be" in needle:
        assert str(cfg) in line  # type errors name the file
    if flag_value is not None:
        result = _invoke(["train-small", "--out", tmp_path / "o", f"--{key.replace('_', '-')}", flag_value, "--quiet"])
        _assert_one_line_error(result, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, expected", [("--augment", True), ("--no-augment", False), (None, False)])
def test_augment_flag_reaches_the_run_config(tmp_path, mnist_root, flag, expected):
    """MNIST trains without augmentation by default; the flag turns it on or off either way."""
    out = tmp_path / "run"
    result = _invoke(["train-small", *QUICK, "--data-dir", mnist_root, "--out", out, *([flag] if flag else [])])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((out / "config.json").read_text())["augment"] is expected
