"""The robust parts of certified training: one function per method.

Every loss works from lower bounds m_j of the margins z_y - z_j over a box: the robust cross-
entropy CE(-m, y) (Gowal et al. 2018; -m are the worst-case logits relative to the true class,
with -m_y = 0) upper-bounds the CE at every point of the box, so minimizing it pushes the
margins' worst case up.

* ``ibp``       m from IBP over B(x);
* ``crown-ibp`` m = β·CROWN-IBP + (1 - β)·IBP over B(x) (Zhang et al. 2020), β scheduled 1 -> 0;
* ``sabr``      IBP over a small box of radius λ·eps around a PGD point, kept inside B(x)
                (Müller et al. 2023);
* ``mtl-ibp``   α·CE(-m_IBP) + (1 - α)·CE at a PGD point (De Palma et al. 2024).

The caller mixes the result with the clean CE by κ (Gowal et al.): κ·CE + (1 - κ)·robust.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks import PGD
from .crown import crown_margin_lower
from .interval import box, ibp_margin_lower

LOSSES = ("ce", "ibp", "crown-ibp", "sabr", "mtl-ibp")
# Attack steps when the config leaves them unset: MTL-IBP's single step, SABR's short PGD.
DEFAULT_ATTACK_STEPS = {"sabr": 8, "mtl-ibp": 1}


def robust_cross_entropy(margin_lower: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE on the worst-case logits -m (m_y = 0): an upper bound of the CE over the box."""
    return F.cross_entropy(-margin_lower, y)


def certified_margin_lower(model, lo, hi, y, beta: float = 0.0, preacts_out: list | None = None) -> torch.Tensor:
    """β·CROWN-IBP + (1 - β)·IBP lower bounds of the margins over [lo, hi]; β = 0 is plain IBP
    (and skips the backward pass)."""
    preacts: list = []
    m_ibp = ibp_margin_lower(model, lo, hi, y, preacts)
    if preacts_out is not None:
        preacts_out.extend(preacts)
    if beta <= 0:
        return m_ibp
    m_crown = crown_margin_lower(model, lo, hi, y, preacts)
    return beta * m_crown + (1 - beta) * m_ibp


def _attack(model, x, y, eps, steps, generator):
    # PGD's default step size (2.5 eps / steps) makes a single step an FGSM step of 2.5 eps from
    # a random start, projected back: MTL-IBP's cheap attack.
    return PGD(eps, steps=steps, restarts=1, generator=generator)(model, x, y)


def sabr_box(x: torch.Tensor, x_adv: torch.Tensor, eps: float, lam: float):
    """The box of radius λ·eps around x_adv, shifted to lie inside B(x) and clipped to [0, 1]."""
    r = lam * eps
    center = torch.min(torch.max(x_adv, x - eps + r), x + eps - r)
    return (center - r).clamp(0, 1), (center + r).clamp(0, 1)


def robust_loss(name: str, model, x, y, eps: float, *, beta: float = 0.0, sabr_lambda: float = 0.4,
                mtl_alpha: float = 0.5, attack_steps: int | None = None, generator=None,
                preacts_out: list | None = None) -> dict:
    """The robust term of loss ``name`` on a batch, with what it logs: {"robust": loss,
    "robust_acc": share of the batch whose bound proves every margin > 0 (a training-time
    certificate of the bound used)}."""
    if name not in LOSSES or name == "ce":
        raise ValueError(f"no robust term for loss {name!r}; known: {', '.join(LOSSES[1:])}")
    steps = DEFAULT_ATTACK_STEPS.get(name, 0) if attack_steps is None else int(attack_steps)
    if name in ("ibp", "crown-ibp"):
        lo, hi = box(x, eps)
        m = certified_margin_lower(model, lo, hi, y, beta if name == "crown-ibp" else 0.0, preacts_out)
        loss = robust_cross_entropy(m, y)
    elif name == "sabr":
        x_adv = _attack(model, x, y, eps, steps, generator)
        lo, hi = sabr_box(x, x_adv, eps, sabr_lambda)
        m = certified_margin_lower(model, lo, hi, y, 0.0, preacts_out)
        loss = robust_cross_entropy(m, y)
    else:  # mtl-ibp
        x_adv = _attack(model, x, y, eps, steps, generator)
        lo, hi = box(x, eps)
        m = certified_margin_lower(model, lo, hi, y, 0.0, preacts_out)
        loss = mtl_alpha * robust_cross_entropy(m, y) + (1 - mtl_alpha) * F.cross_entropy(model(x_adv), y)
    others = m.clone().detach()
    others[torch.arange(len(y)), y] = float("inf")
    return {"robust": loss, "robust_acc": (others.min(1).values > 0).float().mean()}
