"""`hamverify verify` and `hamverify summary`: the summary table, --json, resume, config files, and
bad inputs ending in a one-line error with a non-zero exit (never a traceback)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hamverify.cli import main

try:  # tests/ is on sys.path under pytest's default import mode
    from conftest import has_data
    from test_runner import data_root, train_tiny
except ImportError:  # tests/ as a package
    from tests.conftest import has_data
    from tests.test_runner import data_root, train_tiny

EPS = "0.05"


@pytest.fixture(scope="module")
def root():
    r = data_root()
    if not has_data(r, "mnist"):
        pytest.skip(f"MNIST not found under {r}")
    return r


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def tiny(root, workdir):
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_tiny(workdir / "tiny.pt", data_dir=root)
    torch.set_num_threads(threads)


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def summary_rows(text: str) -> dict:
    """'  label   value' rows of the summary table (the wall-time row left out)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("  ") and "wall time" not in line:
            key, _, value = line.strip().partition("  ")
            rows[key.strip()] = value.strip()
    return rows


@pytest.fixture(scope="module")
def first_run(tiny, root, workdir):
    results = workdir / "R.jsonl"
    res = invoke("verify", "--model", tiny, "--eps", EPS, "--count", 10, "--results", results, "--quiet",
                 "--data-dir", root)
    return results, res


def test_verify_prints_the_summary_table(first_run):
    results, res = first_run
    assert res.exit_code == 0, res.output
    assert "verifying 10 inputs of mnist test at eps 0.05" in res.stderr
    assert "resuming" not in res.stderr
    rows = summary_rows(res.stdout)
    assert rows["inputs"] == "10"
    for key in ("clean accuracy", "PGD-robust accuracy", "verified accuracy", "falsified (exact)", "timeouts"):
        assert key in rows, rows
    assert "wall time (this run)" in res.stdout
    assert res.stdout.splitlines()[0].startswith("eps 0.05, tightening symbolic, backend highs")
    assert len(results.read_text().splitlines()) == 10


def test_json_rerun_resumes_and_summary_agrees(first_run, tiny, root):
    results, first = first_run
    res = invoke("verify", "--model", tiny, "--eps", EPS, "--count", 10, "--results", results, "--quiet",
                 "--data-dir", root, "--json")
    assert res.exit_code == 0, res.output
    assert "resuming: 10 of 10" in res.stderr
    s = json.loads(res.stdout)
    assert s["n"] == 10 and s["eps"] == 0.05 and s["results"] == str(results)
    assert s["verified"] + s["falsified"] + s["misclassified"] + s["timeout"] + s["unknown"] + s["error"] == 10
    assert len(results.read_text().splitlines()) == 10  # nothing recomputed or appended
    table = summary_rows(first.stdout)
    assert table["verified accuracy"] == f"{100 * s['verified_accuracy']:6.2f} %".strip()
    assert table["timeouts"] == str(s["timeout"])

    again = invoke("summary", results)
    assert again.exit_code == 0, again.output
    assert summary_rows(again.stdout) == table
    as_json = invoke("summary", results, "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == {k: v for k, v in s.items() if k not in ("results", "wall_time")}


def test_more_inputs_extend_the_results_file(first_run, tiny, root, workdir):
    results, _ = first_run
    extended = workdir / "R_extended.jsonl"
    extended.write_bytes(results.read_bytes())
    res = invoke("verify", "--model", tiny, "--eps", EPS, "--count", 12, "--results", extended, "--quiet",
                 "--data-dir", root, "--json")
    assert res.exit_code == 0, res.output
    assert "resuming: 10 of 12" in res.stderr
    assert json.loads(res.stdout)["n"] == 12
    assert len(extended.read_text().splitlines()) == 12


def test_config_file_with_flags_overriding_it(tiny, root, workdir):
    results = workdir / "from_config.jsonl"
    config = workdir / "ok.toml"
    config.write_text(f'model = "{tiny}"\neps = "1/20"\ncount = 5\nstart = 2\nresults = "{results}"\n'
                      f'data_dir = "{root}"\npgd_restarts = 2\ntightening = "ia"\n')
    res = invoke("verify", "--config", config, "--count", 3, "--quiet", "--json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["n"] == 3 and s["eps"] == pytest.approx(0.05) and s["tightening"] == "ia"
    indices = [json.loads(line)["index"] for line in results.read_text().splitlines()]
    assert indices == [2, 3, 4]


def test_data_dir_from_the_environment(tiny, root, workdir):
    res = invoke("verify", "--model", tiny, "--count", 2, "--results", workdir / "env.jsonl", "--quiet",
                 env={"HAMVERIFY_DATA": str(root)})
    assert res.exit_code == 0, res.output
    assert "at eps 0.05" in res.stderr  # the checkpoint's eps, no --eps given


# ------------------------------------------------------------------------------------ bad inputs


def assert_one_line_error(res, *fragments):
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # handled, not a crash
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.lower().startswith("error:")]
    assert len(errors) == 1, res.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert res.stdout == ""


@pytest.fixture(scope="module")
def other_model(tiny, workdir):
    import torch
    from hamverify.models import load_checkpoint, save_checkpoint
    model, _ = load_checkpoint(tiny)
    with torch.no_grad():
        model[-1].bias.add_(0.5)
    path = workdir / "other.pt"
    save_checkpoint(path, model, arch="tiny_mlp", dataset="mnist", eps=0.05)
    return path


@pytest.mark.parametrize("case", ["eps_div_zero", "eps_range", "missing_model", "corrupt_checkpoint",
                                  "truncated_checkpoint", "unknown_backend_flag", "unknown_backend_config",
                                  "count_zero", "another_model", "another_eps", "unknown_config_key",
                                  "missing_config", "missing_data_dir", "bad_split", "start_past_end",
                                  "negative_tol", "huge_tol", "another_tightening", "toml_count_string",
                                  "toml_timeout_string", "toml_count_float", "toml_workers_zero",
                                  "toml_workers_negative", "toml_start_negative", "toml_tol_negative",
                                  "unknown_bab_branching"])
def test_bad_inputs_give_a_one_line_error(case, tiny, other_model, first_run, root, workdir):
    results, _ = first_run
    base = ["verify", "--quiet", "--data-dir", root, "--count", 2]
    fresh = workdir / f"{case}.jsonl"
    if case == "eps_div_zero":
        res, fragments = invoke(*base, "--model", tiny, "--eps", "8/0", "--results", fresh), ["8/0", "division by zero"]
    elif case == "eps_range":
        res, fragments = invoke(*base, "--model", tiny, "--eps", "2", "--results", fresh), ["[0, 1]"]
    elif case == "missing_model":
        res, fragments = invoke(*base, "--model", workdir / "nope.pt", "--results", fresh), ["checkpoint not found"]
    elif case == "corrupt_checkpoint":
        bad = workdir / "corrupt.pt"
        bad.write_bytes(b"this is not a checkpoint\n" * 10)
        res, fragments = invoke(*base, "--model", bad, "--results", fresh), ["not a readable checkpoint"]
    elif case == "truncated_checkpoint":
        bad = workdir / "truncated.pt"
        raw = pathlib.Path(tiny).read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
        res, fragments = invoke(*base, "--model", bad, "--results", fresh), ["truncated.pt"]
    elif case == "unknown_backend_flag":
        res, fragments = invoke(*base, "--model", tiny, "--backend", "gurobi", "--results", fresh), ["gurobi"]
    elif case == "unknown_backend_config":
        config = workdir / "backend.toml"
        config.write_text('backend = "gurobi"\n')
        res, fragments = invoke(*base, "--model", tiny, "--config", config, "--results", fresh), ["gurobi"]
    elif case == "unknown_bab_branching":
        res, fragments = invoke(*base, "--model", tiny, "--bab-branching", "random", "--results", fresh), \
            ["bab_branching", "random", "fsb"]
    elif case == "count_zero":
        res, fragments = invoke(*base[:-2], "--count", 0, "--model", tiny, "--results", fresh), ["--count"]
    elif case == "another_model":
        res, fragments = invoke(*base, "--model", other_model, "--results", results), ["another model"]
    elif case == "another_eps":
        res, fragments = invoke(*base, "--model", tiny, "--eps", "0.1", "--results", results), ["eps"]
    elif case == "unknown_config_key":
        config = workdir / "unknown.toml"
        config.write_text(f'model = "{tiny}"\ntimeuot = 5\n')
        res, fragments = invoke(*base, "--config", config, "--results", fresh), ["unknown key", "timeuot"]
    elif case == "missing_config":
        res, fragments = invoke(*base, "--model", tiny, "--config", workdir / "nope.toml"), ["config file not found"]
    elif case == "missing_data_dir":
        res = invoke("verify", "--quiet", "--model", tiny, "--data-dir", workdir / "no_data", "--results", fresh)
        fragments = ["data directory", "does not exist"]
    elif case == "bad_split":
        res, fragments = invoke(*base, "--model", tiny, "--split", "validation", "--results", fresh), ["split"]
    elif case == "start_past_end":
        res, fragments = invoke(*base, "--model", tiny, "--start", 10000, "--results", fresh), ["--start"]
    elif case == "negative_tol":
        res, fragments = invoke(*base, "--model", tiny, "--tol", "-1", "--results", fresh), ["tol", "[0, 1]"]
    elif case == "huge_tol":
        res, fragments = invoke(*base, "--model", tiny, "--tol", "5", "--results", fresh), ["tol", "[0, 1]"]
    elif case == "another_tightening":
        res, fragments = invoke(*base, "--model", tiny, "--tightening", "ia", "--results", results), ["tightening"]
    elif case.startswith("toml_"):
        line, fragments = {"toml_count_string": ('count = "x"', ["count", "integer"]),
                           "toml_timeout_string": ('timeout = "abc"', ["timeout", "number"]),
                           "toml_count_float": ("count = 1.5", ["count", "integer"]),
                           "toml_workers_zero": ("workers = 0", ["workers", ">= 1"]),
                           "toml_workers_negative": ("workers = -2", ["workers", ">= 1"]),
                           "toml_start_negative": ("start = -3", ["start", ">= 0"]),
                           "toml_tol_negative": ("tol = -0.5", ["tol"])}[case]
        config = workdir / f"{case}.toml"
        config.write_text(f'model = "{tiny}"\n{line}\n')
        res = invoke("verify", "--quiet", "--data-dir", root, "--config", config, "--results", fresh)
    assert_one_line_error(res, *fragments)
    if case in ("another_model", "another_eps", "another_tightening"):
        assert len(results.read_text().splitlines()) >= 10  # the refused file is left as it was
    else:
        assert not fresh.exists() or fresh.read_text() == ""


def test_summary_errors_and_truncated_files(first_run, workdir):
    results, _ = first_run
    assert_one_line_error(invoke("summary", workdir / "none.jsonl"), "not found")
    damaged = workdir / "damaged.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    damaged.write_text("".join(lines[:3]) + "garbage\n" + "".join(lines[3:]))
    assert_one_line_error(invoke("summary", damaged), "line 4")
    truncated = workdir / "truncated.jsonl"
    truncated.write_text("".join(lines[:-1]) + lines[-1][:20])
    res = invoke("summary", truncated, "--json")
    assert res.exit_code == 0 and "truncated" in res.stderr
    assert json.loads(res.stdout)["n"] == 9


def test_the_installed_command_prints_one_line_without_traceback(workdir):
    """The real entry point, in a subprocess: what a user sees on the terminal."""
    proc = subprocess.run([sys.executable, "-m", "hamverify.cli", "verify", "--model", str(workdir / "nope.pt")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: checkpoint not found: {workdir / 'nope.pt'}"]


# ------------------------------------------- issue 16, item 10: one line where a traceback was


def test_results_path_under_a_regular_file(tiny, root, workdir):
    """Tests run as root, where chmod does not stop writes: a path under a regular FILE cannot be
    created by anyone."""
    blocker = workdir / "file.txt"
    blocker.write_text("not a folder\n")
    res = invoke("verify", "--quiet", "--data-dir", root, "--count", 2, "--model", tiny,
                 "--results", blocker / "results.jsonl")
    assert_one_line_error(res, "results file", str(blocker), "is a file")


def test_default_results_folder_blocked_by_a_file(tiny, root, workdir, monkeypatch):
    cwd = workdir / "blocked_cwd"
    cwd.mkdir()
    (cwd / "results").write_text("")  # where the default results/ folder would go
    monkeypatch.chdir(cwd)
    res = invoke("verify", "--quiet", "--data-dir", root, "--count", 2, "--model", tiny)
    assert_one_line_error(res, "results", "is a file")


def test_results_folder_without_permission(tiny, root, workdir, monkeypatch):
    """No write permission (os.access says no: as root, chmod would not)."""
    locked = workdir / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if pathlib.Path(p) == locked
                        else real_access(p, mode, **kw))
    res = invoke("verify", "--quiet", "--data-dir", root, "--count", 2, "--model", tiny,
                 "--results", locked / "sub" / "r.jsonl")
    assert_one_line_error(res, "no permission", str(locked))


def test_a_write_that_fails_anyway_is_one_line(tiny, root, workdir, monkeypatch):
    """Past the early check (a full disk, a permission the check could not see): one line."""
    import hamverify.records
    import hamverify.runner

    def refuse(self, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(hamverify.records.ResultsWriter, "__init__", refuse)
    res = invoke("verify", "--quiet", "--data-dir", root, "--count", 2, "--model", tiny,
                 "--results", workdir / "refused.jsonl")
    assert_one_line_error(res, "cannot write the results file", "Permission denied")
    monkeypatch.undo()

    def disk_full(results_path, index, point, input_shape):
        raise OSError(28, "No space left on device", f"{results_path}.cex/{index}.npy")

    monkeypatch.setattr(hamverify.runner, "save_counterexample", disk_full)
    res = invoke("verify", "--quiet", "--data-dir", root, "--count", 10, "--model", tiny,
                 "--results", workdir / "disk_full.jsonl")
    assert_one_line_error(res, "No space left on device", ".cex/")


def test_a_checkpoint_of_another_input_shape(tiny, root, workdir):
    """An MNIST checkpoint with --dataset cifar10 (was: ValueError: cannot reshape)."""
    res = invoke("verify", "--quiet", "--data-dir", root, "--count", 2, "--model", tiny, "--dataset", "cifar10",
                 "--results", workdir / "shape.jsonl")
    assert_one_line_error(res, "1x28x28", "cifar10", "3x32x32", "--dataset mnist")
    res = invoke("evaluate", "--model", tiny, "--dataset", "cifar10", "--data-dir", root, "--count", 2)
    assert_one_line_error(res, "trained on mnist", "cannot read cifar10", "--dataset mnist")
    res = invoke("stats", "--model", tiny, "--dataset", "cifar10", "--data-dir", root, "--count", 2, "--quiet")
    assert_one_line_error(res, "cannot read cifar10")


@pytest.mark.parametrize("command", ["evaluate", "stats", "export"])
def test_an_onnx_file_where_a_checkpoint_is_needed(command, workdir):
    net = workdir / "net.onnx"
    net.write_bytes(b"\x08\x07")  # the name decides; the bytes are never read
    extra = ["--out", workdir / "again.onnx"] if command == "export" else []
    res = invoke(command, "--model", net, *extra)
    line = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert_one_line_error(res, "is an ONNX model", f"{command} needs a hamverify checkpoint (.pt")
    assert "Weights only" not in line[0]
    if command == "evaluate":
        assert "hamverify verify --model" in line[0]


def tiny_bytes_source():
    return pathlib.Path(__file__).resolve().parents[1] / "models" / "mnist_small_hamming_0.1.pt"


def test_unreadable_checkpoints_are_explained_not_cut_mid_word(workdir):
    import pickle
    foreign = workdir / "foreign.pt"
    # a plain pickle, not a torch file: torch's weights-only loader refuses it with a paragraph of advice
    foreign.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    res = invoke("evaluate", "--model", foreign)
    assert_one_line_error(res, str(foreign), "not a torch checkpoint of tensors")
    line = res.stderr.strip().splitlines()[-1]
    assert "If yo" not in line and "weights_only" not in line and line.endswith(")")
    truncated = workdir / "short.pt"
    truncated.write_bytes(pathlib.Path(tiny_bytes_source()).read_bytes()[:300])
    assert_one_line_error(invoke("evaluate", "--model", truncated), "truncated or corrupt")


def test_short_text_cuts_at_a_word():
    from hamverify.models import short_text
    text = "Weights only load failed. This file can still be loaded, to do so you have two options. If you"
    cut = short_text(text, 60)
    assert len(cut) <= 60 and cut.endswith("...") and cut[:-3] == text[:len(cut) - 3]
    assert text.startswith(cut[:-3]) and text[len(cut) - 3] in " ,."  # ends at a word boundary
    assert short_text("a  b\nc", 60) == "a b c"


def test_export_out_under_a_regular_file(tiny, workdir):
    pytest.importorskip("onnx")
    blocker = workdir / "file.txt"
    blocker.write_text("x")
    res = invoke("export", "--model", tiny, "--out", blocker / "net.onnx")
    assert_one_line_error(res, "ONNX file (--out)", "is a file")


# -------------------------------------- issue 16, item 12: the embedded samples, offline first

SHIPPED_MNIST = pathlib.Path(__file__).resolve().parents[1] / "models" / "mnist_small_hamming_0.1.pt"


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """An empty data root and a network that records every URL asked for."""
    import hamverify.data
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("HAMVERIFY_DATA", str(empty))
    asked = []

    def no_network(url, timeout=None):
        asked.append(url)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(hamverify.data.urllib.request, "urlopen", no_network)
    hamverify.data.clear_cache()
    return tmp_path, asked


def test_embedded_mnist_offline_first_with_its_own_hint(no_data):
    tmp, asked = no_data
    res = invoke("verify", "--model", SHIPPED_MNIST, "--count", 2, "--quiet", "--results", tmp / "m.jsonl")
    assert res.exit_code == 0, res.output
    assert asked == []  # no download without --download
    assert "using the 100 embedded official mnist test images" in res.stderr
    hint = res.stderr.strip().splitlines()[-1]
    assert "these were the 100 embedded mnist test images" in hint
    assert "verify_configs/mnist_small_0.1.toml" in hint and "--download" in hint
    assert "CIFAR" not in hint and "cifar10" not in hint


def test_start_past_the_embedded_samples(no_data):
    tmp, asked = no_data
    res = invoke("verify", "--model", SHIPPED_MNIST, "--start", 150, "--quiet", "--results", tmp / "s.jsonl")
    assert_one_line_error(res, "--start 150", "the 100 embedded mnist test images", "no mnist data is installed",
                          "--download")
    assert asked == []


def test_download_only_when_asked(no_data):
    tmp, asked = no_data
    res = invoke("verify", "--model", SHIPPED_MNIST, "--count", 2, "--quiet", "--download",
                 "--results", tmp / "d.jsonl")
    assert_one_line_error(res, "mnist test data not found", "network disabled in tests")
    assert asked and all("t10k" in url for url in asked)
    res = invoke("evaluate", "--model", SHIPPED_MNIST, "--count", 2)
    assert_one_line_error(res, "download disabled", "--download")
