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
