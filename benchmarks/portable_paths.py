"""Paths as committed files store them: never the absolute paths of the machine that made them.

``portable(path)`` is the path relative to the repository when it lies inside it
(``models/x.pt``); else, from the last folder named ``runs`` on (``runs/r3/m1_adv/model.pt``:
training runs live in ``runs/``, the default of ``hamverify train-small``, wherever that folder
is on the machine); else relative to the current folder when under it; else just ``PARENT/NAME``.
``RUNS`` is where the scripts look for runs by default: ``$HAMVERIFY_RUNS``, else ``<repo>/runs``, else a
``runs/`` folder beside the repository.
"""
from __future__ import annotations

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = pathlib.Path(os.environ.get("HAMVERIFY_RUNS") or next(
    (p for p in (REPO_ROOT / "runs", REPO_ROOT.parent / "runs") if p.is_dir()), REPO_ROOT / "runs"))


def portable(path) -> str:
    p = pathlib.Path(os.path.abspath(os.path.expanduser(str(path))))
    for base in (REPO_ROOT, pathlib.Path(os.path.abspath(RUNS))):
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return (rel if base == REPO_ROOT else pathlib.PurePosixPath("runs", *rel.parts)).as_posix()
    folders = p.parts[:-1]
    if "runs" in folders:
        i = len(folders) - 1 - folders[::-1].index("runs")
        return pathlib.PurePosixPath(*p.parts[i:]).as_posix()
    try:
        return p.relative_to(pathlib.Path.cwd().resolve()).as_posix()
    except ValueError:
        return pathlib.PurePosixPath(p.parent.name, p.name).as_posix()


def portable_command(cmd: list[str]) -> str:
    """A command line for a committed file: every argument that is an absolute path made portable."""
    return " ".join(portable(a) if os.path.isabs(a) else a for a in map(str, cmd))
