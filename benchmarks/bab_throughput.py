"""Branch-and-bound throughput on the hard MNIST 0.3 inputs, against another release in the same run.

  python benchmarks/bab_throughput.py --baseline-tree /tmp/hamverify-bb12ffb [--indices 3,12,19,35,42] \
      [--seconds 20] [--variants "intermediate='refine'" "intermediate='inherit'"]

The inputs are the ones `benchmarks/verifier_cascade.py` left as timeouts at 60 s on
``models/mnist_small_hamming_0.3.pt`` (eps 0.3).  Each runs ``bab.branch_and_bound`` alone (no MILP
fallback, symbolic root bounds, one torch thread) for ``--seconds``, in a fresh process per
checkout, the two checkouts alternating per input so that both see the same load.  Printed per
input: subdomains bounded, depth, targets proven, and the ratio of subdomains per second
(this checkout / baseline).  ``--variants``: keyword sets for this checkout's ``branch_and_bound``
(e.g. ``intermediate='inherit'``), each run beside the baseline's default.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
from machine_load import load_avg  # noqa: E402  (benchmarks/ is the script folder, first on sys.path)

WORKER = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from hamverify.models import load_checkpoint
from hamverify.network import from_torch
from hamverify.data import load_dataset
from hamverify.bounds import symbolic_bounds
from hamverify.bab import branch_and_bound
idx, seconds, kw = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
model, meta = load_checkpoint(sys.argv[4])
net = from_torch(model.eval(), (1, 28, 28))
x, y = load_dataset("mnist", "test", None)
img = np.transpose(x[idx].astype(np.float64) / 255, (2, 0, 1)).ravel()
lo, hi = np.clip(img - 0.3, 0, 1), np.clip(img + 0.3, 0, 1)
torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the import the cascade warms up at load
bounds = symbolic_bounds(net, lo, hi)
t = time.monotonic()
res = branch_and_bound(net, lo, hi, int(y[idx]), deadline=t + seconds, bounds=bounds, milp_fallback=False,
                       milp_after=None, **{k: eval(v) for k, v in kw.items()})
print(json.dumps({"status": res.status, "domains": res.stats.domains, "depth": res.stats.max_depth,
                  "robust": sum(v == "robust" for v in res.verdicts.values()), "targets": len(res.verdicts),
                  "seconds": time.monotonic() - t}))
"""


def run(tree: pathlib.Path, idx: int, seconds: float, kwargs: dict, model: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", WORKER, str(idx), str(seconds), json.dumps(kwargs), model],
                         capture_output=True, text=True, env=env, cwd=tree, timeout=seconds + 300)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: input {idx} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline-tree", required=True, help="a checkout of the release to compare with")
    ap.add_argument("--model", default=str(REPO_ROOT / "models" / "mnist_small_hamming_0.3.pt"))
    ap.add_argument("--indices", default="3,12,19,35,42")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--variants", nargs="*", default=[""])
    args = ap.parse_args(argv)
    variants = [dict(kv.split("=", 1) for kv in v.split(",") if kv) for v in args.variants]
    base_tree = pathlib.Path(args.baseline_tree).resolve()
    print(f"BaB alone, {args.seconds:g} s per input, baseline {base_tree.name}; load average {load_avg()}")
    ratios = {i: [] for i in range(len(variants))}
    for idx in (int(v) for v in args.indices.split(",")):
        base = run(base_tree, idx, args.seconds, {}, args.model)
        print(f"  #{idx:<4d} baseline               {base['domains']:6d} domains depth {base['depth']:3d} "
              f"robust {base['robust']}/{base['targets']}  {base['status']}", flush=True)
        for i, kw in enumerate(variants):
            new = run(REPO_ROOT, idx, args.seconds, kw, args.model)
            rate = (new["domains"] / new["seconds"]) / max(base["domains"] / base["seconds"], 1e-9)
            ratios[i].append(rate)
            label = ",".join(f"{k}={v}" for k, v in kw.items()) or "default"
            print(f"  #{idx:<4d} {label:22s} {new['domains']:6d} domains depth {new['depth']:3d} "
                  f"robust {new['robust']}/{new['targets']}  {new['status']}  {rate:.2f}x domains/s", flush=True)
    for i, kw in enumerate(variants):
        label = ",".join(f"{k}={v}" for k, v in kw.items()) or "default"
        print(f"{label}: median {statistics.median(ratios[i]):.2f}x the baseline's subdomains per second")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
