"""Verification speed by stage: bounds tightening (ia / symbolic / lp) x MILP back end (highs / pulp),
and joblib workers 1 vs 2, on a trained cifar_small checkpoint (docs/METHOD.md §5.8).

  python benchmarks/verify_speed.py [--model PATH] [--count 100] [--timeout 60] \
      [--configs ia+pulp,ia+highs,symbolic+pulp,symbolic+highs,lp+pulp,lp+highs] \
      [--workers-config symbolic+highs] [--no-workers]

Every configuration runs `hamverify.runner.run_verification` on the same first --count images of
--split (default the first 100 exact CIFAR-10 test images) at --eps (default 8/255), each into a
fresh temporary results file, in this one process and run.  Printed: the share of inputs decided at
each stage (clean = misclassified, pgd, bounds, milp; open = timeout/unknown/error), the mean time per
input of each stage (pgd, bounds, MILP build, solve), the mean / median / p95 time per input, and
ratios of the mean and total time against the `ia+pulp` row (or the first row when that is not run).
Then the wall time of --workers-config with --workers 1 and 2 (a cold pool, then a warm one) and the
ratios.  A verdict that differs
between configurations (verified in one, falsified in another) is reported: it would be a bug.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from portable_paths import REPO_ROOT, RUNS  # noqa: E402

# runs/ is $HAMVERIFY_RUNS, else the repository's runs/ (benchmarks/portable_paths.py)
DEFAULT_MODELS = [RUNS / "round2" / "hv-gs8-gh3000_e100_s0" / "best.pt",
                  REPO_ROOT / "models" / "cifar10_small_hamming_8_255.pt"]
ALL_CONFIGS = ["ia+pulp", "ia+highs", "symbolic+pulp", "symbolic+highs", "lp+pulp", "lp+highs"]
BASELINE = "ia+pulp"
STAGES = ("clean", "pgd", "bounds", "milp", "open")


def default_model() -> pathlib.Path:
    return next((p for p in DEFAULT_MODELS if p.is_file()), DEFAULT_MODELS[-1])


def default_data_dir() -> str | None:
    if os.environ.get("HAMVERIFY_DATA"):
        return None  # the library reads it
    shared = REPO_ROOT.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def parse_config(text: str) -> tuple[str, str]:
    tightening, sep, backend = text.strip().partition("+")
    if not sep or tightening not in ("ia", "symbolic", "lp") or backend not in ("highs", "pulp"):
        raise SystemExit(f"bad config {text!r}: use TIGHTENING+BACKEND, e.g. symbolic+highs")
    return tightening, backend


def stage(rec) -> str:
    if rec.status == "misclassified":
        return "clean"
    if rec.status in ("verified", "falsified") and rec.decided_by in ("pgd", "bounds", "milp"):
        return rec.decided_by
    return "open"


def run_config(model, settings, x, y, indices, workers, tmp: pathlib.Path, name: str):
    from hamverify.runner import run_verification
    results = tmp / f"{name.replace('+', '_')}_w{workers}.jsonl"
    start = time.perf_counter()
    records = run_verification(model, settings, x, y, indices, results, workers=workers, progress=False,
                               log=lambda m: None)
    return records, time.perf_counter() - start


def row(name, records, wall):
    t = np.array([r.time_total for r in records])
    n = len(records)
    mean = lambda field: float(np.mean([getattr(r, field) for r in records]))  # noqa: E731
    unstable = [r.unstable_per_layer for r in records if r.unstable_per_layer]
    return {
        "config": name, "n": n, "wall": wall,
        **{f"share_{s}": sum(stage(r) == s for r in records) / n for s in STAGES},
        "verified": sum(r.status == "verified" for r in records),
        "falsified": sum(r.status == "falsified" for r in records),
        "timeout": sum(r.status == "timeout" for r in records),
        "t_pgd": mean("time_pgd"), "t_bounds": mean("time_bounds"), "t_build": mean("time_build"),
        "t_solve": mean("time_solve"),
        "t_mean": float(t.mean()), "t_median": float(np.median(t)), "t_p95": float(np.percentile(t, 95)),
        "t_sum": float(t.sum()),
        "unstable": " / ".join(f"{v:.1f}" for v in np.mean(unstable, axis=0)) if unstable else "-",
    }


def print_table(rows, baseline):
    base = next((r for r in rows if r["config"] == baseline), rows[0])
    print(f"\nshare of inputs decided per stage, mean seconds per input per stage, time per input; "
          f"ratios against {base['config']} (lower is faster)")
    head = (f"{'config':<15} {'clean':>6} {'pgd':>6} {'bounds':>6} {'milp':>6} {'open':>6} | {'ver':>4} {'fal':>4} "
            f"{'t/o':>4} | {'pgd s':>7} {'bounds s':>8} {'build s':>7} {'solve s':>8} | {'mean s':>7} "
            f"{'median s':>8} {'p95 s':>7} | {'x mean':>6} {'x total':>7} | unstable ReLUs/layer")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = (lambda a, b: f"{a / b:6.2f}" if b > 0 else "     -")  # noqa: E731
        print(f"{r['config']:<15} " + " ".join(f"{100 * r['share_' + s]:5.0f}%" for s in STAGES)
              + f" | {r['verified']:>4} {r['falsified']:>4} {r['timeout']:>4} | {r['t_pgd']:7.3f} {r['t_bounds']:8.3f} "
              f"{r['t_build']:7.3f} {r['t_solve']:8.2f} | {r['t_mean']:7.2f} {r['t_median']:8.2f} {r['t_p95']:7.2f} | "
              f"{ratio(r['t_mean'], base['t_mean'])} {ratio(r['t_sum'], base['t_sum']):>7} | {r['unstable']}")


def conflicts(all_records: dict) -> list[str]:
    """Inputs verified under one configuration and falsified under another."""
    by_index: dict[int, dict[str, str]] = {}
    for name, records in all_records.items():
        for r in records:
            by_index.setdefault(r.index, {})[name] = r.status
    out = []
    for i, statuses in sorted(by_index.items()):
        if "verified" in statuses.values() and "falsified" in statuses.values():
            out.append(f"input {i}: {statuses}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help=f"checkpoint (default: first of {', '.join(map(str, DEFAULT_MODELS))})")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per input (default 60)")
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--dataset", default=None, help="default: the checkpoint's")
    ap.add_argument("--split", default="test_first100_exact")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--configs", default=",".join(ALL_CONFIGS),
                    help=f"comma-separated TIGHTENING+BACKEND (default: all six; baseline {BASELINE})")
    ap.add_argument("--workers-config", default="symbolic+highs",
                    help="configuration timed with --workers 1 and 2 (default symbolic+highs)")
    ap.add_argument("--no-workers", action="store_true", help="skip the workers 1 vs 2 comparison")
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--pgd-restarts", type=int, default=10)
    args = ap.parse_args(argv)

    from hamverify import HamverifyError
    from hamverify.config import parse_eps
    from hamverify.data import load_dataset
    from hamverify.models import read_checkpoint
    from hamverify.verify import VerifySettings

    model = pathlib.Path(args.model) if args.model else default_model()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs + ([] if args.no_workers else [args.workers_config]):
        parse_config(c)
    try:
        eps = parse_eps(args.eps)
        meta = read_checkpoint(model)
        dataset = args.dataset or meta["dataset"]
        x, y = load_dataset(dataset, args.split, args.data_dir)
    except HamverifyError as exc:
        raise SystemExit(f"error: {exc}") from None
    indices = list(range(args.start, min(args.start + args.count, len(x))))

    def settings(name):
        tightening, backend = parse_config(name)
        return VerifySettings(eps=eps, timeout=args.timeout, tightening=tightening, backend=backend,
                              pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts)

    print(f"model {model} ({meta.get('arch')}, {dataset}), {len(indices)} inputs of {args.split} from {args.start}, "
          f"eps {eps:.6g}, timeout {args.timeout:g}s per input, {os.cpu_count()} cores", flush=True)
    rows, all_records = [], {}
    with tempfile.TemporaryDirectory(prefix="verify_speed_") as tmp:
        tmp = pathlib.Path(tmp)
        for name in configs:
            records, wall = run_config(model, settings(name), x, y, indices, 1, tmp, name)
            all_records[name] = records
            rows.append(row(name, records, wall))
            r = rows[-1]
            print(f"  {name:<15} wall {wall:7.1f} s  verified {r['verified']}  falsified {r['falsified']}  "
                  f"timeout {r['timeout']}", file=sys.stderr, flush=True)
        print_table(rows, BASELINE)
        bad = conflicts(all_records)
        if bad:
            print("\nCONFLICTING VERDICTS (a soundness bug):\n  " + "\n  ".join(bad))

        if not args.no_workers:
            s = settings(args.workers_config)
            walls, statuses, busy = {}, {}, {}
            # 1 worker (in this process, verifier already built), then 2 workers twice: "cold" pays
            # loky's process start-up and each worker's model load, "warm" reuses that pool.
            for tag, workers in (("1", 1), ("2 cold", 2), ("2 warm", 2)):
                records, walls[tag] = run_config(model, s, x, y, indices, workers, tmp,
                                                 f"{args.workers_config}_{tag.replace(' ', '_')}")
                statuses[tag] = [r.status for r in records]
                busy[tag] = sum(r.time_total for r in records)
            same = statuses["1"] == statuses["2 cold"] == statuses["2 warm"]
            print(f"\nworkers ({args.workers_config}, {len(indices)} inputs, wall time): 1 worker {walls['1']:.1f} s; "
                  f"2 workers {walls['2 cold']:.1f} s cold (incl. pool start-up, ratio 2/1 = "
                  f"{walls['2 cold'] / walls['1']:.2f}), {walls['2 warm']:.1f} s warm (ratio 2/1 = "
                  f"{walls['2 warm'] / walls['1']:.2f}, speed-up {walls['1'] / walls['2 warm']:.2f}x); "
                  f"same verdicts: {'yes' if same else 'NO'}; sum of per-input times 1 / 2 cold / 2 warm: "
                  f"{busy['1']:.1f} / {busy['2 cold']:.1f} / {busy['2 warm']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
