"""The batch runner (hamverify.runner.run_verification): resume, truncated last lines, refusing
another model's or eps's results file, counterexample files, joblib workers."""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import torch

from hamverify import HamverifyError
from hamverify.models import file_sha256, load_checkpoint, save_checkpoint, tiny_mlp
from hamverify.records import read_records
from hamverify.report import summarize
from hamverify.runner import run_verification
from hamverify.verify import VerifySettings

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
EPS = 0.05
N = 20
TIME_FIELDS = ("time_total", "time_pgd", "time_bounds", "time_build", "time_solve")


def data_root() -> pathlib.Path:
    from_env = os.environ.get("HAMVERIFY_DATA")
    return pathlib.Path(from_env) if from_env else REPO_ROOT.parent / "shared" / "data"


def train_tiny(path, seed=0, steps=150, eps=EPS, data_dir=None):
    """tiny_mlp trained for a few Adam steps on 6000 MNIST training images (~83 % test accuracy):
    at eps 0.05 its first 20 test images give misclassified, PGD-falsified, bounds- and
    MILP-verified records."""
    from hamverify.data import load_dataset, to_tensor
    x, y = load_dataset("mnist", "train", data_dir or data_root())
    torch.manual_seed(seed)
    model = tiny_mlp("mnist")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X, Y = to_tensor(x[:6000]), torch.as_tensor(y[:6000])
    for _ in range(steps):
        idx = torch.randint(0, len(X), (128,))
        loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_checkpoint(path, model.eval(), arch="tiny_mlp", dataset="mnist", eps=eps)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("runner")


@pytest.fixture(scope="module")
def model_path(mnist, workdir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_tiny(workdir / "tiny.pt")
    torch.set_num_threads(threads)


def settings(eps=EPS, **kw):
    return VerifySettings(**{"eps": eps, "timeout": 20.0, "tightening": "ia", "pgd_steps": 10, "pgd_restarts": 2,
                             **kw})


def run(model_path, results, indices, mnist, workers=1, eps=EPS, **kw):
    log = []
    x, y = mnist
    recs = run_verification(model_path, settings(eps, **kw), x, y, list(indices), results, workers=workers,
                            progress=False, log=log.append)
    return recs, log


def file_records(path):
    records, note = read_records(path)
    assert note is None
    return records


def verdicts(records):
    return {r.index: (r.status, r.decided_by) for r in records}


def comparable(summary):
    return {k: v for k, v in summary.items() if not k.startswith("time_") and k != "stage_seconds"}


@pytest.fixture(scope="module")
def full_run(model_path, mnist, workdir):
    """One uninterrupted run over the first N test images: the reference."""
    results = workdir / "full.jsonl"
    recs, log = run(model_path, results, range(N), mnist)
    assert not any("resuming" in m for m in log)
    return results, recs


def test_reference_run_has_a_mix_of_verdicts(full_run, model_path, mnist):
    results, recs = full_run
    assert [r.index for r in recs] == list(range(N))
    kinds = {(r.status, r.decided_by) for r in recs}
    assert {("misclassified", "clean"), ("falsified", "pgd"), ("verified", "bounds"),
            ("verified", "milp")} <= kinds, kinds
    sha = file_sha256(model_path)
    assert all(r.model_sha256 == sha and r.eps == EPS for r in recs)
    assert [r.index for r in file_records(results)] == list(range(N))


def test_counterexample_files(full_run, model_path, mnist):
    results, recs = full_run
    model, _ = load_checkpoint(model_path)
    model = model.double()
    x, _ = mnist
    falsified = [r for r in recs if r.status == "falsified"]
    assert falsified
    for r in recs:
        if r.status != "falsified":
            assert r.counterexample is None
            continue
        path = pathlib.Path(r.counterexample)
        assert path == pathlib.Path(str(results) + ".cex") / f"{r.index}.npy" and path.is_file()
        p = np.load(path)
        assert p.shape == (1, 28, 28) and p.dtype == np.float64
        clean = np.transpose(x[r.index].astype(np.float64) / 255.0, (2, 0, 1))
        assert np.all(p >= 0) and np.all(p <= 1) and np.max(np.abs(p - clean)) <= EPS + 1e-12
        with torch.no_grad():
            z = model(torch.from_numpy(p[None]))[0]
        margin = float(z[r.label] - torch.cat([z[:r.label], z[r.label + 1:]]).max())
        assert margin < 0 and margin == pytest.approx(r.cex_margin, abs=1e-9)


def test_resume_after_an_interrupted_run(full_run, model_path, mnist, workdir):
    _, full = full_run
    results = workdir / "interrupted.jsonl"
    k = 7
    first, _ = run(model_path, results, range(k), mnist)  # the run that was "interrupted" after k records
    recs, log = run(model_path, results, range(N), mnist)
    assert any(f"resuming: {k} of {N}" in m for m in log), log
    assert [r.index for r in recs] == list(range(N))
    on_disk = file_records(results)
    assert len(on_disk) == N and len({r.index for r in on_disk}) == N  # no duplicates
    # The first k were not recomputed.
    assert [r.time_total for r in recs[:k]] == [r.time_total for r in first]
    assert verdicts(recs) == verdicts(full)
    assert comparable(summarize(recs)) == comparable(summarize(full))
    # A third run has nothing left to do and changes nothing.
    again, log = run(model_path, results, range(N), mnist)
    assert any(f"resuming: {N} of {N}" in m for m in log)
    assert [r.to_json() for r in again] == [r.to_json() for r in recs]
    assert len(file_records(results)) == N


def test_truncated_last_line_is_dropped_and_recomputed(full_run, model_path, mnist, workdir):
    source, full = full_run
    results = workdir / "truncated.jsonl"
    lines = source.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a write cut off mid-line
    recs, log = run(model_path, results, range(N), mnist)
    assert any("truncated" in m for m in log), log
    assert any(f"resuming: {N - 1} of {N}" in m for m in log), log
    on_disk = file_records(results)  # no note: the garbled line is gone
    assert sorted(r.index for r in on_disk) == list(range(N))
    assert verdicts(recs) == verdicts(full)


def test_last_record_without_its_newline(full_run, model_path, mnist, workdir):
    """A write cut off just before its newline leaves a complete record; appending to it must not
    glue the next record onto the same line."""
    source, full = full_run
    results = workdir / "no_newline.jsonl"
    lines = source.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:-2]) + lines[-2].rstrip(b"\n"))
    recs, log = run(model_path, results, range(N), mnist)
    assert any(f"resuming: {N - 1} of {N}" in m for m in log), log
    on_disk = file_records(results)
    assert sorted(r.index for r in on_disk) == list(range(N))
    assert verdicts(recs) == verdicts(full)
    run(model_path, results, range(N), mnist)  # and it resumes again cleanly


def test_rerun_on_a_subset_and_a_superset(full_run, model_path, mnist, workdir):
    source, full = full_run
    results = workdir / "subset.jsonl"
    results.write_bytes(source.read_bytes())
    sub, log = run(model_path, results, [3, 1, 2], mnist)
    assert [r.index for r in sub] == [3, 1, 2]  # the requested order, from the file
    assert any(f"resuming: 3 of 3" in m for m in log)
    sup, log = run(model_path, results, range(N + 3), mnist)
    assert [r.index for r in sup] == list(range(N + 3))
    assert len(file_records(results)) == N + 3


def test_results_of_another_model_or_eps_are_refused(full_run, model_path, mnist, workdir):
    source, _ = full_run
    results = workdir / "foreign.jsonl"
    results.write_bytes(source.read_bytes())
    before = results.read_bytes()
    other = workdir / "other.pt"
    model, meta = load_checkpoint(model_path)
    with torch.no_grad():
        model[-1].bias.add_(0.01)
    save_checkpoint(other, model, arch="tiny_mlp", dataset="mnist", eps=EPS)
    with pytest.raises(HamverifyError, match="another model"):
        run(other, results, range(N), mnist)
    with pytest.raises(HamverifyError, match="eps"):
        run(model_path, results, range(N), mnist, eps=0.1)
    assert results.read_bytes() == before  # refused before anything was written


def test_a_damaged_middle_line_is_an_error(full_run, model_path, mnist, workdir):
    source, _ = full_run
    results = workdir / "damaged.jsonl"
    lines = source.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"index": 3, "lab\n'
    results.write_bytes(b"".join(lines))
    with pytest.raises(HamverifyError, match="line 4"):
        run(model_path, results, range(N), mnist)


def test_a_checkpoint_overwritten_in_place_is_reloaded(model_path, mnist, workdir):
    """The per-process Verifier cache must notice that the file behind a path changed (retraining
    into the same path in one session): records carry the new file's sha256 and the new model's
    verdicts, and the next run resumes its own results instead of calling them another model's."""
    path = workdir / "reused.pt"
    path.write_bytes(model_path.read_bytes())
    first, _ = run(path, workdir / "reused_a.jsonl", range(8), mnist)
    model, _ = load_checkpoint(model_path)
    with torch.no_grad():
        model[-1].weight.mul_(-1.0)  # another model: its predictions change
    save_checkpoint(path, model, arch="tiny_mlp", dataset="mnist", eps=EPS)
    save_checkpoint(workdir / "fresh.pt", model, arch="tiny_mlp", dataset="mnist", eps=EPS)
    second, _ = run(path, workdir / "reused_b.jsonl", range(8), mnist)
    reference, _ = run(workdir / "fresh.pt", workdir / "fresh.jsonl", range(8), mnist)
    sha = file_sha256(path)
    assert first[0].model_sha256 != sha
    assert all(r.model_sha256 == sha for r in second)
    assert [r.predicted for r in second] == [r.predicted for r in reference] != [r.predicted for r in first]
    assert verdicts(second) == verdicts(reference)
    again, log = run(path, workdir / "reused_b.jsonl", range(8), mnist)
    assert any("resuming: 8 of 8" in m for m in log)


def test_two_workers_give_the_same_verdicts(full_run, model_path, mnist, workdir):
    _, full = full_run
    results = workdir / "workers2.jsonl"
    recs, _ = run(model_path, results, range(N), mnist, workers=2)
    assert [r.index for r in recs] == list(range(N))
    assert verdicts(recs) == verdicts(full)
    on_disk = file_records(results)
    assert len(on_disk) == N and len({r.index for r in on_disk}) == N
    for r in recs:
        if r.status == "falsified":
            assert pathlib.Path(r.counterexample).is_file()
    # and a 2-worker run resumes like a 1-worker one
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[:12]))
    recs2, log = run(model_path, results, range(N), mnist, workers=2)
    assert any(f"resuming: 12 of {N}" in m for m in log)
    assert verdicts(recs2) == verdicts(full)
    assert len(file_records(results)) == N


def test_records_round_trip_through_json(full_run):
    results, recs = full_run
    for line, rec in zip(results.read_text().splitlines(), recs):
        d = json.loads(line)
        assert d["index"] == rec.index and d["status"] == rec.status


# -- one results file, one experiment (issue 16, items 8 and 9) ---------------------------------------


def test_negative_or_absurd_tol_is_refused():
    for tol in (-1.0, -1e-9, 2.0, float("nan")):
        with pytest.raises(HamverifyError, match="tol must lie in"):
            settings(tol=tol)


def test_every_record_carries_its_settings_data_and_input_hash(full_run, mnist):
    from hamverify.records import RESUME_SETTINGS, input_digest
    _, recs = full_run
    x, y = mnist
    s = settings()
    for r in recs:
        assert r.tol == s.tol
        assert {k: getattr(r, k) for k in RESUME_SETTINGS} == s.resume_fields()
        assert r.input_sha256 == input_digest(x[r.index], int(y[r.index]))


def _run_with(model_path, results, indices, x, y, data=None, **kw):
    log = []
    recs = run_verification(model_path, settings(**kw), x, y, list(indices), results, progress=False,
                            log=log.append, **(data or {}))
    return recs, log


@pytest.mark.parametrize("change, match", [({"tightening": "symbolic"}, "tightening"),
                                           ({"tol": 1e-3}, "tol"), ({"timeout": 30.0}, "timeout"),
                                           ({"pgd_steps": 20}, "pgd_steps")])
def test_a_resume_with_other_settings_is_refused(model_path, mnist, workdir, change, match):
    x, y = mnist
    results = workdir / f"settings_{match}.jsonl"
    _run_with(model_path, results, range(3), x, y)
    before = results.read_bytes()
    with pytest.raises(HamverifyError, match=match):
        _run_with(model_path, results, range(5), x, y, **change)
    assert results.read_bytes() == before


def test_a_resume_on_other_images_or_data_source_is_refused(model_path, mnist, workdir):
    """The embedded-samples-then-installed-data case: same indices, other pixels or labels."""
    x, y = mnist
    results = workdir / "mixed.jsonl"
    data = {"dataset": "mnist", "split": "test", "source": "embedded"}
    _run_with(model_path, results, range(3), x, y, data)
    before = results.read_bytes()
    with pytest.raises(HamverifyError, match="source"):
        _run_with(model_path, results, range(5), x, y, {**data, "source": "npz"})
    with pytest.raises(HamverifyError, match="split"):
        _run_with(model_path, results, range(5), x, y, {**data, "split": "train"})
    shifted_x, shifted_y = x[1:], y[1:]  # other images under the same indices
    with pytest.raises(HamverifyError, match="another image or label"):
        _run_with(model_path, results, range(5), shifted_x, shifted_y, data)
    relabelled = np.array(y).copy()
    relabelled[1] = (relabelled[1] + 1) % 10
    with pytest.raises(HamverifyError, match="input 1 there is another image or label"):
        _run_with(model_path, results, range(5), x, relabelled, data)
    assert results.read_bytes() == before
    recs, log = _run_with(model_path, results, range(5), x, y, data)  # the same data resumes
    assert any("resuming: 3 of 5" in m for m in log)
    assert all(r.source == "embedded" and r.split == "test" for r in recs)


def test_records_without_the_new_fields_are_refused(full_run, model_path, mnist, workdir):
    source, _ = full_run
    results = workdir / "old_format.jsonl"
    lines = []
    for line in source.read_text().splitlines():
        d = json.loads(line)
        for k in ("tol", "input_sha256", "timeout", "pgd_steps", "pgd_restarts", "seed", "pulp_solver",
                  "lp_time_per_neuron"):
            d.pop(k, None)
        lines.append(json.dumps(d))
    results.write_text("\n".join(lines) + "\n")
    with pytest.raises(HamverifyError, match="older hamverify"):
        run(model_path, results, range(N), mnist)


def test_error_records_are_retried_on_resume(full_run, model_path, mnist, workdir):
    source, full = full_run
    results = workdir / "errors.jsonl"
    lines = source.read_text().splitlines()
    d = json.loads(lines[2])
    d.update(status="error", reason="memory", decided_by=None)
    lines[2] = json.dumps(d)
    results.write_text("\n".join(lines) + "\n")
    recs, log = run(model_path, results, range(N), mnist)
    assert any("retrying 1 recorded as error" in m for m in log)
    assert recs[2].status == full[2].status != "error"


# -- progress lines and input shapes (issue 16, items 10 and 12) ----------------------------------


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal():
    import io
    from hamverify.runner import Progress
    stream = io.StringIO()
    bar = Progress(100, stream=stream)
    assert bar.bar is None
    for i in range(100):
        bar.update({"verified": i, "falsified": 0, "timeout": 0})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and "\r" not in stream.getvalue()
    assert lines[0].startswith("verify: 5/100 inputs (verified 4, falsified 0, timeout 0), ")
    assert "left" in lines[0] and lines[-1].startswith("verify: 100/100 inputs") and "left" not in lines[-1]
    few = io.StringIO()
    bar = Progress(3, stream=few)
    for _ in range(3):
        bar.update({})
    assert few.getvalue().splitlines()[-1].startswith("verify: 3/3 inputs, ")


def test_progress_line_at_least_once_a_minute(monkeypatch):
    import io
    import hamverify.runner as R
    clock = [0.0]
    monkeypatch.setattr(R.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    bar = R.Progress(1000, stream=stream)
    bar.update({})
    assert stream.getvalue() == ""
    clock[0] = 61.0
    bar.update({})
    assert stream.getvalue().startswith("verify: 2/1000 inputs, 1 min 01 s, about ")


def test_images_of_another_shape_are_refused():
    from hamverify.runner import check_input_shape
    check_input_shape("m.pt", (1, 28, 28), np.zeros((2, 28, 28, 1), np.uint8))
    with pytest.raises(HamverifyError, match=r"m.pt takes 1x28x28 inputs; cifar10 images are 3x32x32: "
                                             r"give --dataset mnist"):
        check_input_shape("m.pt", (1, 28, 28), np.zeros((2, 32, 32, 3), np.uint8), "cifar10")


def test_an_interrupted_in_driver_run_takes_no_further_input(monkeypatch):
    """The single-worker path verifies in a helper thread; when the caller stops (as on Ctrl-C)
    the input in flight is dropped, no further input is started, and the thread is reported."""
    import threading
    import time as _time
    import hamverify.runner as R
    started = []
    go = {i: threading.Event() for i in range(5)}

    def slow_task(model_path, settings_, index, x, label, dataset=None, memory_limit=None):
        started.append(index)
        go[index].wait(10)
        return f"record {index}", None

    monkeypatch.setattr(R, "verify_task", slow_task)
    gen = R._run_in_driver([(i, None, 0) for i in range(5)], "m.pt", None, None, poll=0.01)
    go[0].set()
    assert next(gen) == ("record 0", None)
    deadline = _time.monotonic() + 10
    while len(started) < 2 and _time.monotonic() < deadline:
        _time.sleep(0.01)
    t0 = _time.monotonic()
    gen.close()  # the caller stops while input 1 is in flight
    assert _time.monotonic() - t0 < 1  # it does not wait for the input
    assert started == [0, 1] and R.abandoned_work()
    go[1].set()
    for thread in R._ABANDONED:
        thread.join(5)
    assert not R.abandoned_work() and started == [0, 1]  # input 2 was never started
