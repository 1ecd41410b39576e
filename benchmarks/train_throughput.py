"""Training throughput of cifar_small: plain (--reg none), Hamming (--reg hamming) and PGD-10 adversarial
training with the RS loss (--reg rs), measured in one process on one device.

  python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--steps 20] [--warmup 3] [--rounds 3]
                                        [--batch-size 128] [--threads N]

Each timed step is exactly what `hamverify train-small` does per batch: `train.regularized_loss` (one
forward pass over [x; x+; x-] for Hamming; PGD-10 + interval bounds + L1 for RS), backward, Adam step.
Inputs are random images in [0, 1] (throughput does not depend on the data). The modes are timed in
turn, `--rounds` times, and each mode's median round is reported, so that a drifting machine load hits
all of them alike. images/s counts training images (the batch size), not the extra corner/PGD rows.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from hamverify import HamverifyError
from hamverify.config import parse_eps
from hamverify.models import build_model
from hamverify.train import TrainConfig, regularized_loss, resolve_device

MODES = [("none", "plain CE (--reg none)"), ("hamming", "Hamming, 3N rows (--reg hamming)"),
         ("rs", "PGD-10 adv. + RS loss (--reg rs)")]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(reg: str, device, args):
    cfg = TrainConfig(dataset="cifar10", reg=reg, adv_steps=args.adv_steps, batch_size=args.batch_size)
    torch.manual_seed(0)
    model = build_model("cifar_small", "cifar10").to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, generator=gen, device=device)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen, device=device)

    def step():
        loss, _ = regularized_loss(model, cfg, x, y, args.eps, 1.0, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def time_steps(step, n, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per mode and round (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds; the median is reported (default 3)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--adv-steps", type=int, default=10, help="PGD steps of the RS baseline (default 10)")
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
        args.eps = parse_eps(args.eps)
    except HamverifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.steps < 1 or args.rounds < 1 or args.batch_size < 1:
        print("error: --steps, --rounds and --batch-size must be >= 1", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"cifar_small training throughput on {name}; torch {torch.__version__}; batch {args.batch_size}, "
          f"eps {args.eps:.5g}, {args.warmup} warm-up + {args.rounds} x {args.steps} timed steps per mode")

    steps = {reg: make_step(reg, device, args) for reg, _ in MODES}
    for reg, _ in MODES:
        time_steps(steps[reg], args.warmup, device)
    rounds: dict[str, list[float]] = {reg: [] for reg, _ in MODES}
    for _ in range(args.rounds):
        for reg, _ in MODES:
            rounds[reg].append(time_steps(steps[reg], args.steps, device) / args.steps)
    per_step = {reg: statistics.median(v) for reg, v in rounds.items()}
    ips = {reg: args.batch_size / s for reg, s in per_step.items()}

    print()
    print(f"{'mode':<36} {'ms/step':>9} {'images/s':>10} {'spread':>8}")
    for reg, label in MODES:
        spread = (max(rounds[reg]) - min(rounds[reg])) / per_step[reg]
        print(f"{label:<36} {per_step[reg] * 1e3:>9.1f} {ips[reg]:>10.0f} {spread:>7.0%}")
    print()
    print(f"throughput ratio hamming/none: {ips['hamming'] / ips['none']:.3f}  "
          f"(a Hamming step costs {per_step['hamming'] / per_step['none']:.2f}x a plain step)")
    print(f"throughput ratio rs/hamming:   {ips['rs'] / ips['hamming']:.3f}  "
          f"(a PGD-{args.adv_steps} RS step costs {per_step['rs'] / per_step['hamming']:.2f}x a Hamming step)")
    print("spread = (slowest - fastest round) / median round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
