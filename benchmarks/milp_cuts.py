"""The MILP backstop with and without ideal-formulation cuts (``hamverify/milp/cuts.py``), side by side.

  python benchmarks/milp_cuts.py --model models/mnist_small_hamming_0.3.pt --eps 0.3 \
      --indices 3,12,19,35 [--seconds 60] [--rounds 4] [--tightening lp] [--targets 1]

Per input: bounds with ``--tightening`` (``lp``: the MNIST 0.3 config's, with its time per neuron),
then for the ``--targets`` open target classes with the lowest margin bound, the per-target MILP of
``hamverify verify`` solved by HiGHS for at most ``--seconds``, once as encoded and once after
``--rounds`` rounds of cut separation at the LP relaxation (the cut time is counted in its total).
Prints the LP relaxation's value before and after the cuts, the cut count, the verdicts and times,
and the ratio of the summed times (inputs where both decide).  One thread; the load average is
printed before and after.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
from machine_load import load_avg  # noqa: E402  (benchmarks/ is the script folder, first on sys.path)
sys.path.insert(0, str(REPO_ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--eps", required=True)
    ap.add_argument("--indices", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tightening", default="lp", choices=["symbolic", "alpha", "lp"])
    ap.add_argument("--lp-time-per-neuron", type=float, default=0.5)
    ap.add_argument("--targets", type=int, default=1)
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from hamverify.bounds import compute_bounds
    from hamverify.bounds.symbolic import margin_lower_bounds
    from hamverify.config import parse_eps
    from hamverify.data import load_dataset
    from hamverify.milp.cuts import strengthen
    from hamverify.milp.encode import encode_network, margin_objective
    from hamverify.milp.highs import solve_highs, solve_lp_relaxation
    from hamverify.models import INPUT_SHAPE, load_checkpoint
    from hamverify.network import from_torch

    model, meta = load_checkpoint(args.model)
    net = from_torch(model.eval(), INPUT_SHAPE[meta["dataset"]])
    x, y = load_dataset(meta["dataset"], args.split, None)
    eps = parse_eps(args.eps)
    print(f"{args.model} eps {args.eps}: {args.tightening} bounds, MILP {args.seconds:g} s per target, "
          f"{args.rounds} cut rounds; load average {load_avg()}")
    totals = {"plain": 0.0, "cuts": 0.0}
    for idx in (int(i) for i in args.indices.split(",")):
        img = np.transpose(x[idx].astype(np.float64) / 255, (2, 0, 1)).ravel()
        label = int(y[idx])
        lo, hi = np.clip(img - eps, 0, 1), np.clip(img + eps, 0, 1)
        kw = {"time_per_neuron": args.lp_time_per_neuron} if args.tightening == "lp" else {}
        t = time.monotonic()
        bounds = compute_bounds(net, lo, hi, args.tightening, **kw)
        t_bounds = time.monotonic() - t
        lbs = margin_lower_bounds(net, lo, hi, bounds, label)
        open_targets = [j for j in np.argsort(lbs) if lbs[j] <= 0][: args.targets]
        milp, logits = encode_network(net, lo, hi, bounds)
        print(f"input {idx} (label {label}): bounds {t_bounds:.1f} s, unstable {milp.unstable_per_layer}, "
              f"open targets {[int(j) for j in open_targets]}")
        for j in open_targets:
            plain = margin_objective(milp, logits, label, int(j))
            t = time.monotonic()
            cut, added = strengthen(plain, rounds=args.rounds, deadline=t + args.seconds)
            t_cuts = time.monotonic() - t
            lp_plain = plain.objective(solve_lp_relaxation(plain))
            lp_cut = cut.objective(solve_lp_relaxation(cut))
            row = [f"  target {j}: LP relaxation {lp_plain:.4f} -> {lp_cut:.4f} with {added} cuts ({t_cuts:.1f} s)"]
            times = {}
            for name, m, spent in (("plain", plain, 0.0), ("cuts", cut, t_cuts)):
                res = solve_highs(m, time_limit=args.seconds - spent)
                times[name] = (res.status, spent + res.solve_time)
                row.append(f"{name} {res.status} {spent + res.solve_time:.1f} s")
            print("; ".join(row), flush=True)
            if all(s in ("robust", "counterexample") for s, _ in times.values()):
                for name, (_, sec) in times.items():
                    totals[name] += sec
    if totals["cuts"] > 0:
        print(f"both decided: plain {totals['plain']:.1f} s, cuts {totals['cuts']:.1f} s, "
              f"ratio plain/cuts {totals['plain'] / totals['cuts']:.2f}")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
