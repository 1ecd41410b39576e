"""Interrupting `hamverify verify` (issue 16, item 11): worker processes die with their driver
(`kill -9` included), SIGTERM behaves like Ctrl-C (one line, exit 143; Ctrl-C 130), an interrupt
ends the input in flight within seconds instead of waiting for its solve, in the driver (one
worker) as in worker processes, and the records written before stay valid and resume.

No data set is needed: the shipped MNIST model runs on the embedded test images (the data root
is an empty folder).  A long solve is stood in for by runner's HAMVERIFY_TEST_STALL_INDEX hook
(the input sleeps 600 s before it is verified), so the tests do not depend on solver speed."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from hamverify.records import read_records

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = REPO_ROOT / "models" / "mnist_small_hamming_0.1.pt"
COUNT = 6
QUICK_EXIT_S = 5.0  # the issue asks for ~2 s; margin for a loaded 2-core machine

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, sends POSIX signals"),
              pytest.mark.skipif(not MODEL.is_file(), reason="the shipped MNIST model is missing")]


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        found += kids
        frontier += kids
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a dead child waits for its new parent to reap it)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until(condition, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def lines(path: pathlib.Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "no-data").mkdir()
    config = tmp_path / "quick.toml"
    config.write_text(f'model = "{MODEL}"\neps = 0.1\ncount = {COUNT}\ntimeout = 20\ntightening = "symbolic"\n'
                      f'pgd_steps = 5\npgd_restarts = 1\nresults = "{tmp_path / "r.jsonl"}"\n')
    return tmp_path


def start(run_dir, workers: int, stall: str | None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "HAMVERIFY_DATA": str(run_dir / "no-data")}
    env.pop("HAMVERIFY_TEST_STALL_INDEX", None)
    if stall is not None:
        env["HAMVERIFY_TEST_STALL_INDEX"] = stall
    cmd = [sys.executable, "-m", "hamverify.cli", "verify", "--config", str(run_dir / "quick.toml"),
           "--workers", str(workers)]
    err = open(run_dir / f"stderr_{time.monotonic_ns()}.txt", "w+")
    # Ctrl-C as a user's terminal delivers it: a run started from a background shell job inherits
    # SIGINT ignored, and then no process sees it (Python installs no KeyboardInterrupt handler).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=run_dir,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, err, cmd, env


def stderr_of(err) -> str:
    err.flush()
    err.seek(0)
    return err.read()


def test_workers_die_with_a_driver_killed_by_sigkill(run_dir):
    """Both workers in a 600-s 'solve'; the driver gets kill -9: its workers are gone within
    seconds (before: they ran on, parent 1, until their solve ended)."""
    results = run_dir / "r.jsonl"
    proc, err, _, _ = start(run_dir, 2, "2,3")
    try:
        assert wait_until(lambda: lines(results) >= 2 or proc.poll() is not None, 180), stderr_of(err)
        assert proc.poll() is None, stderr_of(err)
        time.sleep(0.5)  # both workers now hold a stalled input
        workers = children(proc.pid)
        assert len(workers) >= 2, workers
        t0 = time.monotonic()
        proc.kill()
        proc.wait(30)
        assert wait_until(lambda: not any(running(w) for w in workers), QUICK_EXIT_S), \
            [w for w in workers if running(w)]
        gone_after = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in children(proc.pid):
            os.kill(w, signal.SIGKILL)
    assert gone_after < QUICK_EXIT_S
    records, note = read_records(results)
    assert note is None and sorted(r.index for r in records) == [0, 1]


@pytest.mark.parametrize("sig, code, line", [
    (signal.SIGTERM, 143, "terminated (SIGTERM); finished work is saved (rerun the same command to resume)"),
    (signal.SIGINT, 130, "interrupted; finished work is saved (rerun the same command to resume)")])
@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupt_ends_the_input_in_flight_and_the_run_resumes(run_dir, sig, code, line, workers):
    """With one worker the input is verified in the driver; with two in worker processes.  Either
    way the run ends within seconds of the signal, with one line and exit 130 (Ctrl-C) or 143
    (SIGTERM); the records written before are whole, and the same command resumes from them."""
    results = run_dir / "r.jsonl"
    stalled = "3" if workers == 1 else "3,4"
    proc, err, cmd, env = start(run_dir, workers, stalled)
    try:
        assert wait_until(lambda: lines(results) >= 3 or proc.poll() is not None, 180), stderr_of(err)
        assert proc.poll() is None, stderr_of(err)
        time.sleep(0.5)
        workers_seen = children(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(60)
        took = time.monotonic() - t0
        assert wait_until(lambda: not any(running(w) for w in workers_seen), QUICK_EXIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = stderr_of(err)
    assert rc == code, text
    assert took < QUICK_EXIT_S, (took, text)
    assert text.strip().splitlines()[-1] == line, text
    assert "Traceback" not in text
    records, note = read_records(results)
    assert note is None  # no half-written line
    done = sorted(r.index for r in records)
    assert len(done) >= 3 and 3 not in done and len(set(done)) == len(done)
    env.pop("HAMVERIFY_TEST_STALL_INDEX")
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=run_dir, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(done)} of {COUNT}" in rerun.stderr
    records, note = read_records(results)
    assert note is None and sorted(r.index for r in records) == list(range(COUNT))
