"""Where `hamverify verify` runs its inputs on Dask (``--scheduler``) and how much memory a worker
may use (``--max-memory-per-worker``): parsing both, connecting to a running scheduler with a
bounded connect timeout, and starting a loopback ``LocalCluster``.  See docs/SCALING.md.

Dask is optional (``pip install 'hamverify[dask]'``); nothing here imports it before it is needed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
from dataclasses import dataclass

from . import HamverifyError

CONNECT_TIMEOUT_S = 5.0  # a --scheduler that does not answer is an error after this long, not a hang

# Scheduler settings of a LocalCluster started by hamverify (an external cluster's scheduler and
# workers read their own configuration; docs/SCALING.md gives the equivalent settings):
#  - a task whose worker dies is rescheduled once, then fails with KilledWorker (-> error record);
#  - a single-threaded worker is handed one task at a time, so a dying worker only implicates the
#    input it was running (with the default saturation 1.1 it holds a second, innocent one);
#  - tasks hold no data: no spilling and no pausing (a paused worker would stall the run); a worker
#    over its memory limit is still terminated by its nanny at 95 % of the limit.
LOCAL_CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": 1,
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
}

_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|ucx)://\[?[A-Za-z0-9_.\-:]+\]?:\d{1,5}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-]+:\d{1,5}$")


@dataclass(frozen=True)
class SchedulerSpec:
    kind: str                      # "local" (start a LocalCluster), "address", or "file" (scheduler file)
    target: str | None = None      # the address or the scheduler file
    n_workers: int | None = None   # kind "local": worker processes

    def describe(self) -> str:
        if self.kind == "local":
            return f"a local Dask cluster of {self.n_workers} worker process(es)"
        return f"the Dask cluster at {self.target}"


def parse_scheduler(text: str, workers: int | None = None) -> SchedulerSpec:
    """``tcp://HOST:PORT`` (also tls://, ws://, wss://, ucx://), ``HOST:PORT`` (tcp), ``local:N``,
    ``local`` (N = ``workers``, else the number of cores), or the JSON file a scheduler writes
    with ``dask scheduler --scheduler-file FILE``."""
    s = str(text).strip()
    low = s.lower()
    if low == "local" or low.startswith("local:"):
        n_text = s[len("local:"):] if ":" in s else ""
        if not n_text:
            return SchedulerSpec("local", None, workers or os.cpu_count() or 1)
        try:
            n = int(n_text)
        except ValueError:
            n = 0
        if n < 1:
            raise HamverifyError(f"--scheduler {s}: the number of local workers must be an integer >= 1 (e.g. local:4)")
        return SchedulerSpec("local", None, n)
    if _ADDRESS.match(s):
        return SchedulerSpec("address", s)
    if _HOST_PORT.match(s):
        return SchedulerSpec("address", "tcp://" + s)
    if low.endswith(".json") or pathlib.Path(s).is_file():
        if not pathlib.Path(s).is_file():
            raise HamverifyError(f"--scheduler {s}: scheduler file not found")
        return SchedulerSpec("file", s)
    raise HamverifyError(f"--scheduler {s!r}: expected tcp://HOST:PORT, local:N, or a scheduler file (.json)")


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(value) -> int:
    """Bytes of ``4GB``, ``512MB``, ``2GiB``, ``1.5G``, ``300000000`` (decimal units: kB, MB, GB,
    TB; binary: KiB, MiB, GiB, TiB; case-insensitive)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(value).lower())
        if not m or m.group(2) not in _UNITS:
            raise HamverifyError(f"--max-memory-per-worker {value!r}: expected a size such as 4GB, 512MB or 2GiB")
        n = float(m.group(1)) * _UNITS[m.group(2)]
    if not n >= 1 or n != n:
        raise HamverifyError(f"--max-memory-per-worker {value!r}: must be a positive size")
    return int(n)


def format_bytes(n: int) -> str:
    """``4 GB``, ``2 GiB``, ``64 MB`` (the unit that divides it exactly), else ``1.23 GiB``."""
    for unit, size in (("TiB", 2**40), ("TB", 10**12), ("GiB", 2**30), ("GB", 10**9), ("MiB", 2**20),
                       ("MB", 10**6), ("KiB", 2**10), ("kB", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def require_distributed():
    try:
        import distributed
    except ImportError:
        raise HamverifyError("--scheduler needs Dask: pip install 'hamverify[dask]' "
                             "(dask[distributed])") from None
    return distributed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def dask_client(spec: SchedulerSpec, memory_limit: int | None = None, log=print):
    """A ``distributed.Client`` for ``spec``, closed on exit (with the LocalCluster it started).
    ``memory_limit`` (bytes, already including a worker's baseline) goes to a LocalCluster's
    workers; an external cluster's workers keep their own ``--memory-limit``."""
    distributed = require_distributed()
    import dask
    if spec.kind == "local":
        with dask.config.set(LOCAL_CLUSTER_CONFIG):
            try:
                cluster = distributed.LocalCluster(
                    n_workers=spec.n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, silence_logs=logging.CRITICAL,
                    memory_limit=memory_limit if memory_limit else "auto",
                    scheduler_kwargs={"allowed_failures": 1})
            except Exception as exc:
                raise HamverifyError(f"could not start a local Dask cluster: {_first_line(exc)}") from None
            try:
                client = distributed.Client(cluster, timeout=max(CONNECT_TIMEOUT_S, 30))
            except Exception as exc:
                cluster.close()
                raise HamverifyError(f"could not connect to the local Dask cluster: {_first_line(exc)}") from None
            log(f"started {spec.describe()} at {cluster.scheduler_address}")
            try:
                yield client
            finally:
                client.close()
                cluster.close()
        return
    try:
        if spec.kind == "file":
            client = distributed.Client(scheduler_file=spec.target, timeout=CONNECT_TIMEOUT_S)
        else:
            client = distributed.Client(spec.target, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:
        raise HamverifyError(f"cannot reach the Dask scheduler {spec.target} within {CONNECT_TIMEOUT_S:g} s "
                             f"({_first_line(exc)}); is `dask scheduler` running there?") from None
    try:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        log(f"connected to {spec.target}: {len(workers)} worker(s), {threads} thread(s)"
            + ("; no workers yet, inputs wait for them" if not workers else ""))
        yield client
    finally:
        client.close()
