"""Start-up time of one `hamverify vnnlib` instance (issue 13, item 6): the wall time of a fresh
process deciding one easy instance, and what it imported.

  python benchmarks/startup.py [--model models/mnist_small_hamming_0.1.pt] [--eps 0.02] [--index 0] \
      [--repeats 5] [--workdir /tmp/hamverify-startup] [--baseline DIR]

``--baseline DIR``: a checkout of another release (``git worktree add DIR bb12ffb``) run on the
same instance, its processes interleaved with this checkout's, and the ratio printed.

The instance: the checkpoint exported to ONNX (``hamverify export``) and a VNN-COMP-style robustness
property of MNIST test image ``--index`` (the box ``x +- eps`` clipped to [0, 1]; one disjunct
``Y_j >= Y_label`` per other class), small enough for the bounds to prove (``unsat``).  Each repeat
runs ``python -m hamverify.cli vnnlib --onnx ... --vnnlib ...`` in a new process; printed: the
process wall time (min / median), the in-process time until the command returns, and which of
torch, onnx, onnxruntime, highspy, scipy were imported (a proof by the bounds needs none of the
first four for the decision itself).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
from machine_load import load_avg  # noqa: E402  (benchmarks/ is the script folder, first on sys.path)
HEAVY = ("torch", "onnx", "onnxruntime", "highspy", "scipy")

DRIVER = r"""
import sys, time
t0 = time.perf_counter()
from hamverify.cli import main
t1 = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
t2 = time.perf_counter()
import json
print("STARTUP " + json.dumps({"import_cli": t1 - t0, "command": t2 - t1, "code": code,
                               "imported": [m for m in %r if m in sys.modules]}), file=sys.stderr)
"""


def make_instance(model: pathlib.Path, eps: float, index: int, workdir: pathlib.Path, data_dir):
    import numpy as np

    from hamverify.data import load_dataset
    from hamverify.models import read_checkpoint
    from hamverify.onnx_io import export_checkpoint
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = workdir / (model.stem + ".onnx")
    if not onnx_path.is_file():
        export_checkpoint(model, onnx_path)
    dataset = read_checkpoint(model)["dataset"]
    x, y = load_dataset(dataset, "test", data_dir)
    img = np.transpose(np.asarray(x[index], dtype=np.float64) / 255.0, (2, 0, 1)).ravel()
    label, classes = int(y[index]), 10
    lo, hi = np.clip(img - eps, 0, 1), np.clip(img + eps, 0, 1)
    lines = [f"(declare-const X_{i} Real)" for i in range(img.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(classes)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {float(a)!r}))", f"(assert (<= X_{i} {float(b)!r}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label) + "))")
    spec = workdir / f"{dataset}_{index}_{eps:g}.vnnlib"
    spec.write_text("\n".join(lines) + "\n")
    return onnx_path, spec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO_ROOT / "models" / "mnist_small_hamming_0.1.pt"))
    ap.add_argument("--eps", type=float, default=0.02)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--workdir", default="/tmp/hamverify-startup")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--baseline", default=None, help="a checkout of another release to compare with")
    args = ap.parse_args(argv)
    onnx_path, spec = make_instance(pathlib.Path(args.model), args.eps, args.index, pathlib.Path(args.workdir),
                                    args.data_dir)
    cmd = [sys.executable, "-c", DRIVER % (HEAVY,), "vnnlib", "--onnx", str(onnx_path), "--vnnlib", str(spec),
           "--timeout", str(args.timeout)]
    trees = {"this checkout": REPO_ROOT}
    if args.baseline:
        trees["baseline " + pathlib.Path(args.baseline).name] = pathlib.Path(args.baseline).resolve()
    print(f"instance: {onnx_path.name} + {spec.name}; {args.repeats} fresh processes each; "
          f"load average {load_avg()}")
    walls = {name: [] for name in trees}
    infos = {name: [] for name in trees}
    results = {}
    for _ in range(args.repeats):
        for name, root in trees.items():  # interleaved: both see the same load
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
            walls[name].append(time.perf_counter() - t)
            info = next((json.loads(line[8:]) for line in res.stderr.splitlines() if line.startswith("STARTUP ")),
                        None)
            if info is None:
                raise SystemExit(f"{name}: the command failed:\n{res.stderr[-2000:]}")
            infos[name].append(info)
            results[name] = res.stdout.strip().splitlines()[0] if res.stdout.strip() else "?"
    for name in trees:
        print(f"{name}: result {results[name]}; process wall time min {min(walls[name]):.2f} s, median "
              f"{statistics.median(walls[name]):.2f} s; in process: import hamverify.cli "
              f"{statistics.median(i['import_cli'] for i in infos[name]):.2f} s, the vnnlib command "
              f"{statistics.median(i['command'] for i in infos[name]):.2f} s (medians); imported: "
              f"{', '.join(infos[name][-1]['imported']) or 'none'} (of {', '.join(HEAVY)})")
    if len(trees) == 2:
        this, base = (statistics.median(w) for w in walls.values())
        print(f"median wall time: {base / this:.2f}x faster than the baseline")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
