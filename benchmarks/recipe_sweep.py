"""Training-recipe sweep for cifar_small at 8/255 (issue: a Hamming recipe that holds).

  python benchmarks/recipe_sweep.py train  --out runs/sweep --epochs 25 --jobs 4 [--variants a,b] [--seeds 0]
  python benchmarks/recipe_sweep.py report --out runs/sweep runs/full [--verify-count 100 --timeout 60]

`train` launches one `hamverify train-small` process per (variant, seed), --jobs at a time, each
writing runs/sweep/<variant>_e<epochs>_s<seed>/.  `report` reads every run's log (clean / PGD
accuracy of the selected model on the run's 500-image test slice, unstable ReLUs under interval
bounds), runs `hamverify verify` on the first 100 exact test images (verified accuracy, unstable
ReLUs under symbolic bounds), prints one table and writes benchmarks/results/recipe_sweep.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from hamverify.recipes import RECIPES
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from portable_paths import portable  # noqa: E402

SWEEP_VARIANTS = ["paper-adam", "paper-sgd", "gamma-cap3", "clip", "lr-5e-4", "gh900", "gh3000",
                  "stab-sum", "stab-logits", "rollback", "best-val", "hv"]


def run_dir(out: pathlib.Path, variant: str, epochs: int, seed: int, eps_tag: str = "") -> pathlib.Path:
    return out / f"{variant}{eps_tag}_e{epochs}_s{seed}"


def train(args):
    out = pathlib.Path(args.out)
    variants = args.variants.split(",") if args.variants else SWEEP_VARIANTS
    unknown = [v for v in variants if v not in RECIPES]
    if unknown:
        sys.exit(f"unknown variants: {unknown}")
    jobs = [(v, s) for v in variants for s in (int(x) for x in args.seeds.split(","))]
    pending, running = list(jobs), []
    deadline = time.time() + args.max_seconds if args.max_seconds else None
    while pending or running:
        while pending and len(running) < args.jobs:
            variant, seed = pending.pop(0)
            d = run_dir(out, variant, args.epochs, seed)
            d.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "hamverify.cli", "train-small", "--recipe", variant,
                   "--epochs", str(args.epochs), "--seed", str(seed), "--out", str(d),
                   "--device", args.device, "--quiet", "--dataset", args.dataset]
            if args.eps:
                cmd += ["--eps", args.eps]
            if (d / "last.pt").exists() and not (d / "model.pt").exists():
                cmd += ["--resume", str(d / "last.pt")]
            if (d / "model.pt").exists():
                continue
            log = open(d / "stdout.txt", "a")
            running.append((variant, seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
            print(f"started {variant} seed {seed}", flush=True)
        time.sleep(2)
        for item in list(running):
            variant, seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"finished {variant} seed {seed}: exit {proc.returncode}", flush=True)
        if deadline and time.time() > deadline:
            for variant, seed, proc, log in running:
                proc.terminate()
                print(f"deadline: stopped {variant} seed {seed} (resume with the same command)", flush=True)
            break


def read_log(d: pathlib.Path) -> list[dict]:
    p = d / "log.jsonl"
    if not p.exists():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def _final_metrics(log: list[dict]) -> dict:
    """Clean / PGD accuracy (PGD-20, 10 restarts, the run's 500-image test slice) and unstable ReLUs
    under interval bounds (200 test images) of the selected model, from the run's log; for a run
    that did not finish, the best-val epoch's (PGD with 1 restart) or the last epoch's."""
    final = next((r for r in log if r.get("epoch") == "final"), None)
    if final:
        return {"clean": final["clean"], "pgd": final["pgd"], "unstable_ia": final["unstable_ia"],
                "selected_epoch": final.get("selected_epoch"), "rollbacks": final.get("rollbacks")}
    epochs = [r for r in log if isinstance(r.get("epoch"), int) and not r.get("collapsed")]
    if not epochs:
        return {}
    pick = max(epochs, key=lambda r: r["val_pgd"]) if "val_pgd" in epochs[-1] else epochs[-1]
    return {"clean": pick["test_clean"], "pgd": pick["test_pgd"], "unstable_ia": pick["unstable_ia"],
            "selected_epoch": pick["epoch"], "pgd_restarts": 1}


def report(args):
    rows = []
    for out in args.out:
        out = pathlib.Path(out)
        for d in sorted(p for p in out.iterdir() if p.is_dir()):
            log = read_log(d)
            epochs = [r for r in log if isinstance(r.get("epoch"), int)]
            final = next((r for r in log if r.get("epoch") == "final"), None)
            collapsed = [r["epoch"] for r in epochs if r.get("collapsed")]
            row = {"run": f"{out.name}/{d.name}", "epochs_done": max([r["epoch"] for r in epochs], default=0),
                   "collapsed_epochs": collapsed, "finished": final is not None,
                   "train_seconds": final.get("train_seconds") if final else None,
                   "device": final.get("device") if final else None, **_final_metrics(log)}
            ckpt = next((d / n for n in ("model.pt", "best.pt", "last.pt") if (d / n).exists()), None)
            if ckpt is not None and args.verify_count:
                row.update(verify(ckpt, args))
            rows.append(row)
            print(json.dumps(row), flush=True)
    res = pathlib.Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(rows, indent=2))
    print_table(rows)


def verify(ckpt: pathlib.Path, args) -> dict:
    """Verified accuracy on the first N exact CIFAR-10 test images (`hamverify verify`)."""
    results = ckpt.parent / f"verify_first{args.verify_count}_{ckpt.stem}.jsonl"
    summ = subprocess.run([sys.executable, "-m", "hamverify.cli", "verify", "--model", str(ckpt),
                           "--split", "test_first100_exact", "--count", str(args.verify_count),
                           "--timeout", str(args.timeout), "--workers", str(args.workers),
                           "--results", str(results), "--json", "--quiet"],
                          capture_output=True, text=True, env=dict(os.environ))
    if summ.returncode != 0:
        return {"verify_error": (summ.stderr.strip().splitlines() or ["failed"])[-1]}
    s = json.loads(summ.stdout)
    return {"checkpoint": portable(ckpt), "verified": s["verified_accuracy"], "verify_pgd": s["pgd_accuracy"],
            "verify_clean": s["clean_accuracy"], "timeouts": s["timeout"], "unknown": s["unknown"],
            "unstable_symbolic": s.get("mean_unstable_per_layer")}


def _cell(v):
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return "/".join(f"{u:.1f}" if isinstance(u, float) else str(u) for u in v) or "-"
    return "" if v is None else str(v)


def print_table(rows):
    """One Markdown table (docs/TRAINING.md pastes it)."""
    cols = ["run", "epochs_done", "collapsed_epochs", "selected_epoch", "clean", "pgd", "unstable_ia",
            "verify_clean", "verify_pgd", "verified", "timeouts", "unstable_symbolic", "train_seconds"]
    print("\n| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", default="runs/sweep")
    t.add_argument("--epochs", type=int, default=25)
    t.add_argument("--variants", default=None)
    t.add_argument("--seeds", default="0")
    t.add_argument("--jobs", type=int, default=2)
    t.add_argument("--device", default="auto")
    t.add_argument("--dataset", default="cifar10")
    t.add_argument("--eps", default=None)
    t.add_argument("--max-seconds", type=float, default=None)
    r = sub.add_parser("report")
    r.add_argument("--out", nargs="+", default=["runs/sweep"], help="Sweep folders (one or more).")
    r.add_argument("--results", default="benchmarks/results/recipe_sweep.json")
    r.add_argument("--verify-count", type=int, default=100, help="0: no verification.")
    r.add_argument("--timeout", type=float, default=60)
    r.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    {"train": train, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
