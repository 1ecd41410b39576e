"""Regenerate docs/RESULTS.md from the committed verification summaries.

    python scripts/results_table.py

Reads results/summaries/*.json (each written by
`hamverify summary RESULTS.jsonl --json > results/summaries/NAME.json`, plus the keys `model`,
`slice` and `command` added by scripts/summarize_run.py) and writes the table of docs/RESULTS.md.
"""
from __future__ import annotations

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAPER_ROWS = [  # Table 2 of the paper (CIFAR-10, full official test set, eps 8/255)
    ("RS loss (Xiao et al. 2019), paper's Table 2", "8/255", "official test set", "10000", "20.27", "26.78", "40.45"),
    ("Hamming regularization, paper's Table 2", "8/255", "official test set", "10000", "21.04", "25.56", "36.66"),
]


def fmt_pct(v):
    return f"{100 * v:.2f}"


def main():
    rows = []
    for path in sorted((ROOT / "results" / "summaries").glob("*.json")):
        s = json.loads(path.read_text())
        unstable = " / ".join(f"{u:.1f}" for u in s["mean_unstable_per_layer"]) if s.get("mean_unstable_per_layer") else "-"
        rows.append((s["model"], s["eps_text"], s["slice"], str(s["n"]), fmt_pct(s["verified_accuracy"]),
                     fmt_pct(s["pgd_accuracy"]), fmt_pct(s["clean_accuracy"]), str(s["timeout"]), str(s["unknown"]),
                     f"{s['time_mean']:.2f} / {s['time_median']:.2f}", unstable, f"`{s['command']}`"))
    head = ["model", "eps", "inputs", "N", "verified %", "PGD %", "clean %", "timeouts", "unknown",
            "time mean / median (s)", "unstable ReLUs / layer", "command"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["| " + " | ".join([*r] + [""] * (len(head) - len(r))) + " |" for r in PAPER_ROWS]
    doc = ROOT / "docs" / "RESULTS.md"
    text = doc.read_text()
    start, end = text.index("<!-- table -->"), text.index("<!-- /table -->")
    doc.write_text(text[:start] + "<!-- table -->\n" + "\n".join(lines) + "\n" + text[end:])
    print(f"wrote {len(rows)} rows to {doc}")


if __name__ == "__main__":
    main()
