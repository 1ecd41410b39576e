"""Choose among trained checkpoints by verified accuracy on held-out *training* images, never the test set.

  python benchmarks/select_by_val.py --count 200 --timeout 30 --out benchmarks/results/select_cifar8.json \
      models/cifar10_small_hamming_8_255.pt runs/seed1/model.pt ...

Each checkpoint trained with best-val kept its last `val_count` training images out of training; this
runs `hamverify verify --split train` on the first --count of them (same slice for every candidate, so
the comparison is paired) and prints verified / PGD / clean accuracy, timeouts and mean time.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from hamverify.models import read_checkpoint
from hamverify.data import load_dataset
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from portable_paths import portable, portable_command  # noqa: E402


def verify_on_val(ckpt: str, count: int, timeout: float, results_dir: pathlib.Path) -> dict:
    meta = read_checkpoint(ckpt)
    cfg = meta.get("config", {})
    val = int(cfg.get("val_count") or 0)
    if val < count:
        raise SystemExit(f"{ckpt}: held out {val} training images, fewer than --count {count}")
    n_train = len(load_dataset(meta["dataset"], "train")[1])
    start = n_train - val
    results = results_dir / (pathlib.Path(ckpt).parent.name + "_" + pathlib.Path(ckpt).stem + ".jsonl")
    cmd = ["hamverify", "verify", "--model", ckpt, "--split", "train", "--start", str(start),
           "--count", str(count), "--timeout", str(timeout), "--workers", "1", "--quiet", "--json",
           "--results", str(results)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{ckpt}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    summary = json.loads(out.stdout)
    # Paths as the committed table stores them: relative to the repository or runs/ (issue 16.7).
    summary.update(checkpoint=portable(ckpt), recipe=cfg.get("recipe"), overrides={k: cfg.get(k) for k in
                   ("loss", "reg", "gamma_s", "gamma_h", "train_eps_factor", "adv_ce", "epochs", "seed")},
                   selected_epoch=meta.get("metrics", {}).get("selected_epoch"),
                   command=portable_command(cmd))
    if "results" in summary:
        summary["results"] = portable(summary["results"])
    return summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--out", required=True, help="JSON file for the table.")
    ap.add_argument("--results-dir", default="runs/select")
    args = ap.parse_args()
    results_dir = pathlib.Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'checkpoint':60s} verified   PGD  clean  timeouts  s/input")
    for ckpt in args.checkpoints:
        s = verify_on_val(ckpt, args.count, args.timeout, results_dir)
        rows.append(s)
        print(f"{ckpt:60s} {s['verified_accuracy']:7.1%} {s['pgd_accuracy']:6.1%} {s['clean_accuracy']:6.1%} "
              f"{s['timeout']:8d} {s['time_mean']:8.2f}", flush=True)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
