"""The training regularizers of docs/METHOD.md §3: corners, the Hamming term, the stability term,
and the RS-loss baseline (Xiao et al. 2019).

Every term works from one forward pass over ``[x; x+; x-]`` (``ReLUNet.forward_with_preacts``),
so no regularizer re-implements the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


STABILITY_FORMS = ("softmax-mean", "softmax-sum", "logits-mean", "logits-sum")


def sample_corners(x: torch.Tensor, eps: float, generator: torch.Generator | None = None):
    """Opposite random corners ``x ± rho`` of the eps-box, rho in {-eps, +eps}^d, clipped to [0, 1]."""
    signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device, dtype=torch.int8)
    rho = (signs.to(x.dtype) * 2 - 1) * eps
    return (x + rho).clamp(0, 1), (x - rho).clamp(0, 1)


def relaxed_hamming(z: torch.Tensor, y: torch.Tensor, alpha: float = 8.0) -> torch.Tensor:
    """H_a(z, y) = |tanh(a z) - tanh(a y)| (Eq. 11); tends to the 0/1 pattern distance as a grows."""
    return (torch.tanh(alpha * z) - torch.tanh(alpha * y)).abs()


def hamming_loss(preacts_plus, preacts_minus, alpha: float = 8.0) -> torch.Tensor:
    """L_H (Eq. 17): mean over samples of (1/n) sum_j (mean_k H_a(z+_ijk, z-_ijk))^2."""
    per_layer = [relaxed_hamming(zp, zm, alpha).mean(dim=1).square()
                 for zp, zm in zip(preacts_plus, preacts_minus)]
    return torch.stack(per_layer, dim=1).mean(dim=1).mean()


def stability_loss(logits_plus, logits_minus, form: str = "softmax-mean") -> torch.Tensor:
    """L_S (Eq. 16) between the two corners' outputs.

    ``softmax-mean`` is docs/METHOD.md's choice; ``softmax-sum`` is Eq. 16 as printed (a sum over the
    batch); the ``logits-*`` forms apply it to the raw logits, where it is far from negligible.
    """
    if form not in STABILITY_FORMS:
        raise ValueError(f"unknown stability form {form!r}; known: {', '.join(STABILITY_FORMS)}")
    if form.startswith("softmax"):
        logits_plus, logits_minus = F.softmax(logits_plus, dim=1), F.softmax(logits_minus, dim=1)
    per_sample = (logits_plus - logits_minus).square().sum(dim=1)
    return per_sample.sum() if form.endswith("sum") else per_sample.mean()


def interval_preact_bounds(model: nn.Sequential, x: torch.Tensor, eps: float):
    """Differentiable interval bounds (l, u) of every ReLU's pre-activation over B(x) ∩ [0,1]
    (hamverify.losses.interval, shared with the certified losses)."""
    from .losses.interval import box, propagate_interval
    return propagate_interval(model, *box(x, eps))[0]


def rs_loss(model: nn.Sequential, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Xiao et al.'s ReLU-stability loss: sum over layers of -mean tanh(1 + l*u)."""
    return sum(-torch.tanh(1 + l * u).mean() for l, u in interval_preact_bounds(model, x, eps))


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices and kernels (biases excluded), as Xiao et al."""
    return sum(p.abs().sum() for name, p in model.named_parameters() if name.endswith("weight"))


@torch.no_grad()
def unstable_counts_ia(model: nn.Sequential, x: torch.Tensor, eps: float) -> list[float]:
    """Mean number of unstable ReLUs (l < 0 < u) per layer under interval bounds."""
    return [float(((l < 0) & (u > 0)).sum(1).float().mean())
            for l, u in interval_preact_bounds(model, x, eps)]
