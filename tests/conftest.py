"""Shared test set-up: one torch thread (the suite runs on 2 shared cores, where torch's default of
one thread per core oversubscribes and slows tests tenfold) and the location of the real data."""
from __future__ import annotations

import os
import pathlib

import pytest
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shared_data_root() -> pathlib.Path:
    """`$HAMVERIFY_DATA`, else `../shared/data` beside the checkout."""
    env = os.environ.get("HAMVERIFY_DATA")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist():
    """MNIST test images and labels from the shared data (skips when it is absent)."""
    root = shared_data_root()
    if not (root / "mnist" / "test.npz").is_file() or not (root / "mnist" / "train.npz").is_file():
        pytest.skip(f"MNIST not found under {root}")
    from hamverify.data import load_dataset
    return load_dataset("mnist", "test", root)
