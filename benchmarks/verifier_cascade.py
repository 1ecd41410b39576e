"""The new verification cascade against the previous release, in one run (issue 13).

  python benchmarks/verifier_cascade.py [--models mnist_0.1,mnist_0.3,cifar_8,hard] [--count 200] \
      [--timeout 120] [--baseline 5c5a4f6] [--out benchmarks/results/verifier_cascade.json]

The previous release is a ``git worktree`` of ``--baseline`` (default 5c5a4f6, the commit before
issue 13's work) under ``--worktree`` (created if missing).  Each pipeline runs in its own worker
process (one torch thread, the model loaded once, like one ``verify`` worker): the baseline imports
``hamverify`` from the worktree, the new one from this checkout.  For every input the two workers
run one after the other, alternating which goes first, so that a change of the machine's load hits
both alike.  Settings per model are its ``verify_configs/*.toml`` (model, eps, tightening, backend)
with ``--timeout`` per input; the first ``--count`` test inputs.

Printed per model and pipeline: verified / falsified / misclassified / timeout / unknown, the time
per input (mean, median, p95), the mean time per stage, the share of inputs each stage decided; then
the ratios old / new and every input the old pipeline decided but the new one did not ("lost").
The load average (``/proc/loadavg``) is printed before and after each model.
``--from-log LOG`` summarizes the per-input lines of a run's log instead, also of a run stopped
before its end (counts and times per input, no stage times).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
from machine_load import load_avg  # noqa: E402  (benchmarks/ is the script folder, first on sys.path)
MODELS = {  # name -> verify config
    "mnist_0.1": "verify_configs/mnist_small_0.1.toml",
    "mnist_0.3": "verify_configs/mnist_small_0.3.toml",
    "cifar_8": "verify_configs/cifar10_small_8_255.toml",
    "hard": "verify_configs/cifar10_small_none_1_255.toml",  # plain-trained CIFAR-10 net at 1/255
}
DECIDED = ("verified", "falsified", "misclassified")

# The worker: imports hamverify from sys.argv[1], builds one Verifier, then answers one JSON line per
# input index read from stdin with the record (as a dict) and the wall time of the call.
WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(1)
from hamverify.config import parse_eps
from hamverify.data import load_dataset
from hamverify.models import INPUT_SHAPE, load_checkpoint
from hamverify.verify import Verifier, VerifySettings
import dataclasses, hamverify, pathlib
assert pathlib.Path(hamverify.__file__).resolve().is_relative_to(pathlib.Path(sys.argv[1]).resolve()), hamverify.__file__
cfg = json.loads(sys.argv[2])
model, meta = load_checkpoint(cfg["model"])
x, y = load_dataset(cfg["dataset"], cfg.get("split", "test"), cfg.get("data_dir"))
settings = VerifySettings(eps=parse_eps(cfg["eps"]), timeout=float(cfg["timeout"]), tightening=cfg["tightening"],
                          backend=cfg.get("backend", "highs"))
v = Verifier(model, INPUT_SHAPE[cfg["dataset"]], settings)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    i = int(line)
    xi = np.transpose(np.asarray(x[i], dtype=np.float64) / 255.0, (2, 0, 1))
    t = time.monotonic()
    rec, _ = v.verify(xi, int(y[i]), i)
    wall = time.monotonic() - t
    print(json.dumps({"record": dataclasses.asdict(rec), "wall": wall}, default=float), flush=True)
"""


def ensure_worktree(path: pathlib.Path, commit: str) -> pathlib.Path:
    if (path / "hamverify" / "verify.py").is_file():
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        want = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", commit], capture_output=True,
                              text=True).stdout
        if head.strip() == want.strip():
            return path
        raise SystemExit(f"{path} is a worktree of another commit ({head.strip()[:10]}); remove it or pass --worktree")
    subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                   capture_output=True)
    return path


class Worker:
    def __init__(self, root: pathlib.Path, cfg: dict):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(root), json.dumps(cfg)], cwd=REPO_ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        first = json.loads(self.proc.stdout.readline())
        assert first.get("ready"), first

    def run(self, index: int) -> dict:
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


def stage_times(rec: dict) -> dict:
    """Seconds per stage: the record's stage_times (new) or its time_* fields (old)."""
    if rec.get("stage_times"):
        return dict(rec["stage_times"])
    return {"pgd": rec.get("time_pgd", 0.0), "bounds": rec.get("time_bounds", 0.0),
            "milp": rec.get("time_build", 0.0) + rec.get("time_solve", 0.0)}


def summarize(rows: list[dict]) -> dict:
    recs = [r["record"] for r in rows]
    t = np.array([r["time_total"] for r in recs])
    counts = {s: sum(r["status"] == s for r in recs) for s in ("verified", "falsified", "misclassified", "timeout",
                                                                "unknown", "error")}
    stages: dict = {}
    for r in recs:
        for k, v in stage_times(r).items():
            stages[k] = stages.get(k, 0.0) + v
    by: dict = {}
    for r in recs:
        if r["status"] in DECIDED:
            by[r["decided_by"]] = by.get(r["decided_by"], 0) + 1
    n = len(recs)
    return {"n": n, **counts, "mean": float(t.mean()), "median": float(np.median(t)),
            "p95": float(np.percentile(t, 95)), "max": float(t.max()),
            "stage_mean": {k: v / n for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
            "decided_share": {k: v / n for k, v in sorted(by.items(), key=lambda kv: -kv[1])}}


def fmt_summary(name: str, s: dict) -> str:
    lines = [f"  {name:<9} verified {s['verified']:4d}  falsified {s['falsified']:4d}  misclassified "
             f"{s['misclassified']:4d}  timeout {s['timeout']:3d}  unknown {s['unknown']:3d}  error {s['error']}",
             f"            time/input mean {s['mean']:7.3f} s  median {s['median']:7.3f} s  p95 {s['p95']:7.2f} s  "
             f"max {s['max']:7.2f} s",
             "            stage s/input " + ("  ".join(f"{k} {v:.3f}" for k, v in s["stage_mean"].items() if v)
                                              or "(not recorded)"),
             "            decided by    " + "  ".join(f"{k} {100 * v:.1f}%" for k, v in s["decided_share"].items())]
    return "\n".join(lines)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


LOG_LINE = re.compile(r"^\s+(\S+) (\d+): old (\w+)/(\S+) ([\d.]+)s\s+new (\w+)/(\S+) ([\d.]+)s\s*$")


def summarize_log(path: str) -> None:
    """The paired per-input lines of a run's log (stderr), also of a run stopped before its end:
    per model and pipeline the counts and times per input, the ratios, and the inputs the old
    pipeline decided but the new one did not (no stage times: the log does not carry them)."""
    rows: dict = {}
    for line in pathlib.Path(path).read_text().splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        name, i = m.group(1), int(m.group(2))
        for which, (st, by, t) in (("old", m.group(3, 4, 5)), ("new", m.group(6, 7, 8))):
            rec = {"index": i, "status": st, "decided_by": None if by == "None" else by, "time_total": float(t)}
            rows.setdefault(name, {"old": [], "new": []})[which].append({"record": rec})
    if not rows:
        raise SystemExit(f"{path}: no per-input lines")
    for name, pair in rows.items():
        so, sn = summarize(pair["old"]), summarize(pair["new"])
        idx = [r["record"]["index"] for r in pair["old"]]
        lost = [o["record"]["index"] for o, n in zip(pair["old"], pair["new"])
                if o["record"]["status"] in DECIDED and n["record"]["status"] not in DECIDED]
        gained = [o["record"]["index"] for o, n in zip(pair["old"], pair["new"])
                  if o["record"]["status"] not in DECIDED and n["record"]["status"] in DECIDED]
        print(f"\n{name}: {len(idx)} inputs ({min(idx)}..{max(idx)}) from {path}")
        print(fmt_summary("old", so))
        print(fmt_summary("new", sn))
        print(f"  ratios old/new: mean time {ratio(so['mean'], sn['mean']):.2f}x, median "
              f"{ratio(so['median'], sn['median']):.2f}x, p95 {ratio(so['p95'], sn['p95']):.2f}x (times as logged, "
              f"to 0.01 s); timeouts {so['timeout']} -> {sn['timeout']}")
        print(f"  decided by old, not by new: {lost or 'none'}; by new, not by old: {len(gained)} {gained}")


def read_toml(path: pathlib.Path) -> dict:
    import tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mnist_0.1,mnist_0.3,cifar_8,hard", help=f"comma-separated of {', '.join(MODELS)}")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--baseline", default="5c5a4f6", help="commit of the previous release")
    ap.add_argument("--worktree", default=None, help="where its worktree lives (default: /tmp/hamverify-<commit>)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="also write every record and the summaries as JSON")
    ap.add_argument("--from-log", default=None, help="only summarize the per-input lines of a run's log (stderr)")
    args = ap.parse_args(argv)
    if args.from_log:
        return summarize_log(args.from_log)

    worktree = ensure_worktree(pathlib.Path(args.worktree or f"/tmp/hamverify-{args.baseline}"), args.baseline)
    report = {"baseline": args.baseline, "count": args.count, "timeout": args.timeout, "models": {}}
    print(f"previous release {args.baseline} ({worktree}) vs this checkout; first {args.count} test inputs from "
          f"{args.start}, {args.timeout:g} s per input, 1 worker each, alternating per input")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        toml = read_toml(REPO_ROOT / MODELS[name])
        cfg = {k: toml[k] for k in ("model", "dataset", "eps", "tightening") if k in toml}
        cfg.update(backend=toml.get("backend", "highs"), timeout=args.timeout, split="test", data_dir=args.data_dir)
        before = load_avg()
        t0 = time.time()
        workers = {"old": Worker(worktree, cfg), "new": Worker(REPO_ROOT, cfg)}
        rows = {"old": [], "new": []}
        try:
            for i in range(args.start, args.start + args.count):
                order = ("old", "new") if i % 2 == 0 else ("new", "old")
                for which in order:
                    rows[which].append(workers[which].run(i))
                o, n = rows["old"][-1]["record"], rows["new"][-1]["record"]
                print(f"    {name} {i}: old {o['status']}/{o['decided_by']} {o['time_total']:.2f}s  "
                      f"new {n['status']}/{n['decided_by']} {n['time_total']:.2f}s", file=sys.stderr, flush=True)
        finally:
            for w in workers.values():
                w.close()
        after = load_avg()
        summaries = {k: summarize(v) for k, v in rows.items()}
        lost = [o["record"]["index"] for o, n in zip(rows["old"], rows["new"])
                if o["record"]["status"] in DECIDED and n["record"]["status"] not in DECIDED]
        gained = [o["record"]["index"] for o, n in zip(rows["old"], rows["new"])
                  if o["record"]["status"] not in DECIDED and n["record"]["status"] in DECIDED]
        disagree = [o["record"]["index"] for o, n in zip(rows["old"], rows["new"])
                    if {o["record"]["status"], n["record"]["status"]} == {"verified", "falsified"}]
        so, sn = summaries["old"], summaries["new"]
        print(f"\n{name} ({cfg['model']}, eps {cfg['eps']}, tightening {cfg['tightening']}): {args.count} inputs, "
              f"{time.time() - t0:.0f} s wall; load average before {before}, after {after}")
        print(fmt_summary("old", so))
        print(fmt_summary("new", sn))
        print(f"  ratios old/new: mean time {ratio(so['mean'], sn['mean']):.2f}x, median {ratio(so['median'], sn['median']):.2f}x, "
              f"p95 {ratio(so['p95'], sn['p95']):.2f}x; timeouts {so['timeout']} -> {sn['timeout']} "
              f"({100 * so['timeout'] / so['n']:.1f}% -> {100 * sn['timeout'] / sn['n']:.1f}%)")
        print(f"  decided by old, not by new: {lost or 'none'}; by new, not by old: {len(gained)}"
              + (f"; verified vs falsified DISAGREE: {disagree}" if disagree else ""))
        report["models"][name] = {"config": cfg, "load_before": before, "load_after": after, "summaries": summaries,
                                  "lost": lost, "gained": gained, "disagree": disagree,
                                  "records": {k: [r["record"] for r in v] for k, v in rows.items()}}
    if args.out:
        pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.out).write_text(json.dumps(report, indent=1, default=float))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
