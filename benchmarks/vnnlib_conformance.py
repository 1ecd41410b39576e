"""The VNN-LIB 2.0 conformance suite ``vnnlib-satisfactory`` against ``hamverify-vnnlib`` (issue 17,
item 4): pass / fail / unknown per category.

  python benchmarks/vnnlib_conformance.py [--solver .venv/bin/hamverify-vnnlib] [--timeout 30] \
      [--test CATEGORY] [--workdir /tmp/hamverify-vnnlib-conformance] [--json OUT.json]

Runs ``vnnlib-satisfactory run --solver SOLVER --timeout T`` in ``--workdir`` (the suite writes its
generated networks and queries and ``report.json`` under ``.vnnlib-satisfactory/`` of its working
directory), then reads the report.  The suite first asks the solver what it supports (``supports
--onnx-operators`` and the theory queries) and skips the cases whose op or theory it does not
claim; it runs the rest one by one and compares the verdict with the case's known answer.

Columns: ``pass`` (the known answer), ``fail`` (the other definite answer: a wrong verdict),
``unknown`` (``unknown`` / ``timed-out``: the suite's "suspect"), ``error`` (no verdict: the solver
exited on an error, was killed at the time limit, or the case has no known answer) and ``skip``
(an op or theory not claimed).  Exit status 1 when any case failed.

Measured (vnnlib-satisfactory 1.0.1, ``--timeout 30``, 2 cores busy with a training and helpers,
load 3.2-3.9, 675 s wall): 154 of 178 pass, 0 fail, 6 unknown, 0 error, 18 skipped.  Unknown: Div by
an input-dependent tensor (4) and a Mul of two (1): not piecewise linear; ``network_isomorphic01``
(1), an ``isomorphic-to`` network declared float16 for a float32 model, which passes since such a
declaration is accepted (unsat over the reals stands; a sat witness becomes unknown):
``--test network_isomorphic`` 2 of 2 pass, so 155 of 178 with the rest of that run.
``constant01`` and ``arithmetic_lin02`` (sat only
at a corner of the input box, where every row holds with equality) pass since the MILP's point with
``t = 0`` is tried as a counterexample and the attack's time starts after torch is imported; in the
run before (load 4.4-6.0) they answered unknown at 30 s: 152 pass, 8 unknown.
Skipped (not claimed by ``supports``): Pow (6), Softmax (5), Sigmoid (3) and the POLY theory (4,
products of variables).  Before MaxPool ``ceil_mode=1``, comparisons (Greater, Equal, Cast, Where
on them) and Cast: 132 pass, 0 fail, 14 unknown, 32 skipped (load 3.7-5.2, 554 s).  Every pass, fail
and unknown figure per category is printed by the script.

Install the suite into the venv first: ``.venv/bin/pip install vnnlib-satisfactory`` (it needs
onnx, onnxruntime, onnxscript and typer; neither torch nor a different numpy).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
COLUMNS = ("pass", "fail", "unknown", "error", "skip")


def suite_command() -> str:
    here = pathlib.Path(sys.executable).parent / "vnnlib-satisfactory"
    found = here if here.exists() else shutil.which("vnnlib-satisfactory")
    if not found:
        sys.exit("vnnlib-satisfactory is not installed: .venv/bin/pip install vnnlib-satisfactory")
    return str(found)


def tally(report: dict) -> dict[str, collections.Counter]:
    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in report["results"]:
        outcome = {"suspect": "unknown"}.get(r["outcome"], r["outcome"])
        rows[r["category"]][outcome] += 1
    for s in report["skipped"]:
        rows[s["category"]]["skip"] += 1
    return rows


def table(rows: dict[str, collections.Counter]) -> str:
    width = max([len("category")] + [len(c) for c in rows])
    lines = [f"{'category':<{width}}  " + "  ".join(f"{c:>7}" for c in COLUMNS)]
    total = collections.Counter()
    for cat in sorted(rows):
        total.update(rows[cat])
        lines.append(f"{cat:<{width}}  " + "  ".join(f"{rows[cat][c]:>7}" for c in COLUMNS))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{total[c]:>7}" for c in COLUMNS))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solver", default=str(pathlib.Path(sys.executable).parent / "hamverify-vnnlib"))
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per case (the suite's --timeout)")
    ap.add_argument("--test", default=None, help="one category only (e.g. hidden, multi_io)")
    ap.add_argument("--workdir", default="/tmp/hamverify-vnnlib-conformance")
    ap.add_argument("--json", default=None, help="also write the per-category counts and failures here")
    ap.add_argument("--verbose", action="store_true", help="the suite's own per-case lines")
    args = ap.parse_args(argv)
    solver = shutil.which(args.solver) or args.solver
    solver = str(pathlib.Path(solver).resolve())
    if not os.access(solver, os.X_OK):
        sys.exit(f"solver {solver} is not an executable (install hamverify: .venv/bin/pip install -e .)")
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [suite_command(), "run", "--solver", solver, "--timeout", str(args.timeout)]
    if args.test:
        cmd += ["--test", args.test]
    cmd.append("--verbose" if args.verbose else "--no-verbose")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    lines = proc.stdout.splitlines()
    if args.verbose:
        print(proc.stdout)
    report_path = work / ".vnnlib-satisfactory" / "report.json"
    if proc.returncode != 0 or not report_path.is_file():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        sys.exit(f"vnnlib-satisfactory failed (exit {proc.returncode})")
    report = json.loads(report_path.read_text())
    rows = tally(report)
    summary = next((ln for ln in reversed(lines) if "passed," in ln), "")
    print(f"vnnlib-satisfactory, solver {solver}, --timeout {args.timeout:g}: {summary.strip()} "
          f"({wall:.0f} s wall)")
    print(table(rows))
    fails = [r for r in report["results"] if r["outcome"] == "fail"]
    unknown = [r for r in report["results"] if r["outcome"] in ("suspect", "error")]
    for r in fails:
        print(f"FAIL {r['test_id']}: expected {r['expected']}, got {r['actual']}")
    for r in unknown:
        reason = (r.get("stderr") or r.get("error") or "").strip().splitlines()
        print(f"{'unknown' if r['outcome'] == 'suspect' else 'error'} {r['test_id']}: "
              f"{reason[-1][:200] if reason else '(no reason given)'}")
    if args.json:
        out = {"summary": report["summary"], "categories": {c: dict(v) for c, v in rows.items()},
               "fail": [r["test_id"] for r in fails], "timeout": args.timeout, "wall_s": round(wall, 1)}
        pathlib.Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
