#!/usr/bin/env python3
"""docs/ABLATIONS.md's tables (the paper's Tables 3 and 4) from the runs of benchmarks/ablation15.sh.

Reads, for every run NAME of that script, runs/abl15/NAME.evaluate.json (hamverify evaluate --json:
clean and PGD-20 x 10 accuracy), runs/abl15/NAME.stats.json (hamverify stats --json, schema
hamverify-stats-v1: unstable ReLUs) and runs/abl15/NAME/log.jsonl (selected epoch, training time),
and the run's flags from the script itself, so every row carries the command that produced it.

    python scripts/ablation_tables.py                 # print the generated blocks
    python scripts/ablation_tables.py --write docs/ABLATIONS.md   # replace them in place
    python scripts/ablation_tables.py --check docs/ABLATIONS.md   # exit 1 if the file is stale

A generated block sits between ``<!-- ablation_tables:KEY -->`` and ``<!-- /ablation_tables:KEY -->``;
nothing outside those markers is touched.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import shlex
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ablation15.sh"
RUNS = ROOT / "runs" / "abl15"

# The paper's figures (../shared/paper, Tables 3 and 4: CIFAR-10, l_inf PGD-20 x 10 at 8/255, PreActResNet18).
# {run: (our row, the paper's row, its robust %, its clean %)}
PAPER_T3 = {"hv_both": ("both terms (`hv-gs8-gh3000`)", "Hamming Regularization", 40.54, 72.1),
            "hv_stability-only": ("stability term only (`hv-stability-only`)", "stability regularizer only",
                                  20.11, 34.74),
            "hv_hamming-only": ("Hamming term only (`hv-hamming-only`)", "Hamming regularizer only", 24.87, 90.24),
            "hv_none": ("neither term (`--reg none`, ours: a reference)", "–", "–", "–")}
PAPER_T3_OTHERS = [("PGD (Madry et al. 2017)", 45.8, 87.3), ("FGSM (Madry et al. 2017)", 0.0, 90.3)]
PAPER_T4 = {"hv_both": ("sparse (`--reg hamming`)", "Sparse", 40.54, 69.95),
            "hv_dense": ("dense, Eq. 14 (`--reg hamming-dense`)", "Dense", 35.04, 64.08)}


def script_runs(path: pathlib.Path = SCRIPT) -> tuple[list[str], dict[str, str]]:
    """(the common train-small flags, {run name: its own flags}) as benchmarks/ablation15.sh gives them,
    its default epochs filled in."""
    text = path.read_text()
    epochs = re.search(r"^EPOCHS=\$\{EPOCHS:-(\d+)\}$", text, re.M).group(1)
    common = re.search(r"^COMMON=\((.*)\)$", text, re.M).group(1).replace('"$EPOCHS"', epochs)
    args = dict(re.findall(r'^\s*\[([\w.-]+)\]="([^"]*)"$', text, re.M))
    return shlex.split(common), args


def _read_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _find(obj, key):
    """The first value of ``key`` anywhere in a JSON tree (evaluate's output may nest per model/attack)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = _find(v, key)
            if found is not None:
                return found
    return None


def run_row(name: str, runs: pathlib.Path = RUNS) -> dict:
    """What was measured for one run; missing parts are None."""
    row = {"name": name, "clean": None, "pgd": None, "count": None, "unstable": {}, "proven": {},
           "epochs": None, "selected_epoch": None, "minutes": None, "epoch_s": None, "rollbacks": None}
    ev = _read_json(runs / f"{name}.evaluate.json")
    if ev is not None:
        row["clean"], row["pgd"], row["count"] = (_find(ev, "clean_accuracy"), _find(ev, "pgd_accuracy"),
                                                  _find(ev, "count"))
        row["pgd_steps"], row["pgd_restarts"] = _find(ev, "pgd_steps"), _find(ev, "pgd_restarts")
    st = _read_json(runs / f"{name}.stats.json")
    if st is not None:
        model = st["models"][0]
        row["stats_count"] = len(st.get("indices", []))
        for method, m in model["methods"].items():
            row["unstable"][method] = [layer["unstable"] for layer in m["per_layer"]]
            row["proven"][method] = m["bounds_proven_share"]
    log = runs / name / "log.jsonl"
    if log.exists():
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        epochs = [r for r in rows if isinstance(r.get("epoch"), int)]
        final = next((r for r in rows if r.get("epoch") == "final"), None)
        if epochs:
            row["epoch_s"] = sum(r["epoch_time"] for r in epochs) / len(epochs)
        if final:
            row["selected_epoch"], row["rollbacks"] = final["selected_epoch"], final["rollbacks"]
            row["minutes"] = final["train_seconds"] / 60
    cfg = _read_json(runs / name / "config.json")
    if cfg:
        row["epochs"] = cfg["epochs"]
    return row


def train_command(name: str, common: list[str], args: dict[str, str], epochs: int | None) -> str:
    flags = list(common)
    if epochs is not None and "--epochs" in flags:  # the epochs the run really had
        flags[flags.index("--epochs") + 1] = str(epochs)
    return f"hamverify train-small {' '.join(flags)} {args[name]} --out runs/abl15/{name}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _unstable(row, method) -> str:
    u = row["unstable"].get(method)
    return "–" if u is None else f"{sum(u):.1f} ({' / '.join(f'{x:.1f}' for x in u)})"


def _trained(row) -> str:
    if row["selected_epoch"] is None:
        return "not finished" if row["epochs"] else "not run yet"
    extra = f", {row['rollbacks']} rollback(s)" if row["rollbacks"] else ""
    return f"{row['selected_epoch']} of {row['epochs']}{extra}, {row['minutes']:.0f} min"


HEADER = ("| row (ours) | PGD-20×10 (%) | clean (%) | the paper's row | paper: robust (%) | paper: clean (%) | "
          "unstable ReLUs per input, IA: total (per layer) | … symbolic | proven by bounds alone, symbolic (%) | "
          "epoch kept, training time |\n|---|---|---|---|---|---|---|---|---|---|")


def _line(label, row, paper_label, paper_pgd, paper_clean) -> str:
    proven = row["proven"].get("symbolic")
    return (f"| {label} | {_pct(row['pgd'])} | {_pct(row['clean'])} | {paper_label} | {paper_pgd} | {paper_clean} | "
            f"{_unstable(row, 'ia')} | {_unstable(row, 'symbolic')} | {_pct(proven)} | {_trained(row)} |")


def blocks(runs: pathlib.Path = RUNS, script: pathlib.Path = SCRIPT) -> dict[str, str]:
    common, args = script_runs(script)
    rows = {name: run_row(name, runs) for name in args}
    t3 = [HEADER] + [_line(label, rows[n], *paper) for n, (label, *paper) in PAPER_T3.items()]
    t3 += [f"| not run here | – | – | {label} | {p} | {c} | – | – | – | – |" for label, p, c in PAPER_T3_OTHERS]
    t4 = [HEADER] + [_line(label, rows[n], *paper) for n, (label, *paper) in PAPER_T4.items()]
    cmds = []
    for n in args:
        r = rows[n]
        cmds.append(f"* `{n}`: `{train_command(n, common, args, r['epochs'])}`")
    measured = [r for r in rows.values() if r["count"]]
    counts = sorted({r["count"] for r in measured})
    stats_counts = sorted({r.get("stats_count") for r in rows.values() if r.get("stats_count")})
    pgd = sorted({f"PGD-{r['pgd_steps']}×{r['pgd_restarts']}" for r in measured})
    times = ", ".join(f"{r['name']} {r['epoch_s']:.0f} s" for r in rows.values() if r["epoch_s"])
    notes = [f"Measured on the first {', '.join(map(str, counts)) or '–'} CIFAR-10 test images "
             f"(evaluate, {', '.join(pgd) or '–'}) and the first {', '.join(map(str, stats_counts)) or '–'} "
             f"(stats), eps 8/255; mean epoch time {times or '–'}."]
    both = rows.get("hv_both")
    if both and both["pgd"] is not None:
        for n, what in (("hv_stability-only", "stability term only"), ("hv_hamming-only", "Hamming term only"),
                        ("hv_dense", "dense regularizer")):
            r = rows.get(n)
            if r and r["pgd"] is not None:
                notes.append(f"{what} against both terms (sparse): PGD {100 * (r['pgd'] - both['pgd']):+.2f} "
                             f"points, clean {100 * (r['clean'] - both['clean']):+.2f} points"
                             + (f", unstable ReLUs (symbolic) {sum(r['unstable']['symbolic']):.1f} against "
                                f"{sum(both['unstable']['symbolic']):.1f}"
                                if "symbolic" in r["unstable"] and "symbolic" in both["unstable"] else "") + ".")
    return {"table3": "\n".join(t3), "table4": "\n".join(t4), "commands": "\n".join(cmds),
            "notes": "\n".join(f"* {n}" for n in notes)}


def render_into(text: str, generated: dict[str, str]) -> str:
    for key, body in generated.items():
        pattern = re.compile(rf"(<!-- ablation_tables:{key} -->\n).*?(<!-- /ablation_tables:{key} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"marker <!-- ablation_tables:{key} --> not found")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=pathlib.Path, default=RUNS)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write", type=pathlib.Path, help="replace the generated blocks of this file")
    group.add_argument("--check", type=pathlib.Path, help="exit 1 when this file's blocks are stale")
    a = ap.parse_args(argv)
    generated = blocks(a.runs)
    if a.write or a.check:
        path = a.write or a.check
        old = path.read_text()
        new = render_into(old, generated)
        if a.check:
            if new != old:
                print(f"{path}: generated blocks are stale; run scripts/ablation_tables.py --write {path}")
                return 1
            return 0
        path.write_text(new)
        return 0
    for key, body in generated.items():
        print(f"<!-- {key} -->\n{body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
