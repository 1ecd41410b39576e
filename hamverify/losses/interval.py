"""Differentiable interval bounds (IBP, Gowal et al. 2018) through a ReLUNet.

Center/radius form: an affine layer maps (mid, rad) to (layer(mid), |W| rad); a ReLU maps the
interval [mid - rad, mid + rad] through itself.  The last Linear layer is not propagated as an
interval: the margin specification z_y - z_j is folded into it (Gowal et al.'s elision), which
is much tighter than subtracting two logit intervals.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Normalize


def box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """B(x) ∩ [0, 1] as (lo, hi)."""
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


def batch_norm_affine(layer: nn.BatchNorm2d, mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of a BatchNorm2d as the bounds see it: in eval mode its running
    statistics; in training mode the batch statistics of the interval centres ``mid`` that reach it
    (near the clean batch's, which Shi et al. 2021 use), without touching the running statistics."""
    if layer.training:
        mean, var = mid.mean(dim=(0, 2, 3)), mid.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = layer.running_mean, layer.running_var
    scale = torch.rsqrt(var + layer.eps)
    if layer.affine:
        scale = scale * layer.weight
    shift = (layer.bias if layer.affine else 0.0) - mean * scale
    return scale, shift


def _affine_interval(layer: nn.Module, mid: torch.Tensor, rad: torch.Tensor):
    if isinstance(layer, nn.BatchNorm2d):
        scale, shift = batch_norm_affine(layer, mid)
        return mid * scale.view(-1, 1, 1) + shift.view(-1, 1, 1), rad * scale.abs().view(-1, 1, 1)
    if isinstance(layer, Normalize):
        return layer(mid), rad / layer.std
    if isinstance(layer, nn.Conv2d):
        rad = F.conv2d(rad, layer.weight.abs(), None, layer.stride, layer.padding, layer.dilation, layer.groups)
        return layer(mid), rad
    if isinstance(layer, nn.Linear):
        return layer(mid), F.linear(rad, layer.weight.abs())
    if isinstance(layer, nn.Flatten):
        return layer(mid), layer(rad)
    raise TypeError(f"interval bounds: unsupported layer {type(layer).__name__}")


def propagate_interval(model: nn.Sequential, lo: torch.Tensor, hi: torch.Tensor, last: bool = True):
    """Interval bounds over the box [lo, hi].

    Returns (preacts, (mid, rad)): ``preacts`` the (l, u) of every ReLU's pre-activation, flattened
    per sample; (mid, rad) the interval of the network's output if ``last``, else of the input to
    the last layer (for the margin elision)."""
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    layers = list(model)
    if not last:
        layers = layers[:-1]
    preacts = []
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            l, u = mid - rad, mid + rad
            preacts.append((l.flatten(1), u.flatten(1)))
            l, u = F.relu(l), F.relu(u)
            mid, rad = (u + l) / 2, (u - l) / 2
        else:
            mid, rad = _affine_interval(layer, mid, rad)
    return preacts, (mid, rad)


def margin_matrix(y: torch.Tensor, n_classes: int, dtype=torch.float32) -> torch.Tensor:
    """C (N, K, K) with rows e_y - e_j: C z = z_y - z_j (row y is zero)."""
    eye = torch.eye(n_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def ibp_margin_lower(model: nn.Sequential, lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor,
                     preacts_out: list | None = None) -> torch.Tensor:
    """Lower bounds (N, K) of the margins z_y - z_j over the box (0 at j = y), by IBP with the
    margin folded into the last layer.  ``preacts_out``, if given, receives the ReLU bounds."""
    final = list(model)[-1]
    if not isinstance(final, nn.Linear):
        raise TypeError("the margin elision needs a Linear last layer")
    preacts, (mid, rad) = propagate_interval(model, lo, hi, last=False)
    if preacts_out is not None:
        preacts_out.extend(preacts)
    C = margin_matrix(y, final.out_features, mid.dtype)          # (N, K, K)
    W = C @ final.weight                                          # (N, K, h): rows w_y - w_j
    b = C @ final.bias                                            # (N, K)
    return (W @ mid.unsqueeze(2)).squeeze(2) - (W.abs() @ rad.unsqueeze(2)).squeeze(2) + b
