"""Run settings shared by every command: eps parsing and TOML config files."""
from __future__ import annotations

import math
import pathlib
import re
import tomllib
from fractions import Fraction

from . import HamverifyError

_EPS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?\s*$")


def parse_eps(text) -> float:
    """'8/255', '0.0314', '2e-3' -> float in [0, 1]; anything else raises HamverifyError."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _EPS_RE.match(str(text))
        if not m:
            raise HamverifyError(f"invalid eps {text!r}: use a number like 0.1, 2e-3 or a fraction like 8/255")
        num, den = m.group(1), m.group(2)
        if den is not None:
            if float(den) == 0:
                raise HamverifyError(f"invalid eps {text!r}: division by zero")
            value = float(Fraction(num) / Fraction(den))
        else:
            value = float(num)
    if not math.isfinite(value) or value < 0 or value > 1:
        raise HamverifyError(f"invalid eps {text!r}: must lie in [0, 1] (pixel units)")
    return value


def load_toml(path) -> dict:
    path = pathlib.Path(path)
    if not path.is_file():
        raise HamverifyError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # tomllib decodes as UTF-8 first
        raise HamverifyError(f"{path}: invalid TOML ({exc})") from None


def check_writable(path, what: str, folder: bool = False) -> pathlib.Path:
    """A one-line error now, before any work, unless ``path`` (a file; with ``folder``, a folder)
    can be written: the path itself must be of the right kind, no part of its folder path may be a
    regular file, and the nearest existing folder must be writable.  Creates nothing."""
    import os
    path = pathlib.Path(path).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise HamverifyError(f"{what} {path} exists and is not a folder")
        if not folder and path.is_dir():
            raise HamverifyError(f"{what} {path} is a folder, not a file")
        if not os.access(path, os.W_OK):
            raise HamverifyError(f"cannot write {what} {path}: permission denied")
        return path
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise HamverifyError(f"cannot create {what} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise HamverifyError(f"cannot create {what} {path}: no permission to write in {ancestor}")
    return path


def describe_os_error(exc: OSError) -> str:
    """An OSError about a file (PermissionError, NotADirectoryError, a full disk ...) on one line."""
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if getattr(exc, "filename2", None) else "")
    reason = exc.strerror or type(exc).__name__
    return f"cannot use {where}: {reason}" if exc.filename is not None else f"{reason}: {exc}"
