"""The machine's load average, printed beside every timing of the benchmark scripts (the shared
2-core machine runs trainings beside them)."""
from __future__ import annotations

import pathlib


def load_avg() -> str:
    """The 1, 5 and 15 minute load averages as one string, or "?" where /proc is unavailable."""
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
