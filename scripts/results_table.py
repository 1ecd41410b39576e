"""Regenerate docs/RESULTS.md from the committed verification summaries.

    python scripts/results_table.py

Reads results/summaries/*.json and results/stats/*.json (`hamverify stats --model models/M.pt --count 200
--json > results/stats/M.json`; summaries are written by
`hamverify summary RESULTS.jsonl --json > results/summaries/NAME.json`, plus the keys `model`,
`slice` and `command` added by scripts/summarize_run.py) and writes the table of docs/RESULTS.md.
"""
from __future__ import annotations

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAPER_ROWS = [  # Table 2 of the paper (CIFAR-10, full official test set, eps 8/255)
    ("RS loss (Xiao et al. 2019), paper's Table 2", "8/255", "official test set", "10000", "20.27", "26.78", "40.45"),
    ("Hamming regularization, paper's Table 2", "8/255", "official test set", "10000", "21.04", "25.56", "36.66"),
    # Xiao et al.'s MNIST small-CNN figures, as the results issue quotes them (verified accuracy only).
    ("RS loss (Xiao et al. 2019), MNIST", "0.1", "official test set", "10000", "94.33", "-", "-"),
    ("RS loss (Xiao et al. 2019), MNIST", "0.3", "official test set", "10000", "80.68", "-", "-"),
]


def training_time(model: str) -> str:
    """Sum of the epoch times in the run's log and the device, as the model card records them."""
    card = ROOT / "models" / f"{model}.md"
    text = card.read_text() if card.exists() else ""
    seconds = re.search(r"sum of epoch times in the log: (\d+) s", text)
    device = re.search(r"device of the last invocation: ([^\n]+)", text)
    if not (seconds and device):  # a silent "-" would hide a card that scripts/ship_model.py no longer writes
        raise SystemExit(f"error: {card} does not give the training time and device (write it with scripts/ship_model.py)")
    where = device.group(1).strip()
    return f"{int(seconds.group(1)) / 60:.0f} min, last run on {'CPU' if where == 'cpu' else where.replace('NVIDIA ', '')}"


def stats_unstable(model: str) -> str | None:
    """Mean unstable ReLUs per layer under symbolic bounds, from `hamverify stats` (results/stats/MODEL.json)."""
    path = ROOT / "results" / "stats" / f"{model}.json"
    if not path.exists():
        return None
    stats = json.loads(path.read_text())
    layers = stats["models"][0]["methods"]["symbolic"]["per_layer"]
    return " / ".join(f"{layer['unstable']:.1f}" for layer in layers)


def fmt_pct(v):
    return f"{100 * v:.2f}"


def main():
    rows = []
    for path in sorted((ROOT / "results" / "summaries").glob("*.json")):
        s = json.loads(path.read_text())
        unstable = stats_unstable(s["model"]) or "-"
        rows.append((s["model"], s["eps_text"], s["slice"], str(s["n"]), fmt_pct(s["verified_accuracy"]),
                     fmt_pct(s["pgd_accuracy"]), fmt_pct(s["clean_accuracy"]), str(s["timeout"]), str(s["unknown"]),
                     f"{s['time_mean']:.2f} / {s['time_median']:.2f}", unstable, training_time(s["model"]),
                     f"`{s['command']}`"))
    head = ["model", "eps", "inputs", "N", "verified %", "PGD %", "clean %", "timeouts", "unknown",
            "time mean / median (s)", "unstable ReLUs / layer (stats)", "training", "command"]
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
