"""Regenerate docs/ROBUSTNESS.md: the paper's Table 1 for every shipped model (models/*.pt) and its
Figure 2 robustness curves (PNGs under docs/figures/).

Every number in the document comes from the `hamverify` commands this script runs (and prints in
the document beside each row); nothing is typed in but the paper's own figures, quoted as such.

    python scripts/robustness_tables.py                  # Table 1 and curves on 100 inputs
    python scripts/robustness_tables.py --table-count 500 --curve-count 1000

Table 1 results are kept per model and attack under results/robustness/table1 (`hamverify evaluate
--results-dir`), so a rerun with the same settings reuses them and an interrupted run resumes;
the curves' JSON goes to results/robustness/.  One thread (OMP_NUM_THREADS=1) unless set.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ROBUSTNESS.md"
# Tables 3 and 4 (the ablations) are generated into docs/ABLATIONS.md by scripts/ablation_tables.py
# from their training runs; this page embeds that file's tables and commands.
ABLATIONS = ROOT / "docs" / "ABLATIONS.md"
FIGURES = ROOT / "docs" / "figures"
RESULTS = pathlib.Path("results") / "robustness"

# The paper's Table 1 (CIFAR-10, PreActResNet18; the adversarially trained rows from Laidlaw et al.
# 2021): clean, l_inf, l_2, Spatial, ReColor, JPEG, NPTM (%), training minutes on one RTX 1080.
PAPER_TABLE1 = [("AT l_inf", 86.8, 49.0, 19.2, 4.8, 54.5, 3.2, 0.0, 1620),
                ("AT l_2", 85.0, 39.5, 47.8, 7.8, 53.5, 25.5, 0.3, 1537),
                ("AT Spatial", 86.2, 0.1, 0.2, 53.9, 5.1, 0.0, 0.0, 1607),
                ("AT ReColor", 93.4, 8.5, 3.9, 0.0, 65.0, 1.4, 0.0, 3053),
                ("AT NPTM", 71.6, 28.7, 33.3, 64.5, 67.5, 30.9, 9.8, 1481),
                ("Ours (Hamming)", 72.1, 36.8, 43.4, 28.4, 63.1, 34.2, 9.1, 252)]
# Figure 2's panels: (data set, norm, radius grid of `hamverify curves --eps-grid`).
CURVES = [("cifar10", "linf", "0:32/255:9"), ("cifar10", "l2", "0:4:9"),
          ("mnist", "linf", "0:0.4:9"), ("mnist", "l2", "0:4:9")]
DATASET_OF_PREFIX = (("fashion_mnist", "fashion-mnist"), ("mnist", "mnist"), ("cifar10", "cifar10"))


def dataset_of(model: pathlib.Path) -> str:
    for prefix, dataset in DATASET_OF_PREFIX:
        if model.name.startswith(prefix):
            return dataset
    from hamverify.models import read_checkpoint
    return read_checkpoint(model)["dataset"]


def run(cmd: list[str], log) -> str:
    """Run one hamverify command (its progress on our stderr); its stdout."""
    log(f"$ {shlex.join(cmd)}")
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {shlex.join(cmd)}")
    log(f"  done in {time.time() - t0:.0f} s")
    return proc.stdout


def pct(v) -> str:
    return f"{100 * v:.1f}"


def radius(v: float) -> str:
    """8/255 for a multiple of 1/255 below 1, else the number."""
    k = v * 255
    return f"{round(k)}/255" if 0 < v < 1 and abs(k - round(k)) < 1e-6 else f"{v:g}"


def table1_section(groups: dict, results: dict, commands: dict, count: int) -> list[str]:
    cols = ["autoattack-linf", "autoattack-l2", "stadv", "recolor", "jpeg", "ppgd", "lpa"]
    out = ["## Table 1: robust accuracy against AutoAttack and the perceptual attacks", "",
           f"Robust accuracy (%) on the first {count} test images of each data set: an input counts when the "
           "model is correct on it and on the attack's point, and an attack's point counts only after it was "
           "checked to lie in the attack's threat model's set (`rejected` below: points that did not).", ""]
    for dataset, models in groups.items():
        res = results[dataset]
        first = res["models"][0]["results"]
        head = {"autoattack-linf": f"AA l_inf {radius(first['autoattack-linf']['eps'])}",
                "autoattack-l2": f"AA l_2 {radius(first['autoattack-l2']['eps'])}", "stadv": "Spatial (StAdv)",
                "recolor": "ReColor", "jpeg": "JPEG", "ppgd": "PPGD (self)", "lpa": "LPA (self)"}
        out += [f"### {dataset}", "",
                "| model | clean | " + " | ".join(head[c] for c in cols) + " |",
                "|---|---:|" + "---:|" * len(cols)]
        for m in res["models"]:
            out.append(f"| `{m['name']}` | {pct(m['clean_accuracy'])} | "
                       + " | ".join(pct(m["results"][c]["robust_accuracy"]) for c in cols) + " |")
        rejected = sum(r["rejected_points"] for m in res["models"] for r in m["results"].values())
        seconds = sum(r["wall_time"] for m in res["models"] for r in m["results"].values())
        one = shlex.join(["hamverify", "evaluate", "--model", "MODEL", "--attack", "table1", "--count", str(count)])
        out += ["", f"Command of all {len(models)} rows (side by side; {rejected} attack points rejected by the "
                    f"membership check; {seconds / 60:.1f} min of attack time as measured, reused results "
                    "included):", "", f"    {commands[dataset]}", "",
                f"One row alone: `{one}` with `MODEL` = `models/<name>.pt` (the same inputs and seed: the same "
                "numbers).", ""]
    lpips = [m["results"][c]["robust_accuracy"] for res in results.values() for m in res["models"]
             for c in ("ppgd", "lpa")]
    out += [f"PPGD and LPA at the self-bound LPIPS bound 0.5 leave between {pct(min(lpips))} and {pct(max(lpips))} % "
            "of a model's inputs robust. 0.5 is Laidlaw et al.'s bound for an AlexNet LPIPS; in a self-bound distance (each model's "
            "own normalized activations) the same number is a different, model-dependent threat model, so this "
            "column says little beside the paper's NPTM column. `--bound ppgd=0.1 --bound lpa=0.1` gives a "
            "tighter ball, `--lpips-model CKPT` another network's features.", ""]
    impl = next(iter(results.values()))["models"][0]["results"]
    out += ["Attacks and implementations (from the commands' JSON):", ""]
    for c in cols:
        r = impl[c]
        lp = f"; LPIPS network: {r['lpips_network']}" if r.get("lpips_network") else ""
        out.append(f"* **{c}**: {r['description']}{lp}.")
    out += ["", "The l_p bounds are the paper's on CIFAR-10 (l_inf 8/255, l_2 1.0); the paper has no Table 1 for "
            "MNIST or Fashion-MNIST, so there `hamverify evaluate` uses the field's usual bounds (MNIST l_inf 0.3, "
            "l_2 2.0; Fashion-MNIST l_inf 0.1, l_2 1.5). The perceptual bounds are the attacks' papers' defaults "
            "in their own spaces (StAdv flow 0.05, ReColor offsets 0.06, JPEG eps 0.25, LPIPS 0.5).", ""]
    return out


def paper_section() -> list[str]:
    out = ["### The paper's Table 1 (CIFAR-10, PreActResNet18; for comparison)", "",
           "| defense | clean | l_inf 8/255 | l_2 1.0 | Spatial | ReColor | JPEG | NPTM | minutes |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in PAPER_TABLE1:
        out.append(f"| {row[0]} | " + " | ".join(f"{v}" for v in row[1:]) + " |")
    out += ["", "Quoted from the paper (the AT rows are Laidlaw et al. 2021's). They are not comparable number for "
            "number with the rows above: the paper's networks are PreActResNet18s (the shipped ones are small CNNs "
            "trained for verification, most at much lower clean accuracy), its AutoAttack is the reference "
            "implementation (here torchattacks 3.5.1 with its default 10 APGD/FAB iterations), its perceptual "
            "attacks are Laidlaw et al.'s code (here hamverify's own, written from the papers), and its NPTM "
            "column uses an AlexNet LPIPS trained on CIFAR-10, where PPGD and LPA here use each attacked model's "
            "own features (self-bound: a more robust model's features move less, so its ball allows larger "
            "pixel changes).", ""]
    return out


def curves_section(figures: list, count: int) -> list[str]:
    out = ["## Figure 2: robustness curves against PGD-20x10", "",
           f"l_inf and l_2 PGD (20 steps, 10 random restarts) robust accuracy against the bound, first {count} test "
           "images, every shipped model of the data set; an input broken at a radius counts as broken at every "
           "larger one. Fashion-MNIST is not in the paper's Figure 2 and is left out.", ""]
    for dataset, norm, png, cmd, table in figures:
        out += [f"### {dataset}, {'l_inf' if norm == 'linf' else 'l_2'}", "",
                f"![{dataset} {norm} robustness curves](figures/{png.name})", "", "Command:", "", f"    {cmd}", "",
                "```", table.rstrip(), "```", ""]
    return out


def ablations_section() -> list[str]:
    """docs/ABLATIONS.md from its first table on, headings one level down (its intro is linked)."""
    if not ABLATIONS.is_file():
        return []
    text = ABLATIONS.read_text()
    start = text.find("\n## Table 3")
    if start < 0:
        return []
    body = ["#" + line if line.startswith("## ") else line for line in text[start + 1:].splitlines()]
    return ["## Tables 3 and 4: the ablations", "",
            "Embedded from [ABLATIONS.md](ABLATIONS.md) (`python scripts/ablation_tables.py` after "
            "`bash benchmarks/ablation15.sh`), whose introduction says how these compressed runs differ "
            "from the paper's.", ""] + body + [""]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table-count", type=int, default=100, help="inputs per model for Table 1 (100)")
    ap.add_argument("--curve-count", type=int, default=100, help="inputs per model for the curves (100)")
    ap.add_argument("--models", default="models/*.pt", help="glob of the models (models/*.pt)")
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument("--skip-curves", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    models = sorted(ROOT.glob(args.models))
    groups: dict[str, list] = {}
    for m in models:
        groups.setdefault(dataset_of(m), []).append(m.relative_to(ROOT))
    hv = ["hamverify"]
    t0 = time.time()
    results, commands = {}, {}
    if not args.skip_table:
        for dataset, ms in groups.items():
            cmd = hv + ["evaluate"] + [a for m in ms for a in ("--model", str(m))] + [
                "--attack", "table1", "--count", str(args.table_count), "--results-dir", str(RESULTS / "table1")]
            results[dataset] = json.loads(run(cmd + ["--json"], log))
            commands[dataset] = shlex.join(cmd)
    figures = []
    if not args.skip_curves:
        FIGURES.mkdir(parents=True, exist_ok=True)
        for dataset, norm, grid in CURVES:
            ms = groups.get(dataset, [])
            if not ms:
                continue
            png = FIGURES / f"{dataset}_{norm}_pgd.png"
            cmd = hv + ["curves"] + [a for m in ms for a in ("--model", str(m))] + [
                "--norm", norm, "--eps-grid", grid, "--count", str(args.curve_count), "--quiet",
                "--out", str(png.relative_to(ROOT))]
            cached = ROOT / RESULTS / f"{png.stem}.txt"  # the command's table, reused when the command is the same
            if png.is_file() and cached.is_file() and cached.read_text().startswith(shlex.join(cmd) + "\n"):
                log(f"reusing {cached.relative_to(ROOT)} and {png.relative_to(ROOT)} (same command)")
                table = cached.read_text().split("\n", 1)[1]
            else:
                table = run(cmd, log)
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(shlex.join(cmd) + "\n" + table)
            figures.append((dataset, norm, png, shlex.join(cmd), table))
    if args.skip_table or args.skip_curves:
        log("a section was skipped: docs/ROBUSTNESS.md left as it is")
        return
    import platform
    lines = ["# Robustness: the paper's Tables 1, 3 and 4 and Figure 2 for the shipped models", "",
             "Generated by `python scripts/robustness_tables.py "
             f"--table-count {args.table_count} --curve-count {args.curve_count}` "
             f"({time.strftime('%Y-%m-%d')}, {platform.machine()} CPU, one thread per command; the attack times below "
             "are wall times of the run that computed each result). Rerun it to regenerate every number and "
             "figure; per-attack results under results/robustness/ are reused when their settings match.", "",
             "The same measurements for any checkpoint:", "",
             "    hamverify evaluate --model models/cifar10_small_hamming_8_255.pt --attack table1 --count 500",
             "    hamverify curves --model A.pt --model B.pt --norm l2 --eps-grid 0:4:9 --out curves.png", ""]
    lines += table1_section(groups, results, commands, args.table_count)
    lines += paper_section()
    lines += curves_section(figures, args.curve_count)
    lines += ablations_section()
    DOC.write_text("\n".join(lines))
    log(f"wrote {DOC.relative_to(ROOT)} and {len(figures)} figures in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
