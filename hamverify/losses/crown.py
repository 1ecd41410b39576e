"""CROWN's backward linear bound (Zhang et al. 2018) on the margins z_y - z_j, with the
pre-activation bounds of every ReLU taken from IBP: the CROWN-IBP bound (Zhang et al. 2020).

The margin specification C is propagated backward as a linear function A x + c of the input:
through an affine layer exactly, through a ReLU by its linear relaxation (upper: the chord
u/(u-l) (z - l); lower: slope 1 if u > -l else 0, CROWN-IBP's adaptive choice), and finally
concretized over the box: min over [lo, hi] of A x is A+ lo + A- hi.  Sound for any pre-
activation bounds that contain the true pre-activations, and differentiable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Normalize
from .interval import batch_norm_affine, margin_matrix


def _input_shapes(model: nn.Sequential, x: torch.Tensor) -> list[tuple]:
    shapes = []
    with torch.no_grad():
        z = x[:1]
        for layer in model:
            shapes.append(tuple(z.shape[1:]))
            z = layer(z)
    return shapes


def _back_through(layer: nn.Module, A: torch.Tensor, in_shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', c) with A·layer(x) = A'·x + c for an affine layer; A is (N, S, *out_shape)."""
    n, s = A.shape[:2]
    if isinstance(layer, nn.Linear):
        return A @ layer.weight, A @ layer.bias
    if isinstance(layer, nn.Flatten):
        return A.reshape(n, s, *in_shape), A.new_zeros(n, s)
    if isinstance(layer, nn.BatchNorm2d):
        if layer.training:
            # The centres' statistics are not known in the backward pass (crown-ibp with batch norm
            # would need them threaded through); eval mode (the logged certified accuracy) is exact.
            raise TypeError("CROWN bounds: BatchNorm2d in training mode is not supported (use ibp, sabr, mtl-ibp)")
        scale, shift = batch_norm_affine(layer, None)
        return A * scale.view(-1, 1, 1), (A.sum(dim=(3, 4)) * shift).sum(2)
    if isinstance(layer, Normalize):
        inv = (1 / layer.std).expand(in_shape)
        shift = (layer.mean / layer.std).expand(in_shape)
        return A * inv, -(A * shift).flatten(2).sum(2)
    if isinstance(layer, nn.Conv2d):
        out_shape = A.shape[2:]
        c = (A.sum(dim=(3, 4)) * layer.bias).sum(2) if layer.bias is not None else A.new_zeros(n, s)
        flat = A.reshape(n * s, *out_shape)
        # conv_transpose2d is the adjoint of conv2d; output_padding recovers the input size.
        full = [(o - 1) * st - 2 * p + d * (k - 1) + 1 for o, st, p, d, k in
                zip(out_shape[1:], layer.stride, layer.padding, layer.dilation, layer.kernel_size)]
        pad = [i - f for i, f in zip(in_shape[1:], full)]
        back = F.conv_transpose2d(flat, layer.weight, None, layer.stride, layer.padding, pad, layer.groups,
                                  layer.dilation)
        return back.reshape(n, s, *in_shape), c
    raise TypeError(f"CROWN bounds: unsupported layer {type(layer).__name__}")


def crown_margin_lower(model: nn.Sequential, lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor,
                       preacts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Lower bounds (N, K) of z_y - z_j over the box (0 at j = y); ``preacts`` are (l, u) per
    ReLU in order (e.g. from interval.ibp_margin_lower's ``preacts_out``)."""
    layers = list(model)
    shapes = _input_shapes(model, lo)
    final = layers[-1]
    C = margin_matrix(y, final.out_features, lo.dtype)
    A, bias = _back_through(final, C, shapes[-1])
    relu_k = len(preacts)
    for layer, in_shape in zip(reversed(layers[:-1]), reversed(shapes[:-1])):
        if isinstance(layer, nn.ReLU):
            relu_k -= 1
            l, u = preacts[relu_k]
            l, u = l.reshape(-1, *in_shape).unsqueeze(1), u.reshape(-1, *in_shape).unsqueeze(1)
            unstable = (l < 0) & (u > 0)
            active = l >= 0
            width = (u - l).clamp_min(1e-12)
            up_slope = torch.where(unstable, u / width, active.to(A.dtype))
            up_icpt = torch.where(unstable, -l * u / width, torch.zeros_like(l))
            lo_slope = torch.where(unstable, (u > -l).to(A.dtype), active.to(A.dtype))
            Ap, An = A.clamp_min(0), A.clamp_max(0)
            bias = bias + (An * up_icpt).flatten(2).sum(2)
            A = Ap * lo_slope + An * up_slope
        else:
            A, c = _back_through(layer, A, in_shape)
            bias = bias + c
    Ap, An = A.clamp_min(0).flatten(2), A.clamp_max(0).flatten(2)
    return (Ap @ lo.flatten(1).unsqueeze(2) + An @ hi.flatten(1).unsqueeze(2)).squeeze(2) + bias
