"""Throughput of `hamverify verify` with 1 and 2 workers: local worker processes vs a Dask
LocalCluster (and joblib/loky, the runner's pool before Dask support, for reference); then the
projected wall time of a full CIFAR-10 test set (10,000 inputs) on 8, 64 and 512 cores.
The figures in docs/SCALING.md come from this script.

  HAMVERIFY_DATA=DATA_ROOT python benchmarks/scaling.py \
      [--model runs/full/hv_e100_s2/model.pt] [--count 40] [--eps 8/255] [--repeats 2] [--json out.json]

(--model defaults to runs/full/hv_e100_s2/model.pt under $HAMVERIFY_RUNS, else the repository's runs/.)

Each configuration verifies the first --count inputs of --split (default test_first100_exact) into
a fresh results file, with the same settings (symbolic bounds + HiGHS, timeout 120 s).  Reported per
configuration (median over --repeats): the wall time including start-up (worker processes, or the
cluster, importing torch and loading the model), the steady-state time from the first record to
the last, and inputs per second.  Verdicts must be identical across configurations.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from portable_paths import RUNS, portable  # noqa: E402

DEFAULT_MODEL = str(RUNS / "full" / "hv_e100_s2" / "model.pt")


def run_once(kind, workers, model, settings, x, y, indices, folder):
    import hamverify.runner as runner
    stamps = []

    class StampingWriter(runner.ResultsWriter):
        def write(self, record):
            super().write(record)
            stamps.append(time.perf_counter())

    results = pathlib.Path(folder) / f"{kind}_{workers}_{time.time_ns()}.jsonl"
    t0 = time.perf_counter()
    if kind == "joblib":  # the previous runner: joblib Parallel(loky), results in arrival order
        from joblib import Parallel, delayed
        writer = StampingWriter(results)
        recs = []
        for rec, _ in Parallel(n_jobs=workers, backend="loky", return_as="generator_unordered")(
                delayed(runner.verify_task)(str(model), settings, i, x[i], int(y[i])) for i in indices):
            writer.write(rec)
            recs.append(rec)
        writer.close()
        from joblib.externals.loky import get_reusable_executor
        get_reusable_executor().shutdown(wait=True)  # the next run starts cold too
    else:
        original = runner.ResultsWriter
        runner.ResultsWriter = StampingWriter
        try:
            recs = runner.run_verification(model, settings, x, y, indices, results, workers=workers, progress=False,
                                           log=lambda m: None,
                                           scheduler=f"local:{workers}" if kind == "dask" else None)
        finally:
            runner.ResultsWriter = original
    wall = time.perf_counter() - t0
    steady = stamps[-1] - stamps[0] if len(stamps) > 1 else float("nan")
    return wall, steady, {r.index: r.status for r in recs}, sum(r.time_total for r in recs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--split", default="test_first100_exact")
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("HAMVERIFY_DATA"))
    ap.add_argument("--json", default=None, help="Also write the figures to this file.")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from hamverify.config import parse_eps
    from hamverify.data import load_dataset
    from hamverify.models import read_checkpoint
    from hamverify.verify import VerifySettings
    dataset = read_checkpoint(args.model)["dataset"]
    x, y = load_dataset(dataset, args.split, args.data_dir)
    indices = list(range(min(args.count, len(x))))
    settings = VerifySettings(eps=parse_eps(args.eps), timeout=args.timeout)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.model}: {len(indices)} inputs of {dataset} {args.split} at eps {args.eps}; "
          f"{os.cpu_count()} cores, load average {load:.1f} at the start", flush=True)

    configs = [("local", 1), ("dask", 1), ("local", 2), ("dask", 2), ("joblib", 2)]
    rows, verdicts = {}, None
    with tempfile.TemporaryDirectory() as folder:
        for rep in range(args.repeats):
            for kind, workers in configs:
                wall, steady, v, cpu = run_once(kind, workers, args.model, settings, x, y, indices, folder)
                if verdicts is None:
                    verdicts = v
                elif v != verdicts:
                    diff = {i: (verdicts[i], v.get(i)) for i in verdicts if verdicts[i] != v.get(i)}
                    print(f"  verdicts differ in {kind} x{workers}: {diff}", flush=True)
                rows.setdefault((kind, workers), []).append((wall, steady, cpu))
                print(f"  [{rep + 1}/{args.repeats}] {kind:6s} x{workers}: wall {wall:6.1f} s, "
                      f"first->last record {steady:6.1f} s, sum of per-input times {cpu:6.1f} s", flush=True)

    n = len(indices)
    table = {}
    for (kind, workers), values in rows.items():
        wall = statistics.median(v[0] for v in values)
        steady = statistics.median(v[1] for v in values)
        cpu = statistics.median(v[2] for v in values)
        table[f"{kind}x{workers}"] = {"wall_s": wall, "steady_s": steady, "inputs_per_s": n / wall,
                                      "sum_time_total_s": cpu}
    print("\nconfiguration     wall (s)  first->last (s)  inputs/s (wall)")
    for key, r in table.items():
        print(f"  {key:14s} {r['wall_s']:8.1f} {r['steady_s']:16.1f} {r['inputs_per_s']:16.2f}")
    for w in (1, 2):
        a, b = table[f"localx{w}"], table[f"daskx{w}"]
        print(f"  {w} worker(s): LocalCluster / local wall time = {b['wall_s'] / a['wall_s']:.2f}, "
              f"first->last = {b['steady_s'] / a['steady_s']:.2f}")
    per_input = table["localx1"]["sum_time_total_s"] / n  # CPU-seconds per input, one worker
    print(f"\nper input (local, 1 worker): {per_input:.3f} s mean of time_total")
    projection = {}
    for cores in (8, 64, 512):
        seconds = 10_000 * per_input / cores
        projection[cores] = seconds
        print(f"  10,000 inputs on {cores:3d} cores (one worker per core, ideal scaling): {seconds / 60:7.1f} min")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"model": portable(args.model), "count": n, "load_average": load, "cores": os.cpu_count(), "table": table,
             "per_input_s": per_input, "projection_s": projection}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
