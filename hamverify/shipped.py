"""The models and sample inputs that ship in the repository's models/ folder (offline demo)."""
from __future__ import annotations

import pathlib

import numpy as np

from . import HamverifyError

MODELS_DIR = pathlib.Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "cifar10_small_hamming_8_255.pt"
SAMPLES = {("cifar10", "test"): "cifar10_test_first100.npz",
           ("cifar10", "test_first100_exact"): "cifar10_test_first100.npz",
           ("mnist", "test"): "mnist_test_first100.npz"}
FULL_EXPERIMENT = "hamverify verify --config verify_configs/cifar10_small_8_255.toml --count 10000"


def default_model() -> pathlib.Path:
    if not DEFAULT_MODEL.is_file():
        raise HamverifyError(f"no --model given and the shipped default {DEFAULT_MODEL} is missing")
    return DEFAULT_MODEL


def load_samples(dataset: str, split: str):
    """The first 100 official test images embedded in models/samples, or None if there are none."""
    name = SAMPLES.get((dataset, split))
    if name is None or not (MODELS_DIR / "samples" / name).is_file():
        return None
    with np.load(MODELS_DIR / "samples" / name) as d:
        return d["x"], d["y"].astype(np.int64)
