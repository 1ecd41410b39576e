"""The models and sample inputs that ship in the repository's models/ folder (offline demo)."""
from __future__ import annotations

import pathlib

import numpy as np

from . import HamverifyError

MODELS_DIR = pathlib.Path(__file__).resolve().parent.parent / "models"
CONFIGS_DIR = MODELS_DIR.parent / "verify_configs"
DEFAULT_MODEL = MODELS_DIR / "cifar10_small_hamming_8_255.pt"
SAMPLES = {("cifar10", "test"): "cifar10_test_first100.npz",
           ("cifar10", "test_first100_exact"): "cifar10_test_first100.npz",
           ("mnist", "test"): "mnist_test_first100.npz"}
FULL_EXPERIMENT = "hamverify verify --config verify_configs/cifar10_small_8_255.toml --count 10000"
TEST_SET_SIZE = {"cifar10": 10000, "mnist": 10000, "fashion-mnist": 10000}


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


def verify_inputs(dataset: str, split: str, data_dir=None, download: bool = False, log=print):
    """``(x, y, source, embedded)`` for ``verify``, offline first: the installed data set (under
    --data-dir, $HAMVERIFY_DATA or ~/.cache/hamverify); else, when no --data-dir was named and no
    download asked for, the embedded samples (with a note on ``log``); else a download of the
    official files if ``download``; else the data module's one-line not-found error."""
    from .data import dataset_source, load_dataset
    try:
        x, y = load_dataset(dataset, split, data_dir, download=download)
        return x, y, dataset_source(dataset, split, data_dir), False
    except HamverifyError:
        samples = None if (data_dir or download) else load_samples(dataset, split)
        if samples is None:
            raise
    x, y = samples
    log(f"no {dataset} {split} data installed: using the {len(x)} embedded official {dataset} test images "
        f"in models/samples (offline; --download fetches the whole test set)")
    return x, y, "embedded", True


def past_end_message(start: int, dataset: str, split: str, n: int, embedded: bool) -> str:
    """The one-line error for a --start at or past the end of the inputs."""
    if embedded:
        total = TEST_SET_SIZE.get(dataset)
        rest = f" of {total}" if total else ""
        return (f"--start {start} is past the end of the {n} embedded {dataset} test images (models/samples; "
                f"no {dataset} data is installed): add --download for all{rest} test images, or see README 'Data'")
    return f"--start {start} is past the end of {dataset} {split} ({n} inputs)"


def full_experiment_hint(model_path, dataset: str, eps: float) -> str:
    """The command for the whole test set after a run on the embedded samples: the shipped verify
    config of this model if there is one, else the model, dataset and eps spelled out."""
    model = pathlib.Path(model_path)
    count = TEST_SET_SIZE.get(dataset, 10000)
    for config in sorted(CONFIGS_DIR.glob("*.toml")):
        try:
            import tomllib
            with open(config, "rb") as f:
                values = tomllib.load(f)
        except (OSError, ValueError):
            continue
        named = pathlib.Path(str(values.get("model", "")))
        same = (named.name == model.name and (MODELS_DIR / named.name).resolve() == model.resolve())
        if same and values.get("dataset", dataset) == dataset:
            try:
                rel = config.relative_to(pathlib.Path.cwd())
            except ValueError:
                rel = config
            return f"hamverify verify --config {rel} --count {count} --download"
    return f"hamverify verify --model {model_path} --dataset {dataset} --eps {eps:.6g} --count {count} --download"
