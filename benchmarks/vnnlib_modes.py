"""Measure the two MILP formulations of a disjunctive VNN-LIB output constraint (hamverify.vnncomp):
one MILP per disjunct ("per-disjunct") vs. one MILP with a binary per disjunct ("disjunction").

Trains a small MNIST MLP for a few seconds (or reuses --workdir's), writes VNN-COMP-style
robustness instances (9 one-row disjuncts "Y_j >= Y_label" per image), and decides each instance
with both modes in the same process, alternating, so that both see the same machine load.

    HAMVERIFY_DATA=/path/to/data python benchmarks/vnnlib_modes.py --count 20 --eps 0.02,0.03
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
import torch
from torch import nn


def train_mlp(x, y, hidden=(64, 64), epochs=2, seed=0):
    torch.manual_seed(seed)
    layers, width = [nn.Flatten()], 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    xt = torch.from_numpy(x.reshape(len(x), 1, 28, 28).astype(np.float32) / 255)
    yt = torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            idx = perm[i:i + 128]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def robustness_spec(x, label, eps):
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    lines = [f"(declare-const X_{i} Real)" for i in range(len(x))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(10)]
    for i in range(len(x)):
        lines += [f"(assert (>= X_{i} {float(lo[i])!r}))", f"(assert (<= X_{i} {float(hi[i])!r}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(10) if j != label) + "))")
    return "\n".join(lines) + "\n"


def main():
    from hamverify.data import load_dataset
    from hamverify.onnx_io import model_to_onnx, save_onnx
    from hamverify.vnncomp import solve_instance
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--eps", default="0.02,0.03")
    ap.add_argument("--hidden", default="64,64")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--workdir", default="/tmp/hamverify_vnnlib_modes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    net_path = work / f"mlp_{'x'.join(map(str, hidden))}.onnx"
    xs, ys = load_dataset("mnist", "test")
    if not net_path.exists():
        xtr, ytr = load_dataset("mnist", "train")
        model = train_mlp(xtr, ytr, hidden)
        save_onnx(model_to_onnx(model, (1, 28, 28)), net_path)
    totals = {"per-disjunct": 0.0, "disjunction": 0.0}
    print(f"{'instance':24s} {'per-disjunct':>22s} {'disjunction':>22s}")
    for eps in (float(e) for e in args.eps.split(",")):
        for i in range(args.count):
            spec = work / f"img{i}_eps{eps}.vnnlib"
            spec.write_text(robustness_spec(xs[i].reshape(-1) / 255.0, int(ys[i]), eps))
            row = []
            for mode in ("per-disjunct", "disjunction") if i % 2 == 0 else ("disjunction", "per-disjunct"):
                t = time.perf_counter()
                res = solve_instance(net_path, spec, args.timeout, mode=mode)
                dt = time.perf_counter() - t
                totals[mode] += dt
                row.append((mode, f"{res.result}/{res.decided_by or '-'} {dt:7.2f}s"))
            row = dict(row)
            print(f"img{i} eps {eps:<12g} {row['per-disjunct']:>22s} {row['disjunction']:>22s}", flush=True)
    print(f"total seconds: per-disjunct {totals['per-disjunct']:.1f}, disjunction {totals['disjunction']:.1f}")


if __name__ == "__main__":
    main()
