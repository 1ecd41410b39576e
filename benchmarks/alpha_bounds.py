"""Bounds-only proofs: symbolic margin bounds (what verify.py uses) against alpha-CROWN
(hamverify.bounds.alpha_crown) on the same intermediate bounds, issue 13.

  python benchmarks/alpha_bounds.py [--model models/mnist_small_hamming_0.3.pt] [--eps 0.3] \
      [--count 50] [--steps 20,50] [--lr 0.1]

On the first --count test images (correctly classified ones only): the symbolic intermediate
bounds, then the symbolic margin lower bounds, then alpha-CROWN with each --steps (stopping early
once every margin exceeds the verifier's tol, 1e-6).  An input is *proven* when every margin bound
exceeds tol -- the bounds-only verdict of verify.py.  Printed per method: inputs proven, open
(target classes with bound <= tol, summed over inputs: what the MILP stage would get), mean time
per input of the margin step and in total with the intermediate bounds, and ratios against the
symbolic row.  The one-time densification of the weights for torch (cached per network) is
printed separately.  One torch thread, as in the verifier's workers.

``--intermediate-steps N`` (default 20; 0: off) adds the optimized intermediate bounds
(``hamverify.bounds.optimized.alpha_bounds``, what ``--tightening alpha`` uses in the
cascade) with alpha-CROWN margins on them (the last --steps), and ``--lp`` the per-neuron LP
bounds (``cascade.lp_stage``, 0.5 s per neuron, no overall limit) with the same margins; their
rows count the time of those intermediate bounds in ``total s``, and the unstable ReLUs per layer
(mean over the inputs) are printed per kind of intermediate bounds.
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
TOL = 1e-6  # VerifySettings.tol


def default_data_dir() -> str | None:
    if os.environ.get("HAMVERIFY_DATA"):
        return None  # the library reads it
    shared = REPO_ROOT.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO_ROOT / "models" / "mnist_small_hamming_0.3.pt"))
    ap.add_argument("--eps", default="0.3")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--steps", default="20,50", help="comma-separated alpha step counts (default 20,50)")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--intermediate-steps", type=int, default=20)
    ap.add_argument("--lp", action="store_true", help="also the per-neuron LP intermediate bounds (slow)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    from hamverify import HamverifyError
    from hamverify.bounds import alpha_crown, margin_lower_bounds, symbolic_bounds
    from hamverify.bounds.alpha import _dense_weights
    from hamverify.bounds.optimized import alpha_bounds
    from hamverify.cascade import lp_stage, warm_up_optimizer
    from hamverify.config import parse_eps
    from hamverify.data import load_dataset
    from hamverify.models import INPUT_SHAPE, load_checkpoint
    from hamverify.network import from_torch

    try:
        eps = parse_eps(args.eps)
        model, meta = load_checkpoint(args.model)
        x_all, y_all = load_dataset(meta["dataset"], args.split, args.data_dir)
    except HamverifyError as exc:
        raise SystemExit(f"error: {exc}") from None
    shape = INPUT_SHAPE[meta["dataset"]]
    model64 = model.double().eval()
    net = from_torch(model64, shape)
    step_list = [int(s) for s in args.steps.split(",") if s.strip()]
    t = time.perf_counter()
    _dense_weights(net, torch.float32)
    t_dense = time.perf_counter() - t

    print(f"model {args.model} ({meta['dataset']}), eps {eps:.6g}, first {args.count} {args.split} images, "
          f"1 torch thread, load average before: {load_avg()}", flush=True)
    warm_up_optimizer()
    names = ["symbolic"] + [f"alpha {s} steps" for s in step_list]
    inter_kinds = (["alpha bounds"] if args.intermediate_steps > 0 else []) + (["lp bounds"] if args.lp else [])
    names += [f"{k} + alpha {step_list[-1]}" for k in inter_kinds]
    t_extra = {n: [] for n in names}  # the intermediate bounds' own time, per row
    unstable = {k: [] for k in ["symbolic"] + inter_kinds}
    proven = {n: 0 for n in names}
    open_classes = {n: 0 for n in names}
    t_margin = {n: [] for n in names}
    t_inter, gains = [], []
    inputs = 0
    for index in range(min(args.count, len(x_all))):
        x = np.transpose(np.asarray(x_all[index], dtype=np.float64) / 255.0, (2, 0, 1)).ravel()
        label = int(y_all[index])
        if int(net.forward(x)[0].argmax()) != label:
            continue
        inputs += 1
        lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
        t = time.perf_counter()
        bounds = symbolic_bounds(net, lo, hi)
        t_inter.append(time.perf_counter() - t)
        others = [j for j in range(net.num_classes) if j != label]

        t = time.perf_counter()
        sym = margin_lower_bounds(net, lo, hi, bounds, label)
        t_margin["symbolic"].append(time.perf_counter() - t)
        results = {"symbolic": sym}
        unstable["symbolic"].append([int(b.unstable.sum()) for b in bounds])
        for kind in inter_kinds:
            t = time.perf_counter()
            if kind == "alpha bounds":
                tight = alpha_bounds(net, lo, hi, prior=bounds, steps=args.intermediate_steps, lr=args.lr)
            else:
                tight = lp_stage(net, lo, hi, bounds, 0.5, time.monotonic() + 1e6)
            name = f"{kind} + alpha {step_list[-1]}"
            t_extra[name].append(time.perf_counter() - t)
            unstable[kind].append([int(b.unstable.sum()) for b in tight])
            t = time.perf_counter()
            # CROWN is not monotone in the intermediate bounds (its slope choice moves with them):
            # like the cascade, keep the better of these margins and the symbolic ones.
            results[name] = np.maximum(sym, alpha_crown(net, lo, hi, label, bounds=tight, steps=step_list[-1],
                                                        lr=args.lr, stop_at=TOL).margins)
            t_margin[name].append(time.perf_counter() - t)
        for name, steps in zip(names[1:], step_list):
            t = time.perf_counter()
            results[name] = alpha_crown(net, lo, hi, label, bounds=bounds, steps=steps, lr=args.lr,
                                        stop_at=TOL).margins
            t_margin[name].append(time.perf_counter() - t)
        for name, m in results.items():
            assert np.all(m[others] >= sym[others] - 1e-9), "alpha looser than symbolic: a bug"
            n_open = int(np.sum(~(m[others] > TOL)))
            open_classes[name] += n_open
            proven[name] += n_open == 0
        gains.append(float(np.mean(results[names[-1]][others] - sym[others])))

    ti = float(np.mean(t_inter))
    base_total = ti + float(np.mean(t_margin["symbolic"]))
    print(f"\n{inputs} correctly classified inputs; proven = every margin lower bound > {TOL:g}; "
          f"intermediate (symbolic) bounds {ti:.3f} s per input, shared by every row; torch weights "
          f"densified once in {t_dense:.2f} s (cached per network)")
    head = (f"{'margins by':<26} {'proven':>6} {'open classes':>12} | {'margin s':>8} {'total s':>8} "
            f"{'x total':>7}")
    print(head)
    print("-" * len(head))
    for n in names:
        tm = float(np.mean(t_margin[n]))
        tt = ti + tm + (float(np.mean(t_extra[n])) if t_extra[n] else 0.0)
        print(f"{n:<26} {proven[n]:>6} {open_classes[n]:>12} | {tm:8.3f} {tt:8.3f} "
              f"{tt / base_total:7.2f}")
    for kind, counts in unstable.items():
        mean = " / ".join(f"{v:.1f}" for v in np.mean(np.array(counts), axis=0))
        print(f"unstable ReLUs per layer, {kind} intermediate bounds: {mean}")
    print(f"mean gain of the margin bound over symbolic ({names[-1]}): {np.mean(gains):.3f}")
    print(f"load average after: {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
