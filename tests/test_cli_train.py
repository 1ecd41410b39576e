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

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def data_root():
    env = os.environ.get("HAMVERIFY_DATA")
    root = pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not (root / "cifar10").is_dir():
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
    assert f"training cifar_small on cifar10, reg hamming, recipe {DEFAULT_RECIPE}" in result.output
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
