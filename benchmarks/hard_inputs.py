"""Where the hard inputs stand: branch and bound alone, and a long margin attack, per open target.

  python benchmarks/hard_inputs.py --model models/mnist_small_hamming_0.3.pt --eps 0.3 \
      --indices 3,12,19,35 [--seconds 30] [--steps 500 --restarts 64]

For inputs the cascade leaves as timeouts, the question is whether the gap sits in *proving* (the
relaxation is far below zero) or in *finding* (a counterexample the attack misses). Per input this
runs ``bab.branch_and_bound`` alone (symbolic root bounds, no MILP fallback, one torch thread) for
``--seconds`` and prints, for every target still open, the number of open subdomains and the
smallest / median margin lower bound among them; then ``MarginPGD`` with ``--steps`` x
``--restarts`` on each of those targets and the smallest margin it reached (> 0: no counterexample).
``--bab`` passes keyword options to ``branch_and_bound`` (e.g. ``intermediate='inherit'``).
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
    ap.add_argument("--eps", required=True, help="e.g. 0.3 or 8/255")
    ap.add_argument("--indices", required=True, help="comma-separated test indices")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--restarts", type=int, default=64)
    ap.add_argument("--bab", nargs="*", default=[], help="KEY=PYTHON_VALUE options of branch_and_bound")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    import hamverify.bab.search as search
    from hamverify.attacks.margin import MarginPGD
    from hamverify.bounds import symbolic_bounds
    from hamverify.cascade import warm_up_optimizer
    from hamverify.config import parse_eps
    from hamverify.data import load_dataset
    from hamverify.models import INPUT_SHAPE, load_checkpoint
    from hamverify.network import from_torch

    model, meta = load_checkpoint(args.model)
    model.eval()
    dataset = meta["dataset"]
    shape = INPUT_SHAPE[dataset]
    net = from_torch(model, shape)
    x, y = load_dataset(dataset, args.split, None)
    eps = parse_eps(args.eps)
    options = {k: eval(v) for k, v in (kv.split("=", 1) for kv in args.bab)}
    warm_up_optimizer()
    captured = {}
    result_of = search._result

    def keep_search(s, how, t0):  # the queue at the end: what is still open, and how far below 0
        captured["search"] = s
        return result_of(s, how, t0)

    search._result = keep_search
    print(f"{args.model} eps {args.eps}: BaB alone {args.seconds:g} s per input {options or ''}, "
          f"margin attack {args.steps} x {args.restarts}; load average {load_avg()}")
    for idx in (int(i) for i in args.indices.split(",")):
        img = np.transpose(x[idx].astype(np.float64) / 255, (2, 0, 1)).ravel()
        label = int(y[idx])
        lo, hi = np.clip(img - eps, 0, 1), np.clip(img + eps, 0, 1)
        bounds = symbolic_bounds(net, lo, hi)
        t = time.monotonic()
        res = search.branch_and_bound(net, lo, hi, label, deadline=t + args.seconds, bounds=bounds,
                                      milp_fallback=False, milp_after=None, **options)
        s = captured["search"]
        open_lbs: dict[int, list[float]] = {}
        for _, _, dom in s.queue:
            for j, lb in zip(dom.targets, dom.lbs):
                open_lbs.setdefault(int(j), []).append(float(lb))
        closed = sorted(j for j, v in res.verdicts.items() if v == "robust")
        print(f"input {idx} (label {label}): {res.status}, {res.stats.domains} subdomains, depth "
              f"{res.stats.max_depth}; robust targets {closed}")
        gen = torch.Generator().manual_seed(idx)
        for j in sorted(open_lbs):
            lbs = np.array(open_lbs[j])
            attack = MarginPGD(eps=eps, steps=args.steps, restarts=args.restarts, generator=gen)
            found = attack.attack_box(model, lo.reshape(shape), hi.reshape(shape), label, targets=[j])
            print(f"  target {j}: {lbs.size} open subdomains, lower bound min {lbs.min():.4f} median "
                  f"{np.median(lbs):.4f}; attack margin {found.margin:.4f}")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
