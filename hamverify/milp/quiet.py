"""HiGHS prints a banner to file descriptor 1 when the first Highs object of a process is made,
before any option can switch output off; it would corrupt `--json` output on stdout."""
from __future__ import annotations

import os
import sys

import highspy

_banner_done = False


def new_highs() -> highspy.Highs:
    """A ``highspy.Highs()`` whose construction never writes to stdout."""
    global _banner_done
    if _banner_done:
        return highspy.Highs()
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    _banner_done = True
    return h
