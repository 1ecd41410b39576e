"""Move the training data to a device machine whose calls carry at most 64 MiB each.

  python benchmarks/device_data.py pack   [--data ../shared/data] [--out .dev]   # here
  python benchmarks/device_data.py unpack [--src .dev] [--data /tmp/data] PART  # there, PART = mnist | cifar1 | cifar2

`pack` writes three folders, one per device call: `m/` (MNIST npz + Fashion-MNIST IDX from Debian's
package), `c1/` and `c2/` (the two halves of CIFAR-10 train, xz with a delta filter over the
interleaved RGB bytes: 96 MB for 150 MB, against 118 MB without the filter; plus labels and the first
1,000 test images). `unpack` restores each part under --data in the npz layout hamverify reads;
CIFAR-10 is written once both halves are there.
"""
from __future__ import annotations

import argparse
import lzma
import pathlib
import shutil

import numpy as np

FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 3}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")


def pack(data: pathlib.Path, out: pathlib.Path):
    for part in ("m/fashion", "c1", "c2"):
        (out / part).mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        shutil.copy(data / "mnist" / f"{split}.npz", out / "m" / f"{split}.npz")
    for gz in FASHION.glob("*.gz"):
        shutil.copy(gz, out / "m" / "fashion" / gz.name)
    train = np.load(data / "cifar10" / "train.npz")
    x, y = train["x"], train["y"]
    half = len(x) // 2
    for i, rows in ((1, x[:half]), (2, x[half:])):
        (out / f"c{i}" / f"part{i}.xz").write_bytes(lzma.compress(rows.tobytes(), format=lzma.FORMAT_XZ, filters=FILTERS))
    np.save(out / "c2" / "train_y.npy", y)
    test = np.load(data / "cifar10" / "test.npz")
    np.savez_compressed(out / "c2" / "test1000.npz", x=test["x"][:1000], y=test["y"][:1000])


def unpack(src: pathlib.Path, data: pathlib.Path, part: str):
    if part == "mnist":
        (data / "mnist").mkdir(parents=True, exist_ok=True)
        (data / "fashion-mnist").mkdir(parents=True, exist_ok=True)
        for f in (src / "m").glob("*.npz"):
            shutil.copy(f, data / "mnist" / f.name)
        for f in (src / "m" / "fashion").glob("*.gz"):
            shutil.copy(f, data / "fashion-mnist" / f.name)
        return
    staging = data / "cifar10-parts"
    staging.mkdir(parents=True, exist_ok=True)
    if part == "cifar1":
        shutil.copy(src / "c1" / "part1.xz", staging / "part1.xz")
        return
    y = np.load(src / "c2" / "train_y.npy")
    halves = [np.frombuffer(lzma.decompress(p.read_bytes()), dtype=np.uint8)
              for p in (staging / "part1.xz", src / "c2" / "part2.xz")]
    x = np.concatenate(halves).reshape(len(y), 32, 32, 3)
    (data / "cifar10").mkdir(parents=True, exist_ok=True)
    np.savez(data / "cifar10" / "train.npz", x=x, y=y)
    shutil.copy(src / "c2" / "test1000.npz", data / "cifar10" / "test.npz")
    print(f"cifar10 train {x.shape}, mean {x.mean():.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default=".dev")
    u = sub.add_parser("unpack")
    u.add_argument("part", choices=["mnist", "cifar1", "cifar2"])
    u.add_argument("--src", default=".dev")
    u.add_argument("--data", default="/tmp/data")
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(pathlib.Path(args.data), pathlib.Path(args.out))
    else:
        unpack(pathlib.Path(args.src), pathlib.Path(args.data), args.part)


if __name__ == "__main__":
    main()
