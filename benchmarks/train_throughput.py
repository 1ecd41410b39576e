"""Training throughput of cifar_small: plain (--reg none), Hamming (--reg hamming), PGD-10 adversarial
training with the RS loss (--reg rs) and the certified losses (--loss ibp | crown-ibp | sabr | mtl-ibp,
alone and with the Hamming terms), measured in one process on one device.

  python benchmarks/train_throughput.py [--device auto|cpu|cuda] [--steps 20] [--warmup 3] [--rounds 3]
                                        [--batch-size 128] [--threads N]
                                        [--modes none,hamming,ibp,...]

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

# mode -> (TrainConfig overrides, label); every ratio is printed against "none".
MODES = {
    "none": ({"reg": "none"}, "plain CE (--reg none)"),
    "hamming": ({"reg": "hamming"}, "Hamming, 3N rows (--reg hamming)"),
    "rs": ({"reg": "rs"}, "PGD-10 adv. + RS loss (--reg rs)"),
    "ibp": ({"reg": "none", "loss": "ibp"}, "IBP (--loss ibp)"),
    "crown-ibp": ({"reg": "none", "loss": "crown-ibp"}, "CROWN-IBP, β=1 (--loss crown-ibp)"),
    "sabr": ({"reg": "none", "loss": "sabr"}, "SABR, PGD-8 (--loss sabr)"),
    "mtl-ibp": ({"reg": "none", "loss": "mtl-ibp"}, "MTL-IBP, 1 step (--loss mtl-ibp)"),
    "ibp-hv": ({"reg": "hamming", "loss": "ibp"}, "IBP + Hamming (recipe ibp-hv)"),
    "mtl-ibp-hv": ({"reg": "hamming", "loss": "mtl-ibp"}, "MTL-IBP + Hamming (mtl-ibp-hv)"),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(mode: str, device, args):
    cfg = TrainConfig(dataset="cifar10", adv_steps=args.adv_steps, batch_size=args.batch_size, **MODES[mode][0])
    torch.manual_seed(0)
    model = build_model("cifar_small", "cifar10").to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, generator=gen, device=device)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen, device=device)

    def step():
        # Past the ramps (t = epochs: β = 0, plain IBP) for every mode but crown-ibp, timed at t = 0
        # (β = 1: the CROWN backward pass runs); the robust term is computed at every t.
        loss, _ = regularized_loss(model, cfg, x, y, args.eps, 1.0, gen, t=0.0 if mode == "crown-ibp" else cfg.epochs)
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
    ap.add_argument("--modes", default=None, help=f"comma-separated subset of {', '.join(MODES)} (default all)")
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

    modes = args.modes.split(",") if args.modes else list(MODES)
    unknown = [m for m in modes if m not in MODES]
    if unknown or "none" not in modes:
        print(f"error: --modes must name known modes including none; unknown: {unknown}", file=sys.stderr)
        return 2
    steps = {m: make_step(m, device, args) for m in modes}
    for m in modes:
        time_steps(steps[m], args.warmup, device)
    rounds: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for m in modes:
            rounds[m].append(time_steps(steps[m], args.steps, device) / args.steps)
    per_step = {m: statistics.median(v) for m, v in rounds.items()}
    ips = {m: args.batch_size / s for m, s in per_step.items()}

    print()
    print(f"{'mode':<36} {'ms/step':>9} {'images/s':>10} {'x none':>8} {'spread':>8}")
    for m in modes:
        spread = (max(rounds[m]) - min(rounds[m])) / per_step[m]
        print(f"{MODES[m][1]:<36} {per_step[m] * 1e3:>9.1f} {ips[m]:>10.0f} {ips[m] / ips['none']:>8.3f} {spread:>7.0%}")
    print()
    print("x none = images/s of the mode / images/s of plain CE, measured in this run")
    print("spread = (slowest - fastest round) / median round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
