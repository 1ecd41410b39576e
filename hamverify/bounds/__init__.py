"""Bounds on every ReLU pre-activation over an input box (METHOD.md §5.1).

Four methods, each never looser than symbolic: ``interval_bounds`` (IA), ``symbolic_bounds``
(CROWN-style back-substitution), ``alpha_bounds`` (CROWN with every row's lower slopes optimized,
``bounds/optimized.py``) and ``lp_bounds`` (per-neuron LP over the triangle relaxation).  All work
on the IR of ``hamverify.network``.

``alpha_margin_bounds`` / ``alpha_crown`` (alpha-CROWN, ``bounds/alpha.py``) tighten the *margin*
bounds only, from intermediate bounds of one of the methods above (optionally under ReLU splits),
so they are not a ``compute_bounds`` method: that contract returns intermediate bounds, and these
would be the symbolic ones unchanged.
"""
from __future__ import annotations

import importlib

from .. import HamverifyError
from ..network import Network
from .interval import LayerBounds, interval_bounds, interval_output_bounds
from .symbolic import margin_lower_bounds, output_bounds, specification_lower_bounds, symbolic_bounds

# alpha-CROWN needs torch and the LP needs highspy: both are imported on first use, so that a
# process whose inputs the symbolic bounds decide never pays for them (issue 16, item 4).
_LAZY = {"AlphaResult": "alpha", "alpha_crown": "alpha", "alpha_margin_bounds": "alpha", "split_bounds": "alpha",
         "lp_bounds": "lp", "alpha_bounds": "optimized"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

BOUND_METHODS = ("ia", "symbolic", "alpha", "lp")


def compute_bounds(net: Network, lo, hi, method: str = "symbolic", **kw) -> list[LayerBounds]:
    """Dispatch to one of ``BOUND_METHODS``; keyword arguments go to that method."""
    if method == "ia":
        return interval_bounds(net, lo, hi, **kw)
    if method == "symbolic":
        return symbolic_bounds(net, lo, hi, **kw)
    if method == "alpha":
        from .optimized import alpha_bounds
        return alpha_bounds(net, lo, hi, **kw)
    if method == "lp":
        from .lp import lp_bounds
        return lp_bounds(net, lo, hi, **kw)
    raise HamverifyError(f"unknown bounds method {method!r}; known: {', '.join(BOUND_METHODS)}")


def unstable_counts(bounds: list[LayerBounds]) -> list[int]:
    """Number of unstable ReLUs in each layer."""
    return [int(b.unstable.sum()) for b in bounds]


__all__ = ["BOUND_METHODS", "AlphaResult", "LayerBounds", "alpha_bounds", "alpha_crown", "alpha_margin_bounds", "compute_bounds",
           "interval_bounds", "interval_output_bounds", "lp_bounds", "margin_lower_bounds", "output_bounds",
           "specification_lower_bounds", "split_bounds", "symbolic_bounds", "unstable_counts"]
