"""Write the embedded sample sets the offline demo uses (models/samples/*.npz).

    python scripts/make_samples.py --data-dir ../shared/data

cifar10_test_first100.npz: the first 100 official CIFAR-10 test images, exact pixels (from
test_first100_exact.npz: ERAN's copy of the original test_batch order).
mnist_test_first100.npz: the first 100 official MNIST test images (exact IDX content).
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np

from hamverify.data import load_dataset

OUT = pathlib.Path(__file__).resolve().parent.parent / "models" / "samples"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, dataset, split in [("cifar10_test_first100", "cifar10", "test_first100_exact"),
                                 ("mnist_test_first100", "mnist", "test")]:
        x, y = load_dataset(dataset, split, args.data_dir)
        np.savez_compressed(OUT / f"{name}.npz", x=np.ascontiguousarray(x[:100]), y=np.asarray(y[:100], dtype=np.uint8))
        print(f"wrote {OUT / name}.npz: {x[:100].shape}, first labels {list(y[:10])}")


if __name__ == "__main__":
    main()
