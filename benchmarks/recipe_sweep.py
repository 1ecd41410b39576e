"""Training-recipe sweep for cifar_small at 8/255 (issue: a Hamming recipe that holds).

  python benchmarks/recipe_sweep.py train  --out runs/sweep --epochs 25 --jobs 4 [--variants a,b] [--seeds 0]
  python benchmarks/recipe_sweep.py report --out runs/sweep [--verify-count 100 --timeout 60]

`train` launches one `hamverify train-small` process per (variant, seed), --jobs at a time, each
writing runs/sweep/<variant>_e<epochs>_s<seed>/.  `report` reads every run's log and checkpoint,
measures clean / PGD accuracy on 1,000 test images and unstable ReLUs, runs `hamverify verify` on
the first 100 exact test images, prints one table and writes benchmarks/results/recipe_sweep.json.
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


def report(args):
    out = pathlib.Path(args.out)
    rows = []
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        log = read_log(d)
        epochs = [r for r in log if isinstance(r.get("epoch"), int)]
        final = next((r for r in log if r.get("epoch") == "final"), None)
        collapsed = next((r["epoch"] for r in epochs if r.get("collapsed")), None)
        row = {"run": d.name, "epochs_done": max([r["epoch"] for r in epochs], default=0),
               "collapsed_epoch": collapsed, "finished": final is not None,
               "train_seconds": final.get("train_seconds") if final else None}
        ckpt = d / "model.pt" if (d / "model.pt").exists() else d / "best.pt" if (d / "best.pt").exists() else d / "last.pt"
        if ckpt.exists() and args.measure:
            row.update(measure(ckpt, args))
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = pathlib.Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(rows, indent=2))
    print_table(rows)


def measure(ckpt: pathlib.Path, args) -> dict:
    env = dict(os.environ)
    ev = json.loads(subprocess.run([sys.executable, "-m", "hamverify.cli", "evaluate", "--model", str(ckpt),
                                    "--count", str(args.eval_count), "--json"], capture_output=True, text=True,
                                   env=env, check=True).stdout)
    out = {"checkpoint": str(ckpt), "clean": ev["clean_accuracy"], "pgd": ev["pgd_accuracy"]}
    if args.verify_count:
        results = ckpt.parent / f"verify_first{args.verify_count}.jsonl"
        summ = subprocess.run([sys.executable, "-m", "hamverify.cli", "verify", "--model", str(ckpt),
                               "--split", "test_first100_exact", "--count", str(args.verify_count),
                               "--timeout", str(args.timeout), "--workers", str(args.workers),
                               "--results", str(results), "--json", "--quiet"],
                              capture_output=True, text=True, env=env)
        if summ.returncode == 0:
            s = json.loads(summ.stdout)
            out.update({"verified": s["verified_accuracy"], "timeouts": s["timeout"],
                        "unstable_symbolic": s.get("mean_unstable_per_layer")})
        else:
            out["verify_error"] = summ.stderr.strip().splitlines()[-1:] if summ.stderr else "failed"
    return out


def print_table(rows):
    cols = ["run", "epochs_done", "collapsed_epoch", "clean", "pgd", "verified", "timeouts", "train_seconds"]
    print("\n" + " | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))


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
    r.add_argument("--out", default="runs/sweep")
    r.add_argument("--results", default="benchmarks/results/recipe_sweep.json")
    r.add_argument("--eval-count", type=int, default=1000)
    r.add_argument("--verify-count", type=int, default=100)
    r.add_argument("--timeout", type=float, default=60)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--no-measure", dest="measure", action="store_false")
    args = ap.parse_args()
    {"train": train, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
