"""Pack training run folders into a few tar files under a size cap (to bring runs back from a device).

  python benchmarks/pack_runs.py OUT_DIR RUN_DIR [RUN_DIR ...] [--max-file-mb 15] [--max-files 7] [--max-total-mb 60]

A finished run (model.pt present) travels as model.pt + log + config; an unfinished one as last.pt (to
resume) + best.pt (the best-val epoch so far) + log + config. Runs are taken in the order given; one
that no longer fits is listed as left out.
"""
from __future__ import annotations

import argparse
import pathlib
import tarfile

SMALL = ("log.jsonl", "config.json", "stdout.txt", "command.txt")


def run_files(run: pathlib.Path) -> list[pathlib.Path]:
    weights = ("model.pt",) if (run / "model.pt").exists() else ("last.pt", "best.pt")
    return [run / name for name in SMALL + weights if (run / name).exists()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--max-file-mb", type=float, default=15)
    ap.add_argument("--max-files", type=int, default=7)
    ap.add_argument("--max-total-mb", type=float, default=60)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cap, total_cap = args.max_file_mb * 2**20, args.max_total_mb * 2**20
    groups: list[list[pathlib.Path]] = [[]]
    sizes, total = [0], 0
    for run in map(pathlib.Path, args.runs):
        files = run_files(run)
        size = sum(f.stat().st_size for f in files) + 2048 * len(files)
        if not files or size > cap or total + size > total_cap:
            print(f"left out: {run} ({size / 2**20:.1f} MiB)")
            continue
        if sizes[-1] + size > cap:
            if len(groups) == args.max_files:
                print(f"left out: {run} (no file left)")
                continue
            groups.append([])
            sizes.append(0)
        groups[-1].extend(files)
        sizes[-1] += size
        total += size
    for i, files in enumerate(groups):
        with tarfile.open(out / f"runs{i}.tar", "w") as tar:
            for f in files:
                tar.add(f, arcname=f"{f.parent.name}/{f.name}")
        print(f"runs{i}.tar: {len(files)} files, {sizes[i] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
