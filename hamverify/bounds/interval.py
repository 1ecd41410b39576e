"""Bounds containers and interval arithmetic (IA) on the IR (docs/METHOD.md §5.1, the cheap first pass)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import Affine, Network


@dataclass
class LayerBounds:
    """Elementwise ``lower <= z <= upper`` for the pre-activations of one ReLU layer."""

    lower: np.ndarray
    upper: np.ndarray

    @property
    def unstable(self) -> np.ndarray:
        return (self.lower < 0) & (self.upper > 0)

    @property
    def stably_active(self) -> np.ndarray:
        return self.lower >= 0

    @property
    def stably_inactive(self) -> np.ndarray:
        return self.upper <= 0

    def intersect(self, other: "LayerBounds | None") -> "LayerBounds":
        """Both are sound, so their intersection is too."""
        if other is None:
            return LayerBounds(self.lower.copy(), self.upper.copy())
        return LayerBounds(np.maximum(self.lower, other.lower), np.minimum(self.upper, other.upper))

    def copy(self) -> "LayerBounds":
        return LayerBounds(self.lower.copy(), self.upper.copy())


def box_vectors(net: Network, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """The input box as flat float64 vectors, checked against the network's input size."""
    from .. import HamverifyError

    lo = np.asarray(lo, dtype=np.float64).ravel()
    hi = np.asarray(hi, dtype=np.float64).ravel()
    if lo.shape != (net.input_size,) or hi.shape != (net.input_size,):
        raise HamverifyError(f"input box must have {net.input_size} entries, got {lo.size} and {hi.size}")
    if np.any(lo > hi):
        raise HamverifyError("input box is empty (lo > hi somewhere)")
    return lo, hi


def affine_interval(aff: Affine, lo: np.ndarray, hi: np.ndarray) -> LayerBounds:
    """Bounds of W x + b for x in [lo, hi]: W+ takes its extreme at the same end as x, W- the other."""
    W_pos, W_neg = aff.positive_negative()
    lower = np.asarray(W_pos @ lo + W_neg @ hi).ravel() + aff.b
    upper = np.asarray(W_pos @ hi + W_neg @ lo).ravel() + aff.b
    return LayerBounds(lower, upper)


def relu_interval(bounds: LayerBounds) -> tuple[np.ndarray, np.ndarray]:
    """Range of ReLU outputs given its pre-activation bounds."""
    return np.maximum(bounds.lower, 0.0), np.maximum(bounds.upper, 0.0)


def interval_bounds(net: Network, lo, hi, prior: list[LayerBounds] | None = None) -> list[LayerBounds]:
    """Pre-activation bounds of every ReLU layer by interval arithmetic.

    With ``prior`` (sound bounds from elsewhere), each layer is intersected with it before being
    propagated, so later layers profit too.
    """
    lo, hi = box_vectors(net, lo, hi)
    bounds: list[LayerBounds] = []
    h_lo, h_hi = lo, hi
    for j, aff in enumerate(net.affines[:-1]):
        layer = affine_interval(aff, h_lo, h_hi)
        if prior is not None:
            layer = layer.intersect(prior[j])
        bounds.append(layer)
        h_lo, h_hi = relu_interval(layer)
    return bounds


def interval_output_bounds(net: Network, lo, hi, bounds: list[LayerBounds]) -> LayerBounds:
    """Logit bounds by IA from given (possibly tightened) bounds of the last ReLU layer."""
    lo, hi = box_vectors(net, lo, hi)
    if not bounds:
        return affine_interval(net.affines[-1], lo, hi)
    return affine_interval(net.affines[-1], *relu_interval(bounds[-1]))
