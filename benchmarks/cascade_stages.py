"""Cascade variants side by side on chosen inputs, in one run (issue 13).

  python benchmarks/cascade_stages.py --config verify_configs/mnist_small_0.3.toml \
      --indices 3,12,19,35,54,76,90,134,174 [--timeout 120] \
      [--variants attack,alpha,bab,local,milp attack,alpha,bab,milp] [--out R.json]
  ... --variants bab_share=0.3 "bab_share=0.1;lp_share=0.2"

A variant is a ``--stages`` list, or ``KEY=VALUE`` settings of ``VerifySettings`` joined by ``;``
(values parsed as Python literals, else kept as text).

For a stage or its share that only matters on hard inputs (e.g. the ``local`` search), a full
``verifier_cascade.py`` run spends most of its time on inputs every variant decides alike. This
runs the config's model and settings with each ``--stages`` variant on the given test inputs, one
process, one torch thread, the variants alternating which goes first per input so that a change of
the machine's load hits all alike; prints each input's verdict, deciding stage and time per
variant, then per variant the counts, the time per input and the seconds per stage, and the load
average before and after.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from hard_inputs import load_avg  # noqa: E402


def variant_settings(variant: str) -> dict:
    """``"attack,milp"`` -> {"stages": ...}; ``"bab_share=0.1;stages=milp"`` -> those settings."""
    import ast
    if "=" not in variant:
        return {"stages": variant}
    out = {}
    for item in variant.split(";"):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--indices", required=True, help="comma-separated test indices")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per input (default: the config's)")
    ap.add_argument("--variants", nargs="+", default=["attack,alpha,bab,local,milp", "attack,alpha,bab,milp"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="also write every record and the summaries as JSON")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from hamverify.config import load_toml, parse_eps
    from hamverify.data import load_dataset
    from hamverify.models import INPUT_SHAPE, load_checkpoint
    from hamverify.verify import Verifier, VerifySettings

    cfg = load_toml(args.config)
    model, meta = load_checkpoint(REPO_ROOT / cfg["model"])
    dataset = cfg.get("dataset", meta["dataset"])
    x, y = load_dataset(dataset, cfg.get("split", "test"), args.data_dir)
    timeout = float(args.timeout if args.timeout is not None else cfg.get("timeout", 120))
    verifiers = {}
    for variant in args.variants:
        base = {"tightening": cfg.get("tightening", "lp"), "backend": cfg.get("backend", "highs")}
        settings = VerifySettings(eps=parse_eps(cfg["eps"]), timeout=timeout,
                                  **{**base, **variant_settings(variant)})  # a variant may override the config
        verifiers[variant] = Verifier(model, INPUT_SHAPE[dataset], settings)
    indices = [int(i) for i in args.indices.split(",")]
    print(f"{args.config}: {len(indices)} inputs, {timeout:g} s each, variants {args.variants}; "
          f"load average {load_avg()}", flush=True)
    records: dict[str, list] = {s: [] for s in args.variants}
    for n, i in enumerate(indices):
        xi = np.transpose(np.asarray(x[i], dtype=np.float64) / 255.0, (2, 0, 1))
        order = args.variants if n % 2 == 0 else list(reversed(args.variants))
        line = []
        for stages in order:
            t = time.monotonic()
            rec, _ = verifiers[stages].verify(xi, int(y[i]), i)
            records[stages].append(dataclasses.asdict(rec))
            line.append(f"[{stages}] {rec.status}/{rec.decided_by} {time.monotonic() - t:.1f}s")
        print(f"  #{i}: " + "  ".join(line), flush=True)
    summaries = {}
    for stages, recs in records.items():
        t = np.array([r["time_total"] for r in recs])
        counts = {s: sum(r["status"] == s for r in recs) for s in ("verified", "falsified", "misclassified",
                                                                    "timeout", "unknown", "error")}
        per_stage: dict = {}
        for r in recs:
            for k, v in (r.get("stage_times") or {}).items():
                per_stage[k] = per_stage.get(k, 0.0) + v
        by = {}
        for r in recs:
            if r["status"] in ("verified", "falsified"):
                by[r["decided_by"]] = by.get(r["decided_by"], 0) + 1
        summaries[stages] = {"counts": counts, "decided_by": by, "time_mean": float(t.mean()),
                             "time_median": float(np.median(t)), "stage_seconds": per_stage}
        print(f"{stages}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
              + f"; decided by {by}; mean {t.mean():.1f} s, median {np.median(t):.1f} s; stage seconds "
              + ", ".join(f"{k} {v:.0f}" for k, v in per_stage.items()))
    print(f"load average after: {load_avg()}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"config": args.config, "indices": indices, "timeout": timeout,
                                                      "records": records, "summaries": summaries}, indent=1,
                                                     default=float))


if __name__ == "__main__":
    main()
