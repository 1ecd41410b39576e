"""Attack strength at equal cost: verify.py's PGD (cross-entropy, 20 steps x 10 restarts) against the
targeted margin attack (hamverify.attacks.MarginPGD), issue 13.

  python benchmarks/attack_strength.py [--model models/mnist_small_hamming_0.3.pt] [--eps 0.3] \
      [--count 100] [--margin-configs 50x4,80x2] [--pgd-steps 20] [--pgd-restarts 10]

On the first --count test images (correctly classified ones only), each attack runs with the seed
verify.py uses for that input, and its point is validated exactly as verify.py does it
(``Verifier.validate_counterexample``: clipped into B(x) ∩ [0,1], misclassified by the float64
model).  A margin config ``SxR`` is S steps x R random restarts per open target class (all 9 here),
batched in one pass, run on the float32 model with the float64 one confirming its early stop.
Printed per attack: inputs falsified, mean / median / max seconds per input, total time, and
ratios against PGD; then the overlap (found by one but not the other).  One torch thread, as in
the verifier's workers.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
from machine_load import load_avg  # noqa: E402  (benchmarks/ is the script folder, first on sys.path)


def default_data_dir() -> str | None:
    if os.environ.get("HAMVERIFY_DATA"):
        return None  # the library reads it
    shared = REPO_ROOT.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def parse_margin_config(text: str) -> tuple[int, int]:
    steps, sep, restarts = text.strip().partition("x")
    if not sep or not steps.isdigit() or not restarts.isdigit():
        raise SystemExit(f"bad margin config {text!r}: use STEPSxRESTARTS, e.g. 50x4")
    return int(steps), int(restarts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO_ROOT / "models" / "mnist_small_hamming_0.3.pt"))
    ap.add_argument("--eps", default="0.3")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--margin-configs", default="50x4,80x2",
                    help="comma-separated STEPSxRESTARTS for MarginPGD (default 50x4,80x2: about PGD's time)")
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--pgd-restarts", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    from hamverify import HamverifyError
    from hamverify.attacks import MarginPGD
    from hamverify.config import parse_eps
    from hamverify.data import load_dataset
    from hamverify.models import INPUT_SHAPE, load_checkpoint
    from hamverify.verify import Verifier, VerifySettings

    try:
        eps = parse_eps(args.eps)
        model, meta = load_checkpoint(args.model)
        x_all, y_all = load_dataset(meta["dataset"], args.split, args.data_dir)
    except HamverifyError as exc:
        raise SystemExit(f"error: {exc}") from None
    shape = INPUT_SHAPE[meta["dataset"]]
    settings = VerifySettings(eps=eps, pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts, seed=args.seed)
    verifier = Verifier(model, shape, settings)
    configs = [parse_margin_config(c) for c in args.margin_configs.split(",") if c.strip()]
    names = [f"pgd {args.pgd_steps}x{args.pgd_restarts}"] + [f"margin {s}x{r}" for s, r in configs]
    found = {n: [] for n in names}
    times = {n: [] for n in names}

    print(f"model {args.model} ({meta['dataset']}), eps {eps:.6g}, first {args.count} {args.split} images, "
          f"1 torch thread, load average before: {load_avg()}", flush=True)
    classified = 0
    start_all = time.perf_counter()
    for index in range(min(args.count, len(x_all))):
        x = np.transpose(np.asarray(x_all[index], dtype=np.float64) / 255.0, (2, 0, 1)).ravel()
        label = int(y_all[index])
        if verifier.margin64(x, label) <= 0:
            continue  # misclassified: nothing to attack
        classified += 1
        lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)

        t = time.perf_counter()
        point = verifier._pgd(x, label, index)  # exactly verify.py's PGD call and seed
        times[names[0]].append(time.perf_counter() - t)
        found[names[0]].append(verifier.validate_counterexample(point, lo, hi, label) is not None)

        for name, (steps, restarts) in zip(names[1:], configs):
            gen = torch.Generator().manual_seed(args.seed * 1_000_003 + index)
            attack = MarginPGD(eps, steps=steps, restarts=restarts, generator=gen)
            t = time.perf_counter()
            res = attack.attack_box(verifier.model, lo, hi, label, input_shape=shape, model64=verifier.model64)
            times[name].append(time.perf_counter() - t)
            found[name].append(verifier.validate_counterexample(res.point, lo, hi, label) is not None)
    wall = time.perf_counter() - start_all

    base = names[0]
    n_base = sum(found[base])
    t_base = float(np.mean(times[base])) if times[base] else float("nan")
    print(f"\n{classified} correctly classified inputs attacked; falsified = float64-validated counterexamples")
    head = (f"{'attack':<16} {'falsified':>9} {'x pgd':>6} | {'mean s':>7} {'median s':>8} {'max s':>7} "
            f"{'total s':>8} {'x pgd':>6}")
    print(head)
    print("-" * len(head))
    for n in names:
        k = sum(found[n])
        t = np.array(times[n]) if times[n] else np.array([np.nan])
        ratio_found = f"{k / n_base:6.2f}" if n_base else "     -"
        print(f"{n:<16} {k:>9} {ratio_found} | {t.mean():7.3f} {np.median(t):8.3f} {t.max():7.3f} {t.sum():8.2f} "
              f"{t.mean() / t_base:6.2f}")
    for n in names[1:]:
        a, b = np.array(found[base], bool), np.array(found[n], bool)
        print(f"overlap {base} / {n}: both {int((a & b).sum())}, only pgd {int((a & ~b).sum())}, "
              f"only margin {int((~a & b).sum())}")
    print(f"wall {wall:.1f} s; load average after: {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
