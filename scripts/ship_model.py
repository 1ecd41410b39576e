"""Copy a finished training run into models/ with a model card.

    python scripts/ship_model.py RUN_DIR NAME [--note "..."] [--verify results.jsonl ...]

Writes models/NAME.pt (the run's selected model.pt, weights and metadata unchanged) and
models/NAME.md: the command that reproduces it, its full config, data source, seed, training
time and machine, and the metrics recorded at save time (plus verification summaries, if given).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil

from hamverify.cli import train_small
from hamverify.models import file_sha256, read_checkpoint
from hamverify.records import dedupe_latest, read_records
from hamverify.report import summarize
from hamverify.train import TrainConfig

MODELS = pathlib.Path(__file__).resolve().parent.parent / "models"
DATA_NOTE = {
    "cifar10": "CIFAR-10 train set as in `../shared/data/cifar10/train.npz`: a JPEG re-encoding of the official "
               "images (mean absolute error about 6 grey levels), not the exact official pixels. Accuracy on "
               "`test` slices is on the JPEG copy (\"CIFAR-10 (JPEG copy)\"); `test_first100_exact` are the "
               "first 100 official test images, exact.",
    "mnist": "MNIST, exact official train set (`../shared/data/mnist/train.npz`).",
    "fashion-mnist": "Fashion-MNIST from Debian's `dataset-fashion-mnist` package (official IDX files).",
}


def command_for(cfg: TrainConfig) -> str:
    base = TrainConfig.from_sources(recipe=cfg.recipe, cli_values={"dataset": cfg.dataset})
    flags = [f"--dataset {cfg.dataset}", f"--recipe {cfg.recipe}", f"--seed {cfg.seed}"]
    if abs(base.eps - cfg.eps) > 1e-12:
        flags.append(f"--eps {cfg.eps:.10g}")
    accepted = {param.name for param in train_small.params}
    for f in dataclasses.fields(TrainConfig):  # every setting the recipe does not already give
        if f.name in ("dataset", "recipe", "seed", "eps") or getattr(base, f.name) == getattr(cfg, f.name):
            continue
        if f.name not in accepted:  # a card must never print a command that train-small rejects
            raise SystemExit(f"{f.name} = {getattr(cfg, f.name)!r} has no train-small flag: ship a --config run")
        flags.append(f"--{f.name.replace('_', '-')} {getattr(cfg, f.name)}")
    return "hamverify train-small " + " ".join(flags)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("name")
    ap.add_argument("--note", default="")
    ap.add_argument("--checkpoint", default="model.pt", help="file in RUN_DIR to ship (default model.pt)")
    ap.add_argument("--verify", nargs="*", default=[], help="results files of `hamverify verify` on this model")
    args = ap.parse_args()
    run = pathlib.Path(args.run_dir)
    src = run / args.checkpoint
    meta = read_checkpoint(src)
    cfg = TrainConfig.from_dict(meta["config"])
    dst = MODELS / f"{args.name}.pt"
    if "optimizer_state" in meta:
        # A run's last.pt: ship the weights and metadata without the optimizer's moments.
        import torch
        payload = torch.load(src, map_location="cpu", weights_only=True)
        payload.pop("optimizer_state")
        torch.save(payload, dst)
    else:
        shutil.copyfile(src, dst)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in log if isinstance(r.get("epoch"), int)]
    final = next((r for r in log if r.get("epoch") == "final"), {})
    lines = [f"# {args.name}", "",
             f"`models/{args.name}.pt` — {meta['arch']} on {meta['dataset']}, eps {cfg.eps:.6g}, "
             f"reg `{cfg.reg}`, recipe `{cfg.recipe}`, seed {cfg.seed}.", "",
             f"sha256 `{file_sha256(dst)}`; created {meta['created']}; hamverify {meta['hamverify_version']}, "
             f"torch {meta['torch_version']}.", ""]
    if args.note:
        lines += [args.note, ""]
    lines += ["## Reproduce", "", "```bash", command_for(cfg), "```", "",
              "## Data", "", DATA_NOTE.get(meta["dataset"], meta["dataset"]) +
              (f" The last {cfg.val_count} training images are held out as the validation slice that picks "
               f"the epoch (`select = {cfg.select}`)." if cfg.val_count else ""), "",
              "## Training", "",
              f"* epochs run: {len(epochs)} rows in the log ({sum(bool(r.get('collapsed')) for r in epochs)} "
              f"collapsed and rolled back); selected epoch: {final.get('selected_epoch', meta.get('run_state', {}).get('best_epoch'))}",
              f"* training time: {final.get('train_seconds', float('nan')):.0f} s for the last invocation "
              f"(sum of epoch times in the log: {sum(r.get('epoch_time', 0) for r in epochs):.0f} s); "
              f"device of the last invocation: {final.get('device', 'unknown')}", "",
              "## Metrics at save time", "",
              "On the first 500 images of the `test` split; PGD-20 with 10 restarts; unstable ReLUs under "
              "interval bounds (200 images):", "", "```json", json.dumps(meta.get("metrics", {}), indent=2), "```", ""]
    for path in args.verify:
        recs, _ = read_records(path)
        s = summarize(sorted(dedupe_latest(recs).values(), key=lambda r: r.index))
        lines += [f"## Verification: `{pathlib.Path(path).name}`", "",
                  f"{s['n']} inputs, eps {s['eps']:.6g}, {s['tightening']} bounds + {s['backend']}: "
                  f"clean {100 * s['clean_accuracy']:.2f} %, PGD {100 * s['pgd_accuracy']:.2f} %, "
                  f"verified {100 * s['verified_accuracy']:.2f} %, timeouts {s['timeout']}, unknown {s['unknown']}, "
                  f"mean time {s['time_mean']:.2f} s.", ""]
    lines += ["## Config", "", "```json", json.dumps(meta["config"], indent=2), "```", ""]
    (MODELS / f"{args.name}.md").write_text("\n".join(lines))
    print(f"wrote {dst} and {MODELS / (args.name + '.md')}")


if __name__ == "__main__":
    main()
