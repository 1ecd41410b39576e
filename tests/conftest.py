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
