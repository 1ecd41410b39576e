"""Shared test set-up: one torch thread (the suite runs on 2 shared cores, where torch's default of
one thread per core oversubscribes and slows tests tenfold), the location of the real data, and a
closing line that counts the tests skipped because that data is missing and says how to get it."""
from __future__ import annotations

import os
import pathlib
import re

import pytest
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# The skip reasons of the tests that need MNIST / CIFAR-10 on disk (this file and test_*.py).
DATA_SKIP = re.compile(r"data not found|not found (under|at)|MNIST not available|test data not in", re.I)


def shared_data_root() -> pathlib.Path:
    """`$HAMVERIFY_DATA`, else `../shared/data` beside the checkout."""
    env = os.environ.get("HAMVERIFY_DATA")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def has_data(root: pathlib.Path, dataset: str, splits=("train", "test")) -> bool:
    """Whether ``dataset`` (every split of ``splits``) can be read from ``root`` without a download:
    an npz copy or the official files."""
    from hamverify import HamverifyError
    from hamverify.data import load_dataset
    if not root.is_dir():
        return False
    try:
        for split in splits:
            load_dataset(dataset, split, root, download=False)
    except HamverifyError:
        return False
    return True


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
    if not has_data(root, "mnist"):
        pytest.skip(f"MNIST not found under {root}")
    from hamverify.data import load_dataset
    return load_dataset("mnist", "test", root)


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line at the end of the session: how many tests were skipped for missing data, and how
    to get it (they are skipped, not failed, so a machine without the data still passes)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if DATA_SKIP.search(_reason(r))]
    if not skipped:
        return
    root = shared_data_root()
    where = f"$HAMVERIFY_DATA={root}" if os.environ.get("HAMVERIFY_DATA") else f"{root} ($HAMVERIFY_DATA unset)"
    terminalreporter.write_line(
        f"{len(skipped)} test(s) skipped: no MNIST / CIFAR-10 data in {where}. To run them: "
        f"`.venv/bin/python -m hamverify.data fetch ~/.cache/hamverify` (downloads the official MNIST and "
        f"CIFAR-10 files, about 180 MB, and writes npz copies), then `HAMVERIFY_DATA=~/.cache/hamverify make test`; "
        f"or point HAMVERIFY_DATA at a folder holding mnist/ and cifar10/ (README 'Data').", yellow=True)
