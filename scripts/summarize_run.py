"""Write results/summaries/NAME.json from a verification results file, for docs/RESULTS.md.

    python scripts/summarize_run.py RESULTS.jsonl NAME --model MODEL --slice "first 100 exact" \
        --eps-text 8/255 --command "hamverify verify ..."
"""
from __future__ import annotations

import argparse
import json
import pathlib

from hamverify.records import dedupe_latest, read_records
from hamverify.report import summarize

OUT = pathlib.Path(__file__).resolve().parent.parent / "results" / "summaries"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("name")
    ap.add_argument("--model", required=True)
    ap.add_argument("--slice", required=True)
    ap.add_argument("--eps-text", required=True)
    ap.add_argument("--command", required=True)
    a = ap.parse_args()
    records, _ = read_records(a.results)
    s = summarize(sorted(dedupe_latest(records).values(), key=lambda r: r.index))
    s.update({"model": a.model, "slice": a.slice, "eps_text": a.eps_text, "command": a.command})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(s, indent=2) + "\n")
    print(f"wrote {OUT / a.name}.json")


if __name__ == "__main__":
    main()
