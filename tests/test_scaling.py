"""Scaling out and surviving faults (docs/SCALING.md): a real LocalCluster on loopback gives the
records of a local run; a worker killed mid-input costs only that input (retried once, then
`error`); a driver killed with SIGKILL resumes without lost or duplicated records; a memory cap per
worker turns a memory-hungry input into `error: memory`; an unreachable scheduler is a one-line
error within seconds.  Faults are injected with runner's HAMVERIFY_TEST_* hooks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from hamverify import HamverifyError
from hamverify.cli import main
from hamverify.cluster import SchedulerSpec, parse_memory, parse_scheduler
from hamverify.models import load_checkpoint, save_checkpoint
from hamverify.records import read_records
from hamverify.report import summarize
from hamverify.runner import _is_memory_error, run_verification

try:  # tests/ is on sys.path under pytest's default import mode
    from test_runner import EPS, comparable, data_root, settings, train_tiny, verdicts
except ImportError:  # tests/ as a package
    from tests.test_runner import EPS, comparable, data_root, settings, train_tiny, verdicts

N = 16
CRASH, HOG = 3, 5  # an input whose worker dies, an input that allocates far too much


# ------------------------------------------------------------------------------- parsing (fast)


@pytest.mark.parametrize("text, expected", [("4GB", 4 * 10**9), ("512MB", 512 * 10**6), ("2GiB", 2 * 2**30),
                                            ("1.5g", 1.5e9), ("64 MiB", 64 * 2**20), ("300000000", 3 * 10**8),
                                            (1024, 1024), ("10kb", 10**4)])
def test_memory_sizes(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["4XB", "GB", "-1GB", "0", "", "four gigabytes", True])
def test_bad_memory_sizes(text):
    with pytest.raises(HamverifyError, match="max-memory-per-worker"):
        parse_memory(text)


def test_scheduler_addresses(tmp_path):
    assert parse_scheduler("tcp://10.0.0.5:8786") == SchedulerSpec("address", "tcp://10.0.0.5:8786")
    assert parse_scheduler("node17:8786") == SchedulerSpec("address", "tcp://node17:8786")
    assert parse_scheduler("tls://head.cluster.org:8786").target == "tls://head.cluster.org:8786"
    assert parse_scheduler("local:3") == SchedulerSpec("local", None, 3)
    assert parse_scheduler("local", workers=5).n_workers == 5
    sched = tmp_path / "scheduler.json"
    sched.write_text('{"address": "tcp://127.0.0.1:1"}')
    assert parse_scheduler(str(sched)) == SchedulerSpec("file", str(sched))
    for bad in ["local:0", "local:x", "http://x", "tcp://nohost", str(tmp_path / "missing.json")]:
        with pytest.raises(HamverifyError, match="--scheduler"):
            parse_scheduler(bad)


def test_allocation_failures_count_as_memory():
    assert _is_memory_error(MemoryError())
    try:
        import numpy as np
        np.empty(2**62, dtype=np.uint8)
    except MemoryError as exc:  # numpy's _ArrayMemoryError
        assert _is_memory_error(exc)
    assert _is_memory_error(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 10000000000 bytes."))
    assert not _is_memory_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


# --------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("scaling")


@pytest.fixture(scope="module")
def model_path(mnist, workdir):
    return train_tiny(workdir / "tiny.pt")


def run(model_path, results, mnist, indices=range(N), **kw):
    log = []
    x, y = mnist
    recs = run_verification(model_path, settings(), x, y, list(indices), results, progress=False, log=log.append,
                            **kw)
    return recs, log


def on_disk(path):
    records, note = read_records(path)
    assert note is None
    return records


@pytest.fixture(scope="module")
def reference(model_path, mnist, workdir):
    """In the driver, one input after the other."""
    recs, _ = run(model_path, workdir / "reference.jsonl", mnist, range(3 * N))
    assert {r.status for r in recs[:N]} >= {"verified", "falsified", "misclassified"}
    return recs


def same_except(recs, reference, *skip):
    assert [r.index for r in recs] == [r.index for r in reference]
    assert {k: v for k, v in verdicts(recs).items() if k not in skip} == \
        {k: v for k, v in verdicts(reference).items() if k not in skip}


@pytest.fixture()
def hooks(monkeypatch):
    for name in ("HAMVERIFY_TEST_CRASH_INDEX", "HAMVERIFY_TEST_ALLOCATE_BYTES", "HAMVERIFY_TEST_ALLOCATE_INDEX"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_local_cluster_gives_the_records_of_a_local_run(model_path, mnist, workdir, reference, hooks):
    pytest.importorskip("distributed")
    results = workdir / "dask.jsonl"
    recs, log = run(model_path, results, mnist, scheduler="local:2")
    assert any("started a local Dask cluster of 2 worker process(es) at tcp://127.0.0.1:" in m for m in log), log
    same_except(recs, reference[:N])
    assert comparable(summarize(recs)) == comparable(summarize(reference[:N]))
    disk = on_disk(results)
    assert len(disk) == N and len({r.index for r in disk}) == N
    for r in recs:
        if r.status == "falsified":
            assert os.path.isfile(r.counterexample)
    # a second run has nothing left to do: no cluster is started
    again, log = run(model_path, results, mnist, scheduler="local:2")
    assert any(f"resuming: {N} of {N}" in m for m in log) and not any("started" in m for m in log)


def test_local_cluster_survives_a_dying_worker_and_a_hungry_input(model_path, mnist, workdir, reference, hooks):
    pytest.importorskip("distributed")
    hooks.setenv("HAMVERIFY_TEST_CRASH_INDEX", str(CRASH))
    hooks.setenv("HAMVERIFY_TEST_ALLOCATE_INDEX", str(HOG))
    hooks.setenv("HAMVERIFY_TEST_ALLOCATE_BYTES", str(8 * 2**30))
    recs, log = run(model_path, workdir / "dask_faults.jsonl", mnist, scheduler="local:2",
                    max_memory_per_worker="256MB")
    by = {r.index: r for r in recs}
    assert by[CRASH].status == "error" and "worker died" in by[CRASH].reason and "2 Dask workers" in by[CRASH].reason
    assert by[HOG].status == "error" and by[HOG].reason == "memory"
    same_except(recs, reference[:N], CRASH, HOG)
    assert len(on_disk(workdir / "dask_faults.jsonl")) == N


def test_a_dying_worker_costs_only_its_input(model_path, mnist, workdir, reference, hooks):
    hooks.setenv("HAMVERIFY_TEST_CRASH_INDEX", str(CRASH))
    results = workdir / "crash.jsonl"
    recs, log = run(model_path, results, mnist, workers=2)
    by = {r.index: r for r in recs}
    assert by[CRASH].status == "error"
    assert by[CRASH].reason == "worker died: the worker process verifying it died 2 times (last: exit code 1)"
    assert sum(f"input {CRASH}: its worker process died" in m for m in log) == 1  # retried once
    same_except(recs, reference[:N], CRASH)
    assert sorted(r.index for r in on_disk(results)) == list(range(N))


def test_memory_cap_per_worker(model_path, mnist, workdir, reference, hooks):
    """A small cap (64 MB beyond the loaded model) leaves normal inputs alone; an input that
    allocates 8 GiB is recorded error: memory and the run goes on."""
    hooks.setenv("HAMVERIFY_TEST_ALLOCATE_INDEX", str(HOG))
    hooks.setenv("HAMVERIFY_TEST_ALLOCATE_BYTES", str(8 * 2**30))
    recs, log = run(model_path, workdir / "memory.jsonl", mnist, max_memory_per_worker="64MB")
    assert any("may use 64 MB beyond the loaded model" in m for m in log), log
    by = {r.index: r for r in recs}
    assert by[HOG].status == "error" and by[HOG].reason == "memory"
    same_except(recs, reference[:N], HOG)


def _has_psutil():
    try:
        import psutil  # noqa: F401  (comes with distributed)
        return True
    except ImportError:
        return False


def _children(pid):
    try:
        import psutil
        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


def test_driver_killed_with_sigkill_then_rerun(model_path, mnist, workdir, reference, hooks):
    count, k = 3 * N, 4
    results = workdir / "killed.jsonl"
    config = workdir / "killed.toml"
    config.write_text(f'model = "{model_path}"\neps = {EPS}\ncount = {count}\nresults = "{results}"\n'
                      f'data_dir = "{data_root()}"\ntimeout = 20.0\ntightening = "ia"\npgd_steps = 10\n'
                      f'pgd_restarts = 2\nworkers = 2\n')
    cmd = [sys.executable, "-m", "hamverify.cli", "verify", "--config", str(config), "--quiet", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines, workers, deadline = 0, [], time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        workers = workers if len(workers) >= 2 else _children(proc.pid)
        if results.exists():
            lines = results.read_bytes().count(b"\n")
            if lines >= k:
                break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert k <= lines < count, "the driver was not killed mid-run"
    if _has_psutil():
        assert len(workers) >= 2, "the driver's worker processes were not seen"
    for w in workers:  # its worker processes notice and exit
        try:
            w.wait(timeout=30)
        except Exception as exc:
            if type(exc).__name__ != "NoSuchProcess":
                raise
    done = read_records(results)[0]  # (a last line cut off by the kill is dropped, and recomputed)
    assert len({r.index for r in done}) == len(done)
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(done)} of {count}" in rerun.stderr
    disk = on_disk(results)
    assert len(disk) == count and sorted(r.index for r in disk) == list(range(count))  # none lost, none twice
    assert verdicts(disk) == verdicts(reference)
    summary = json.loads(rerun.stdout)
    assert comparable({k: v for k, v in summary.items() if k not in ("results", "wall_time")}) == \
        comparable(summarize(reference))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res):
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output and res.stdout == ""
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def test_unreachable_scheduler_is_a_one_line_error(model_path, mnist, workdir):
    pytest.importorskip("distributed")
    results = workdir / "nowhere.jsonl"
    t0 = time.monotonic()
    res = invoke("verify", "--model", model_path, "--count", 3, "--data-dir", data_root(), "--quiet",
                 "--results", results, "--scheduler", "tcp://127.0.0.1:1")
    assert time.monotonic() - t0 < 10
    assert "cannot reach the Dask scheduler tcp://127.0.0.1:1" in one_error_line(res)
    assert not results.exists()


def test_bad_scheduler_and_memory_values(model_path, mnist, workdir):
    base = ["verify", "--model", model_path, "--count", 2, "--data-dir", data_root(), "--quiet",
            "--results", workdir / "bad.jsonl"]
    assert "local:0" in one_error_line(invoke(*base, "--scheduler", "local:0"))
    assert "4XB" in one_error_line(invoke(*base, "--max-memory-per-worker", "4XB"))
    config = workdir / "bad_memory.toml"
    config.write_text('max_memory_per_worker = "lots"\n')
    assert "lots" in one_error_line(invoke(*base, "--config", config))


def test_another_models_results_are_refused_before_connecting(model_path, mnist, workdir, reference):
    """The refusal of a foreign results file comes first, without waiting on the cluster."""
    other = workdir / "other.pt"
    model, _ = load_checkpoint(model_path)
    with torch.no_grad():
        model[-1].bias.add_(0.01)
    save_checkpoint(other, model, arch="tiny_mlp", dataset="mnist", eps=EPS)
    results = workdir / "reference.jsonl"
    before = results.read_bytes()
    t0 = time.monotonic()
    with pytest.raises(HamverifyError, match="another model"):
        run(other, results, mnist, scheduler="tcp://127.0.0.1:1")
    assert time.monotonic() - t0 < 3
    assert results.read_bytes() == before
