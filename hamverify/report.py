"""Summaries recomputed from verification records, as a table or JSON."""
from __future__ import annotations

import numpy as np

from .records import STATUSES, VerificationRecord

# The cascade's stages, in their order (hamverify.cascade): which one decided each input.
DECIDING_STAGES = ("clean", "bounds", "pgd", "attack", "lp", "alpha", "bab", "local", "milp")


def _by_stage(records: list[VerificationRecord], status: str) -> dict[str, int]:
    """{stage: inputs of ``status`` that stage decided}, stages in cascade order, zeros left out."""
    counts = {stage: sum(r.status == status and r.decided_by == stage for r in records) for stage in DECIDING_STAGES}
    return {stage: k for stage, k in counts.items() if k}


def _stage_seconds(records: list[VerificationRecord]) -> dict[str, float]:
    """Seconds spent in each stage over all records (from each record's ``stage_times``)."""
    total: dict[str, float] = {}
    for r in records:
        for stage, sec in (getattr(r, "stage_times", None) or {}).items():
            total[stage] = total.get(stage, 0.0) + float(sec)
    return total


def summarize(records: list[VerificationRecord]) -> dict:
    n = len(records)
    count = {s: sum(r.status == s for r in records) for s in STATUSES}
    times = np.array([r.time_total for r in records]) if records else np.zeros(0)
    unstable = [r.unstable_per_layer for r in records if r.unstable_per_layer]
    frac = (lambda k: k / n) if n else (lambda k: 0.0)
    return {
        "n": n,
        "clean_accuracy": frac(sum(r.status != "misclassified" and r.predicted == r.label for r in records)),
        "pgd_accuracy": frac(sum(bool(r.pgd_robust) for r in records)),
        "verified_accuracy": frac(count["verified"]),
        **count,
        "falsified_by_pgd": sum(r.status == "falsified" and r.decided_by == "pgd" for r in records),
        "falsified_by_milp": sum(r.status == "falsified" and r.decided_by == "milp" for r in records),
        "verified_by_bounds": sum(r.status == "verified" and r.decided_by == "bounds" for r in records),
        "verified_by_milp": sum(r.status == "verified" and r.decided_by == "milp" for r in records),
        "verified_by": _by_stage(records, "verified"),
        "falsified_by": _by_stage(records, "falsified"),
        "stage_seconds": _stage_seconds(records),
        "time_mean": float(times.mean()) if n else 0.0,
        "time_median": float(np.median(times)) if n else 0.0,
        "time_p95": float(np.percentile(times, 95)) if n else 0.0,
        "time_max": float(times.max()) if n else 0.0,
        "time_sum": float(times.sum()),
        "mean_unstable_per_layer": [float(v) for v in np.mean(unstable, axis=0)] if unstable else None,
        "eps": records[0].eps if records else None,
        "tightening": records[0].tightening if records else None,
        "backend": records[0].backend if records else None,
    }


def format_summary(s: dict, wall_time: float | None = None) -> str:
    pct = lambda v: f"{100 * v:6.2f} %"  # noqa: E731
    rows = [("inputs", str(s["n"])),
            ("clean accuracy", pct(s["clean_accuracy"])),
            ("PGD-robust accuracy", pct(s["pgd_accuracy"])),
            ("verified accuracy", pct(s["verified_accuracy"])),
            ("  verified by", _stage_list(s.get("verified_by"), {"bounds": s["verified_by_bounds"],
                                                                  "milp": s["verified_by_milp"]})),
            ("falsified (exact)", f"{s['falsified']}  (by " + _stage_list(
                s.get("falsified_by"), {"pgd": s["falsified_by_pgd"], "milp": s["falsified_by_milp"]}) + ")"),
            ("misclassified", str(s["misclassified"])),
            ("timeouts", str(s["timeout"])),
            ("unknown", str(s["unknown"])),
            ("errors", str(s["error"])),
            ("time per input mean / median", f"{s['time_mean']:.2f} s / {s['time_median']:.2f} s"),
            ("time per input p95 / max", f"{s['time_p95']:.2f} s / {s['time_max']:.2f} s")]
    if s.get("stage_seconds") and s["n"]:
        rows.append(("time per stage (mean per input)",
                     ", ".join(f"{k} {v / s['n']:.2f} s" for k, v in s["stage_seconds"].items())))
    if s.get("mean_unstable_per_layer"):
        rows.append(("unstable ReLUs per layer (mean)", " / ".join(f"{v:.1f}" for v in s["mean_unstable_per_layer"])))
    if wall_time is not None:
        rows.append(("wall time (this run)", f"{wall_time:.1f} s"))
    width = max(len(k) for k, _ in rows)
    head = f"eps {s['eps']:.6g}, tightening {s['tightening']}, backend {s['backend']}" if s["n"] else "no records"
    return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _stage_list(by: dict | None, fallback: dict) -> str:
    """'bounds 96, bab 2, milp 1' (a summary written before the per-stage counts: its two columns)."""
    counts = by if by is not None else {k: v for k, v in fallback.items() if v}
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
