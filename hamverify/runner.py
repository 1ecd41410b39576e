"""The batch runner of `hamverify verify`: one record per input, appended by the driver as results
arrive, and a rerun resumes from the results file.

Where inputs run:
  * one worker, no memory limit: in the driver process, one after the other, in a helper thread
    (_run_in_driver): the main thread only waits, so Ctrl-C or SIGTERM is seen within a fraction
    of a second even while HiGHS (which releases the GIL) is in a long solve; the input being
    verified is dropped (nothing of it is written) and the CLI exits at once;
  * ``workers > 1`` or ``max_memory_per_worker``: hamverify's own pool of spawned worker processes,
    each holding one input at a time, so a worker that dies costs only its input: the input is
    retried once (WORKER_DEATH_RETRIES) in a fresh process, then recorded ``error`` with the
    reason;  (joblib/loky and concurrent.futures pools break as a whole when one worker dies);
  * ``scheduler``: a Dask cluster (hamverify.cluster), one future per input; the scheduler
    reschedules the input of a dead worker (``allowed-failures`` 1), a ``KilledWorker`` becomes
    an ``error`` record.
Each worker process loads the model once (load_verifier's per-process cache).

Worker processes die with their driver: on Linux through prctl(PR_SET_PDEATHSIG, SIGKILL), and
everywhere through a thread that polls os.getppid() (die_with_parent); after a `kill -9` of the
driver they are gone within about a second.  When the driver is interrupted (Ctrl-C, SIGTERM)
or a run ends early, workers still holding an input are killed at once, not waited for.

Progress: a tqdm bar when stderr is a terminal, else a plain line every few inputs (Progress).

Test hooks, environment variables read where an input is verified (tests only):
  HAMVERIFY_TEST_CRASH_INDEX=i          the process verifying input i exits at once (os._exit(1)),
                                        as if killed mid-input;
  HAMVERIFY_TEST_ALLOCATE_BYTES=n       input HAMVERIFY_TEST_ALLOCATE_INDEX (default: every input)
                                        first allocates n bytes (torch.empty), a memory-hungry input;
  HAMVERIFY_TEST_STALL_INDEX=i[,j..]    input i (each of them) takes HAMVERIFY_TEST_STALL_S seconds (default 600)
                                        before it is verified: a stand-in for a long solve.
"""
from __future__ import annotations

import collections
import contextlib
import math
import os
import pathlib
import queue
import signal
import sys
import threading
import time
import traceback
import warnings

import numpy as np

from . import HamverifyError, __version__
from .records import (ResultsWriter, VerificationRecord, check_compatible, dedupe_latest, input_digest,
                      read_records, rewrite_records)
from .verify import Verifier, VerifySettings, new_record

WORKER_DEATH_RETRIES = 1  # a worker that dies mid-input: rerun that input this many more times
_WORKER_CACHE: dict = {}


def load_verifier(model_path: str, settings: VerifySettings, dataset: str | None = None) -> Verifier:
    """The process's Verifier for this model file (path and content) and settings, built once
    (model load + IR); a checkpoint rewritten at the same path is loaded afresh.  An ONNX model
    (``.onnx``) needs ``dataset`` for its input shape."""
    from .models import file_sha256
    from .onnx_io import load_any_model
    sha = file_sha256(model_path)
    key = (str(model_path), sha, settings, dataset)
    if key not in _WORKER_CACHE:
        import torch
        torch.set_num_threads(1)
        model, input_shape, _, _ = load_any_model(model_path, dataset)
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = Verifier(model, input_shape, settings, sha)
    return _WORKER_CACHE[key]


def _statm_bytes(field: int) -> int | None:
    """A field of /proc/self/statm (0: virtual size, 1: resident set) in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[field]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _address_space() -> int | None:
    """This process's virtual memory size in bytes."""
    return _statm_bytes(0)


def resident_memory() -> int | None:
    """This process's resident set size in bytes."""
    return _statm_bytes(1)


_MEMORY_CAP: dict = {}


def limit_worker_memory(extra_bytes: int) -> int | None:
    """Cap this worker process's address space (RLIMIT_AS) at its size when first called (after the
    model is loaded: ~0.7 GB for cifar_small, mostly torch) plus ``extra_bytes``, so that an input
    needing more fails to allocate (MemoryError, or torch's RuntimeError) instead of exhausting
    the machine.  Returns the cap in bytes, or None where the platform cannot enforce one."""
    if _MEMORY_CAP.get("extra") == extra_bytes:
        return _MEMORY_CAP["cap"]
    try:
        import resource
    except ImportError:
        return None
    baseline = _MEMORY_CAP.get("baseline") or _address_space()
    if baseline is None:
        return None
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = baseline + int(extra_bytes)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    _MEMORY_CAP.update(baseline=baseline, extra=extra_bytes, cap=cap)
    return cap


def _is_memory_error(exc: BaseException) -> bool:
    """numpy's MemoryError, or torch's allocator failure (a RuntimeError: "DefaultCPUAllocator:
    can't allocate memory ...", "out of memory")."""
    if isinstance(exc, MemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("allocate memory" in msg or "out of memory" in msg
                                              or "cannot allocate" in msg or "can't allocate" in msg)


def error_record(settings: VerifySettings, model_sha256: str, index: int, label: int, reason: str
                 ) -> VerificationRecord:
    return new_record(settings, model_sha256, index, label, status="error", reason=reason)


def _test_hooks(index: int) -> None:
    """The HAMVERIFY_TEST_* hooks of the module docstring (tests only)."""
    crash = os.environ.get("HAMVERIFY_TEST_CRASH_INDEX")
    if crash not in (None, "") and int(crash) == int(index):
        os._exit(1)
    stall = os.environ.get("HAMVERIFY_TEST_STALL_INDEX")
    if stall not in (None, "") and int(index) in {int(i) for i in stall.split(",")}:
        time.sleep(float(os.environ.get("HAMVERIFY_TEST_STALL_S") or 600))
    nbytes = os.environ.get("HAMVERIFY_TEST_ALLOCATE_BYTES")
    where = os.environ.get("HAMVERIFY_TEST_ALLOCATE_INDEX")
    if nbytes and (where in (None, "") or int(where) == int(index)):
        import torch
        hog = torch.empty(int(float(nbytes)), dtype=torch.uint8)  # fails under the memory cap
        del hog


def verify_task(model_path: str, settings: VerifySettings, index: int, x_uint8: np.ndarray, label: int,
                dataset: str | None = None, memory_limit: int | None = None):
    """One input, in a worker process; x is uint8 HWC as stored in the dataset.  With
    ``memory_limit`` (bytes) the process's address space is capped at its size after loading
    the model plus that much; an input that runs out is recorded ``error`` with reason ``memory``."""
    verifier = load_verifier(model_path, settings, dataset)
    if memory_limit:
        limit_worker_memory(memory_limit)
    x = np.transpose(np.asarray(x_uint8, dtype=np.float64) / 255.0, (2, 0, 1))
    try:
        _test_hooks(index)
        return verifier.verify(x, label, index)
    except (MemoryError, RuntimeError) as exc:
        if not _is_memory_error(exc):
            raise
        return error_record(settings, verifier.model_sha256, index, label, "memory"), None


def check_input_shape(model_path, input_shape, x: np.ndarray, dataset: str | None = None) -> None:
    """A one-line error unless the images ``x`` (N, H, W, C) fit the model's input (C, H, W): an
    MNIST checkpoint given CIFAR-10 images would fail on the first input with a reshape error."""
    c, h, w = tuple(input_shape)
    got = tuple(np.shape(x)[1:])
    if len(got) == 3 and got == (h, w, c):
        return
    from .models import INPUT_SHAPE
    own = next((d for d, shape in INPUT_SHAPE.items() if tuple(shape) == (c, h, w)), None)
    what = f"{dataset} images" if dataset else "the images"
    hint = f": give --dataset {own} (or another of its input shape)" if own else ""
    raise HamverifyError(f"{model_path} takes {c}x{h}x{w} inputs; {what} are "
                         f"{'x'.join(str(v) for v in (got[2:] + got[:2] if len(got) == 3 else got))}{hint}")


def default_results_path(model_path, dataset: str, split: str, eps: float) -> pathlib.Path:
    stem = pathlib.Path(model_path).stem if pathlib.Path(model_path).stem != "model" else pathlib.Path(model_path).parent.name
    return pathlib.Path("results") / f"{stem}_{dataset}_{split}_eps{eps:.5f}.jsonl"


def prepare_resume(results_path, model_sha256: str, eps: float, log, settings: dict | None = None,
                   data: dict | None = None, digests: dict[int, str] | None = None) -> dict[int, VerificationRecord]:
    """The records already in the results file, after checking that they belong to this run
    (records.check_compatible); a truncated last line is dropped first."""
    records, note = read_records(results_path)
    check_compatible(results_path, records, model_sha256, eps, settings, data, digests)
    if note:
        log(note)
        rewrite_records(results_path, records)
    return dedupe_latest(records)


class Progress:
    """Progress of a run on stderr: a tqdm bar on a terminal; elsewhere (a log file, a pipe, a CI
    job) one plain line every ``every`` inputs (about 20 lines a run) and at least once a minute,
    instead of a bar's carriage returns piling up into one long line."""

    def __init__(self, total: int, stream=None, every: int | None = None, min_interval: float = 60.0):
        self.total, self.done, self.counts = total, 0, {}
        self.stream = stream if stream is not None else sys.stderr
        self.every = every or max(1, math.ceil(total / 20))
        self.min_interval = min_interval
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if _is_terminal(self.stream):
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, desc="verify", dynamic_ncols=True, file=self.stream)

    def update(self, counts: dict) -> None:
        self.done += 1
        self.counts = dict(counts)
        if self.bar is not None:
            self.bar.set_postfix(counts)
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.done == self.total or self.done % self.every == 0 or now - self.last >= self.min_interval:
            self.last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.t0
        text = f"verify: {self.done}/{self.total} inputs"
        if self.counts:
            text += " (" + ", ".join(f"{k} {v}" for k, v in self.counts.items()) + ")"
        text += f", {_duration(elapsed)}"
        if 0 < self.done < self.total:
            text += f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _progress(total, enabled):
    return Progress(total) if enabled else None


def save_counterexample(results_path, index: int, point: np.ndarray, input_shape) -> str:
    folder = pathlib.Path(str(results_path) + ".cex")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index}.npy"
    np.save(path, np.asarray(point, dtype=np.float64).reshape(input_shape))
    return str(path)


def _describe_exit(code) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (" (possibly the kernel's out-of-memory killer)" if -code == signal.SIGKILL else "")
    return f"exit code {code}"


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5


def die_with_parent(parent_pid: int, poll: float = PARENT_POLL_S) -> str:
    """Make this process end when the process ``parent_pid`` (its parent) ends, however it ends
    (``kill -9`` included).  Linux: the kernel sends SIGKILL on the parent's death
    (prctl PR_SET_PDEATHSIG); everywhere, and as a second line of defence: a daemon thread that
    checks os.getppid() every ``poll`` seconds (a dead parent's children are re-parented).
    Returns how ("prctl+poll" or "poll")."""
    how = "poll"
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                how = "prctl+poll"
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)

    def watch():
        while True:
            time.sleep(poll)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="hamverify-parent-watch", daemon=True).start()
    return how


def _pool_worker(conn, model_path, settings, dataset, memory_limit, parent_pid=None):
    """A local worker process: load the model, cap memory, then verify one input per message."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's; it ends the workers

    def send(kind, payload, tb=""):
        try:
            conn.send((kind, payload, tb))
        except (BrokenPipeError, EOFError, OSError):
            raise SystemExit(0)  # the driver is gone
        except Exception:  # unpicklable exception
            conn.send(("raise", RuntimeError(f"{payload!r}"), tb))

    try:
        load_verifier(model_path, settings, dataset)
        cap = limit_worker_memory(memory_limit) if memory_limit else None
    except BaseException as exc:
        send("raise", exc, traceback.format_exc())
        return
    send("ready", cap)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        index, x, label = job
        try:
            out = verify_task(model_path, settings, index, x, label, dataset, memory_limit)
        except Exception as exc:
            send("raise", exc, traceback.format_exc())
        else:
            send("ok", out)


class _Worker:
    def __init__(self, ctx, args):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_pool_worker, args=(child, *args, os.getpid()), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.job = None

    def ask_to_stop(self):
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass

    def stop(self, wait: float = 2.0):
        self.ask_to_stop()
        self.proc.join(wait)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(wait)
        self.conn.close()

    def kill(self):
        """End it now (an input in flight is dropped; nothing of it was written)."""
        if self.proc.is_alive():
            self.proc.kill()


def _raise_from_worker(exc: BaseException, tb: str, where: str):
    if not isinstance(exc, HamverifyError):
        exc.add_note(f"raised in a worker process ({where}):\n{tb}")
    raise exc


def _run_pool(jobs, model_path, settings, dataset, workers, memory_limit, sha, log):
    """Yield (record, counterexample) per job (index, x, label) as local worker processes finish
    them; a worker that dies mid-input is replaced and its input retried, then recorded error."""
    import multiprocessing
    from multiprocessing.connection import wait
    ctx = multiprocessing.get_context("spawn")
    args = (str(model_path), settings, dataset, memory_limit)
    pending = collections.deque(jobs)
    deaths: dict[int, int] = {}
    pool = [_Worker(ctx, args) for _ in range(min(workers, len(pending)))]
    finished = False
    try:
        while pending or any(w.job is not None for w in pool):
            for k, w in enumerate(pool):
                if w.ready and w.job is None and pending:
                    if not w.proc.is_alive():  # died while idle: no input to blame
                        w.stop(0)
                        pool[k] = _Worker(ctx, args)
                        continue
                    w.job = pending.popleft()
                    try:
                        w.conn.send(w.job)
                    except OSError:
                        pass  # it died while idle: found below through its sentinel
            waiting = {}
            for w in pool:
                if w.job is not None or not w.ready:
                    waiting[w.conn] = waiting[w.proc.sentinel] = w
            for obj in wait(list(waiting)):
                w = waiting[obj]
                if w not in pool:
                    continue  # already handled (its conn and sentinel both fired)
                msg = None
                try:
                    if w.conn.poll():
                        msg = w.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is None:
                    if w.proc.is_alive() and obj is w.conn:
                        continue
                    w.proc.join(5)
                    how = _describe_exit(w.proc.exitcode)
                    pool[pool.index(w)] = _Worker(ctx, args)
                    w.conn.close()
                    if not w.ready:
                        raise HamverifyError(f"a worker process died while starting ({how})")
                    if w.job is None:
                        continue
                    index, _, label = w.job
                    deaths[index] = deaths.get(index, 0) + 1
                    if deaths[index] <= WORKER_DEATH_RETRIES:
                        log(f"input {index}: its worker process died ({how}); retrying it in a fresh process")
                        pending.appendleft(w.job)
                    else:
                        reason = (f"worker died: the worker process verifying it died {deaths[index]} times "
                                  f"(last: {how})")
                        log(f"input {index}: {reason}; recorded as error")
                        yield error_record(settings, sha, index, label, reason), None
                    continue
                kind, payload, tb = msg
                if kind == "ready":
                    w.ready = True
                elif kind == "ok":
                    w.job = None
                    yield payload
                else:
                    _raise_from_worker(payload, tb, f"input {w.job[0]}" if w.job else "starting")
        finished = True
    finally:
        if not finished:  # interrupted (Ctrl-C, SIGTERM), an error, or the caller stopped early
            for w in pool:
                if w.job is not None or not w.ready:
                    w.kill()
        for w in pool:
            w.ask_to_stop()
        for w in pool:
            w.stop()


_ABANDONED: list[threading.Thread] = []  # in-driver threads left mid-input by an interrupt


def abandoned_work() -> bool:
    """Whether an interrupted run left an input being verified in a thread of this process (the
    CLI then exits with os._exit instead of waiting for that solve)."""
    return any(t.is_alive() for t in _ABANDONED)


def _run_in_driver(jobs, model_path, settings, dataset, poll: float = 0.2):
    """Yield (record, counterexample) per job, verified one after the other in a helper thread of
    this process; the calling thread waits in short steps, so KeyboardInterrupt (Ctrl-C, or SIGTERM
    through the CLI's handler) reaches it within ``poll`` seconds.  When the caller stops (an
    interrupt, an error, or closing the generator) the thread takes no further input; one in
    flight is dropped and the thread is recorded in _ABANDONED."""
    out: queue.Queue = queue.Queue()
    stop = threading.Event()

    def work():
        try:
            for index, x, label in jobs:
                if stop.is_set():
                    return
                try:
                    result = ("ok", verify_task(str(model_path), settings, index, x, label, dataset))
                except BaseException as exc:  # re-raised in the caller's thread
                    out.put(("raise", exc))
                    return
                out.put(result)
        finally:
            out.put(("end", None))

    thread = threading.Thread(target=work, name="hamverify-verify", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, payload = out.get(timeout=poll)
            except queue.Empty:
                continue
            if kind == "end":
                break
            if kind == "raise":
                raise payload
            yield payload
    finally:
        stop.set()
        thread.join(0.05)
        if thread.is_alive():
            _ABANDONED.append(thread)


def _run_dask(client, jobs, model_path, settings, dataset, memory_limit, sha, log):
    """Yield (record, counterexample) per job as the cluster finishes them (one future each)."""
    import uuid
    from distributed import as_completed
    from distributed.scheduler import KilledWorker
    run = uuid.uuid4().hex[:8]
    futures = {client.submit(_dask_task, str(model_path), settings, index, x, label, dataset, memory_limit,
                             key=f"hamverify-verify-{run}-{index}", pure=False): (index, label)
               for index, x, label in jobs}
    try:
        for fut in as_completed(futures):
            index, label = futures[fut]
            try:
                out = fut.result()
            except KilledWorker as exc:
                n = getattr(exc, "allowed_failures", 1) + 1
                reason = f"worker died: {n} Dask workers died while verifying it (KilledWorker)"
                log(f"input {index}: {reason}; recorded as error")
                out = error_record(settings, sha, index, label, reason), None
            fut.release()
            yield out
    finally:
        client.cancel(list(futures))


def _dask_task(model_path, settings, index, x, label, dataset, memory_limit):
    """verify_task on a Dask worker; the memory cap only where the worker runs one task at a time
    (a per-process cap cannot be shared fairly by concurrent tasks)."""
    if memory_limit:
        try:
            from distributed import get_worker
            if get_worker().state.nthreads != 1:
                memory_limit = None
        except Exception:
            pass
    return verify_task(model_path, settings, index, x, label, dataset, memory_limit)


def run_verification(model_path, settings: VerifySettings, x: np.ndarray, y: np.ndarray, indices: list[int],
                     results_path, workers: int = 1, progress: bool = True, log=print,
                     dataset: str | None = None, scheduler: str | None = None,
                     max_memory_per_worker: int | str | None = None, split: str | None = None,
                     source: str | None = None, retry_errors: bool = True) -> list[VerificationRecord]:
    """Verify x[indices]; returns the records of exactly those indices (old and new).  ``dataset``
    is needed for an ONNX model (its input shape), ignored for a checkpoint.  ``scheduler``: a
    Dask scheduler (hamverify.cluster.parse_scheduler), else local processes; ``max_memory_per_worker``:
    bytes (or "4GB") an input may use in a worker beyond the loaded model.  ``dataset``, ``split``
    and ``source`` (data.dataset_source) are stored in each record with a hash of the input's
    pixels, and a resume must match them; ``retry_errors``: inputs recorded ``error`` are run again."""
    from .cluster import dask_client, format_bytes, parse_memory, parse_scheduler
    from .config import check_writable
    spec = parse_scheduler(scheduler, workers if workers > 1 else None) if scheduler else None
    memory = parse_memory(max_memory_per_worker) if max_memory_per_worker is not None else None
    check_writable(results_path, "results file")  # before any work: a path under a file, no permission
    verifier = load_verifier(model_path, settings, dataset)  # fail fast in the driver (model, IR, solver)
    sha, input_shape = verifier.model_sha256, verifier.input_shape
    check_input_shape(model_path, input_shape, x, dataset)
    digests = {i: input_digest(x[i], int(y[i])) for i in indices}
    data = {k: v for k, v in (("dataset", dataset), ("split", split), ("source", source)) if v is not None}
    done = prepare_resume(results_path, sha, settings.eps, log, settings.resume_fields(), data, digests)
    retried = [i for i in indices if i in done and done[i].status == "error"] if retry_errors else []
    todo = [i for i in indices if i not in done or i in retried]
    if len(todo) < len(indices) or retried:
        log(f"resuming: {len(indices) - len(todo)} of {len(indices)} inputs already in {results_path}"
            + (f"; retrying {len(retried)} recorded as error" if retried else ""))
    cores = os.cpu_count() or 1
    local_workers = spec.n_workers if spec and spec.kind == "local" else (workers if not spec else 0)
    if local_workers > cores:
        warnings.warn(f"{local_workers} workers on {cores} cores: inputs will compete for CPU time and may time out")
    if memory:
        log(f"memory: each worker process may use {format_bytes(memory)} beyond the loaded model")
    jobs = [(i, x[i], int(y[i])) for i in todo]
    cluster = contextlib.nullcontext()
    if spec is not None and todo:
        # a LocalCluster nanny limits a worker's whole resident memory: its baseline (about the
        # driver's, which has loaded the same model) plus the allowance
        cluster = dask_client(spec, memory + (resident_memory() or 0) if memory and spec.kind == "local" else None,
                              log)
    with cluster as client:  # connect (or start the cluster) before touching the results file
        try:
            writer = ResultsWriter(results_path)
        except OSError as exc:
            raise HamverifyError(f"cannot write the results file {results_path}: "
                                 f"{exc.strerror or exc} ({exc.filename or results_path})") from None
        bar = _progress(len(todo), progress)
        counts = {"verified": 0, "falsified": 0, "timeout": 0}
        try:
            if client is not None:
                results = _run_dask(client, jobs, model_path, settings, dataset, memory, sha, log)
            elif workers > 1 or memory:
                results = _run_pool(jobs, model_path, settings, dataset, workers, memory, sha, log)
            else:
                results = _run_in_driver(jobs, model_path, settings, dataset)
            try:
                for rec, cex in results:
                    for key, value in data.items():
                        setattr(rec, key, value)
                    rec.input_sha256 = digests[rec.index]
                    if cex is not None:
                        rec.counterexample = save_counterexample(results_path, rec.index, cex, input_shape)
                    writer.write(rec)
                    done[rec.index] = rec
                    if rec.status in counts:
                        counts[rec.status] += 1
                    if bar is not None:
                        bar.update(counts)
            finally:
                results.close()  # stops the worker processes / cancels the cluster's futures
        finally:
            writer.close()
            if bar is not None:
                bar.close()
    return [done[i] for i in indices if i in done]
