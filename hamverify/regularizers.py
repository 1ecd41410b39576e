"""The training regularizers of docs/METHOD.md §3: corners, the Hamming term, the stability term,
and the RS-loss baseline (Xiao et al. 2019).

Every term works from one forward pass over ``[x; x+; x-]`` (``ReLUNet.forward_with_preacts``),
so no regularizer re-implements the model.
"""
from __future__ import annotations

import math

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


# ---- the dense regularizer of Eq. 14 (the paper's Table 4 ablation) ----

def default_dense_scale(x: torch.Tensor, eps: float) -> float:
    """Eq. 14's kernel scale s when none is given: twice the squared l2 distance between a sample's two
    opposite corners at ``eps`` (``2 · 4·d·eps²``; 24.2 at CIFAR-10 8/255), so that a pair of
    different images (squared distance ~50-300 on CIFAR-10) weighs exp(-(D - 4·d·eps²)/s) against a
    corner pair's 1."""
    return 2.0 * 4.0 * x[0].numel() * eps * eps


def dense_pairs(points: torch.Tensor, n: int, scale: float, min_weight: float = 0.0):
    """The pairs (i < j) of the 2n perturbed points ``points = [x+; x-]`` that Eq. 14 sums, with
    their heat-kernel weights L_ij = exp(-||p_i - p_j||²/s) divided by the batch's mean corner-pair
    weight (pair (i, i+n)): at equal γ's the dense term is then the sparse one (every corner pair
    weighing 1) plus the pairs across images. Eq. 14 as printed differs by that one factor per batch,
    a rescaling of the γ's. Pairs whose weight is below ``min_weight`` are dropped (0: every pair).
    The weights depend on the inputs only, so they carry no gradient. Returns (i, j, w)."""
    if scale <= 0:
        raise ValueError(f"dense kernel scale {scale} (must be > 0)")
    with torch.no_grad():
        flat = points.flatten(1)
        d2 = torch.cdist(flat, flat).square()
        idx = torch.arange(n, device=points.device)
        # log of the mean corner-pair weight, in log space so that a small s cannot make it 0/0
        log_corner = torch.logsumexp(-d2[idx, idx + n] / scale, dim=0) - math.log(n)
        i, j = torch.triu_indices(2 * n, 2 * n, offset=1, device=points.device)
        w = torch.exp(-d2[i, j] / scale - log_corner)
        if min_weight > 0:
            keep = w >= min_weight
            i, j, w = i[keep], j[keep], w[keep]
    return i, j, w


def hamming_loss_dense(preacts, i, j, w, n: int, alpha: float = 8.0) -> torch.Tensor:
    """Eq. 14's Hamming part: (1/n) Σ_pairs w_ij · (1/L) Σ_l (mean_k H_a(z_il k, z_jl k))², over the
    pre-activations of the 2n perturbed points (every pair at once, no Python loop over pairs);
    with the n corner pairs alone at weight 1 it is hamming_loss."""
    per_layer = []
    for z in preacts:
        t = torch.tanh(alpha * z)
        per_layer.append((t[i] - t[j]).abs().mean(dim=1).square())
    return (w * torch.stack(per_layer, dim=1).mean(dim=1)).sum() / n


def stability_loss_dense(logits, i, j, w, n: int, form: str = "softmax-mean") -> torch.Tensor:
    """Eq. 14's output part, Σ_pairs w_ij ||f(p_i) - f(p_j)||², in stability_loss's ``form`` (softmax
    or logits; ``-mean`` divides by n, the batch size); with the corner pairs alone it is stability_loss."""
    if form not in STABILITY_FORMS:
        raise ValueError(f"unknown stability form {form!r}; known: {', '.join(STABILITY_FORMS)}")
    if form.startswith("softmax"):
        logits = F.softmax(logits, dim=1)
    total = (w * (logits[i] - logits[j]).square().sum(dim=1)).sum()
    return total if form.endswith("sum") else total / n
