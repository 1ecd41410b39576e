"""Issue 16, items 6 and 7: torch is a range in the package's dependencies and an exact pin only in
the install path; committed benchmark tables (and the scripts that write them) hold no absolute
paths of the machine that made them."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
MACHINE_PATH = re.compile(r"(?<![\w.])/(work|root|home|Users)/")
EXACT_TORCH = "torch==2.13.0"


def load_bench(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------- 6: dependency pins

def test_torch_is_a_range_in_the_package_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = [d for d in deps if re.match(r"torch\b", d)]
    assert len(torch) == 1, deps
    spec = torch[0].replace(" ", "")
    assert "==" not in spec and "===" not in spec, spec  # an exact pin forbids any other torch
    assert ">=" in spec, spec


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_install_path_pins_torch_on_every_pip_line(tmp_path):
    """`make setup` installs the exact CPU torch, and the project's own install carries the pin too
    (so pip cannot replace it with another, e.g. CUDA, build)."""
    out = subprocess.run(["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    pips = [line for line in out.splitlines() if re.search(r"\bpip\b.*\binstall\b", line)]
    assert any(" -e " in line for line in pips), out  # the project itself
    for line in pips:
        pinned = re.search(r"(?<![\w.])'?torch==2\.13\.0'?(\s|$)", line)
        assert pinned or re.search(r"\s(-c|--constraint)\s", line), line
    assert EXACT_TORCH in out


# ------------------------------------------------------------------------- 7: no machine paths committed

def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_committed_benchmark_tables_hold_relative_paths():
    files = sorted((BENCH / "results").glob("*.json"))
    assert files
    for path in files:
        for text in _strings(json.loads(path.read_text())):
            for token in text.split():
                assert not os.path.isabs(token), (path.name, text)


@pytest.mark.parametrize("pattern", ["benchmarks/*.py", "benchmarks/results/*.json", "models/*.md"])
def test_no_machine_paths_in_committed_files(pattern):
    for path in sorted(ROOT.glob(pattern)):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            assert not MACHINE_PATH.search(line), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"


def test_portable_paths():
    pp = load_bench("portable_paths")
    assert pp.portable(ROOT / "models" / "m.pt") == "models/m.pt"
    assert pp.portable("/somewhere/else/runs/r3/m1_adv/model.pt") == "runs/r3/m1_adv/model.pt"
    assert pp.portable("/a/runs/b/runs/c/model.pt") == "runs/c/model.pt"
    assert pp.portable("/opt/elsewhere/x/model.pt") == "x/model.pt"
    cmd = pp.portable_command(["hamverify", "verify", "--model", "/srv/u/runs/r5/c8/model.pt", "--eps", "8/255"])
    assert cmd == "hamverify verify --model runs/r5/c8/model.pt --eps 8/255"


def test_select_by_val_writes_relative_paths(tmp_path, monkeypatch):
    sel = load_bench("select_by_val")
    ckpt = "/machine/work/runs/r3/m1_adv/model.pt"
    monkeypatch.setattr(sel, "read_checkpoint", lambda p: {"dataset": "mnist", "config": {"val_count": 1000,
                                                                                           "recipe": "hv"}})
    monkeypatch.setattr(sel, "load_dataset", lambda d, s: (None, list(range(60000))))
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        results = cmd[cmd.index("--results") + 1]
        return types.SimpleNamespace(returncode=0, stderr="", stdout=json.dumps({"n": 10, "results": results}))

    monkeypatch.setattr(sel.subprocess, "run", fake_run)
    summary = sel.verify_on_val(ckpt, 10, 5.0, tmp_path / "runs" / "select")
    assert seen["cmd"][seen["cmd"].index("--model") + 1] == ckpt  # the real path is what runs
    assert summary["checkpoint"] == "runs/r3/m1_adv/model.pt"
    assert summary["results"] == "runs/select/m1_adv_model.jsonl"
    assert "--model runs/r3/m1_adv/model.pt" in summary["command"]
    for text in _strings(summary):
        assert not any(os.path.isabs(t) for t in text.split()), text


def test_recipe_sweep_writes_relative_checkpoints(monkeypatch):
    sweep = load_bench("recipe_sweep")
    stdout = json.dumps({"verified_accuracy": 0.1, "pgd_accuracy": 0.2, "clean_accuracy": 0.3, "timeout": 0,
                         "unknown": 0, "mean_unstable_per_layer": [1.0]})
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: types.SimpleNamespace(returncode=0, stdout=stdout,
                                                                                       stderr=""))
    args = types.SimpleNamespace(verify_count=10, timeout=5.0, workers=1)
    row = sweep.verify(pathlib.Path("/machine/work/runs/sweep/hv_e25_s0/model.pt"), args)
    assert row["checkpoint"] == "runs/sweep/hv_e25_s0/model.pt"
