"""Branching heuristics of hamverify.bab on a hard net (issue 13, item 4).

  python benchmarks/bab_branching.py [--eps 0.03] [--count 20] [--timeout 30] \
      [--branching babsr,widest] [--lp leaves] [--train-steps 400] [--hidden 100,100]

Trains (seeded, a few hundred Adam steps, plain cross-entropy: no regularizer, so many unstable
ReLUs) an MNIST MLP ``784-hidden...-10`` -- or loads it from ``--cache`` when present -- and runs
``branch_and_bound`` on the first ``--count`` test images at ``--eps`` that need it (correctly
classified, not proven by a 30-step alpha-CROWN root bound, not falsified by a 100-step x
4-restart MarginPGD; ``--all`` keeps every correctly classified one) with each ``--branching``
rule, ``--timeout`` seconds each, *without* the MILP fallback (so the figures are the search's
own); the rule ``milp`` is the verifier's per-target MILP on the same bounds.  Printed per rule:
inputs decided (robust + counterexample) and undecided, subdomains bounded (total and median),
max depth, mean / median time, and the load average before and after.  One torch thread and one
BLAS thread, as in the verifier's workers.

Measured (default net 784-100-100-10, 400 steps; eps 0.065; 20 inputs of the first 100 test images:
5 misclassified, 10 proven by the root bound and 65 falsified by the attack were skipped; 30 s
each; 2 shared cores at load 4-6):

    rule       robust  cex undecided  domains  median maxdepth  mean s median s
    babsr          18    0         2    28860     155       46    3.85     0.43
    widest         14    0         6   151087    4066       64   12.53     5.43
    intercept      13    0         7   166231    5308       43   13.43     7.78
    milp           14    0         6        -       -        -   14.98    12.23

On the 14 inputs both decided, babsr bounded 1,216 subdomains in 3.7 s against widest's 45,086
in 70.4 s.
"""
from __future__ import annotations

import os

# One BLAS thread, as in the verifier's joblib workers: multithreaded OpenBLAS on the small matrix
# products of a subdomain's bounds was measured 3x slower on the shared 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib
import statistics
import sys
import time

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from machine_load import load_avg  # noqa: E402  (benchmarks/ is the script folder, first on sys.path)


def default_data_dir() -> str | None:
    if os.environ.get("HAMVERIFY_DATA"):
        return None  # the library reads it
    shared = REPO_ROOT.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def mlp(hidden: list[int]) -> nn.Sequential:
    layers, width = [nn.Flatten()], 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def train(hidden, steps: int, data_dir, seed: int = 0) -> nn.Sequential:
    from hamverify.data import load_dataset

    x, y = load_dataset("mnist", "train", data_dir)
    X = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(len(x), 1, 28, 28) / 255.0)
    Y = torch.from_numpy(np.asarray(y, dtype=np.int64))
    torch.manual_seed(seed)
    model = mlp(hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (128,), generator=gen)
        loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def milp_baseline(net, lo, hi, label, bounds, timeout, validate) -> dict:
    """What verify.py's MILP stage does on the same bounds: one HiGHS MILP per target class whose
    symbolic margin bound is <= tol, worst first, sharing ``timeout``."""
    from hamverify.bounds import margin_lower_bounds
    from hamverify.milp.encode import encode_network, margin_objective
    from hamverify.milp.highs import solve_highs

    t0 = time.monotonic()
    deadline = t0 + timeout
    margins = margin_lower_bounds(net, lo, hi, bounds, label)
    targets = sorted((j for j in range(net.num_classes) if j != label and not margins[j] > 1e-6),
                     key=lambda j: margins[j])
    milp, logits = encode_network(net, lo, hi, bounds)
    status = "robust"
    for j in targets:
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            status = "timeout"
            break
        res = solve_highs(margin_objective(milp, logits, label, j), remaining - min(1.0, 0.1 * remaining), tol=1e-6)
        if res.status == "counterexample" and validate(res.x) is not None:
            status = "counterexample"
            break
        if res.status != "robust":
            status = "timeout" if res.status == "timeout" else "unknown"
            break
    return {"status": status, "domains": 0, "depth": 0, "time": round(time.monotonic() - t0, 3), "leaves": 0,
            "lp": 0, "attacks": 0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--branching", default="babsr,widest",
                    help="comma-separated rules of hamverify.bab (babsr, widest, intercept, input), and "
                         "'milp' for the verifier's per-target MILP on the same bounds as a baseline")
    ap.add_argument("--lp", default="leaves", choices=["leaves", "open"])
    ap.add_argument("--hidden", default="100,100")
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--cache", default=str(REPO_ROOT / "runs" / "bab_branching_mlp.pt"))
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--json", help="write the per-input records here")
    ap.add_argument("--all", action="store_true",
                    help="keep the inputs that the root alpha bound proves or a MarginPGD attack falsifies "
                         "(default: skip them -- the cascade decides those before branch and bound)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    from hamverify.attacks import MarginPGD
    from hamverify.bab import branch_and_bound
    from hamverify.bounds import alpha_crown, symbolic_bounds
    from hamverify.data import load_dataset
    from hamverify.network import from_torch

    hidden = [int(h) for h in args.hidden.split(",")]
    cache = pathlib.Path(args.cache)
    key = {"hidden": hidden, "train_steps": args.train_steps}
    model = None
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved.get("key") == key:
            model = mlp(hidden)
            model.load_state_dict(saved["state"])
            model.eval()
    if model is None:
        t = time.monotonic()
        model = train(hidden, args.train_steps, args.data_dir)
        print(f"trained {hidden} for {args.train_steps} steps in {time.monotonic() - t:.1f}s")
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "state": model.state_dict()}, cache)
    model64 = mlp(hidden).double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    model64.eval()
    net = from_torch(model64, (1, 28, 28))

    x, y = load_dataset("mnist", "test", args.data_dir)
    X = np.asarray(x, dtype=np.float64).reshape(len(x), -1) / 255.0
    rules = args.branching.split(",")
    inputs, easy = [], {"misclassified": 0, "root bound": 0, "attack": 0}
    attack = MarginPGD(steps=100, restarts=4, generator=torch.Generator().manual_seed(0))
    for i in range(len(X)):
        if len(inputs) == args.count:
            break
        label = int(y[i])
        if int(np.argmax(net.forward(X[i])[0])) != label:
            easy["misclassified"] += 1
            continue
        if not args.all:
            lo, hi = np.clip(X[i] - args.eps, 0, 1), np.clip(X[i] + args.eps, 0, 1)
            if np.all(np.delete(alpha_crown(net, lo, hi, label, steps=30).margins, label) > 1e-6):
                easy["root bound"] += 1
                continue
            if attack.attack_box(model, lo, hi, label, input_shape=(1, 28, 28), model64=model64).found:
                easy["attack"] += 1
                continue
        inputs.append(i)
    skipped = ", ".join(f"{v} {k}" for k, v in easy.items())
    print(f"net {hidden}, eps {args.eps}: {len(inputs)} inputs of the first {inputs[-1] + 1} test images "
          f"(skipped: {skipped}), {args.timeout:g}s each, lp={args.lp}, no MILP fallback; load before: {load_avg()}")

    records = []
    for i in inputs:
        lo, hi = np.clip(X[i] - args.eps, 0, 1), np.clip(X[i] + args.eps, 0, 1)
        label = int(y[i])
        bounds = symbolic_bounds(net, lo, hi)
        unstable = [int(b.unstable.sum()) for b in bounds]
        row = {"index": i, "unstable": unstable}
        def validate(p, lo=lo, hi=hi, label=label):
            p = np.clip(np.asarray(p, dtype=np.float64), lo, hi)
            with torch.no_grad():
                z = model64(torch.from_numpy(p).view(1, 1, 28, 28))[0]
            m = float(z[label] - torch.cat([z[:label], z[label + 1:]]).max())
            return (p, m) if m < 0 else None

        for rule in rules:
            if rule == "milp":
                row[rule] = milp_baseline(net, lo, hi, label, bounds, args.timeout, validate)
                print(f"  #{i:5d} unstable {unstable} {rule:9s} {row[rule]['status']:14s} "
                      f"{'':21s} {row[rule]['time']:6.2f}s", flush=True)
                continue
            res = branch_and_bound(net, lo, hi, label, deadline=time.monotonic() + args.timeout, bounds=bounds,
                                   model64=model64, validate=validate, branching=rule, milp_fallback=False,
                                   milp_after=None, lp=args.lp, seed=i)
            s = res.stats
            row[rule] = {"status": res.status, "domains": s.domains, "depth": s.max_depth, "time": round(s.time, 3),
                         "leaves": s.leaves, "lp": s.lp_solves, "attacks": s.attacks}
            print(f"  #{i:5d} unstable {unstable} {rule:9s} {res.status:14s} domains {s.domains:6d} "
                  f"depth {s.max_depth:3d} {s.time:6.2f}s", flush=True)
        records.append(row)

    print(f"\nsummary ({len(records)} inputs, eps {args.eps}, {args.timeout:g}s each); load after: {load_avg()}")
    print(f"{'rule':10s} {'robust':>6s} {'cex':>4s} {'undecided':>9s} {'domains':>8s} {'median':>7s} "
          f"{'maxdepth':>8s} {'mean s':>7s} {'median s':>8s}")
    for rule in rules:
        rs = [r[rule] for r in records]
        robust = sum(r["status"] == "robust" for r in rs)
        cex = sum(r["status"] == "counterexample" for r in rs)
        times = [r["time"] for r in rs]
        doms = [r["domains"] for r in rs]
        print(f"{rule:10s} {robust:6d} {cex:4d} {len(rs) - robust - cex:9d} {sum(doms):8d} "
              f"{statistics.median(doms):7.0f} {max(r['depth'] for r in rs):8d} {statistics.mean(times):7.2f} "
              f"{statistics.median(times):8.2f}")
    both = [r for r in records if all(r[k]["status"] in ("robust", "counterexample") for k in rules)]
    if both and len(rules) > 1:
        print(f"on the {len(both)} inputs every rule decided: " + ", ".join(
            f"{k} {sum(r[k]['domains'] for r in both)} domains / {sum(r[k]['time'] for r in both):.1f}s"
            for k in rules))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "records": records}, indent=1))


if __name__ == "__main__":
    main()
