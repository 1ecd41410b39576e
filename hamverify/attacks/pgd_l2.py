"""Projected gradient descent in l_2 (Madry et al. 2017), the l_2 counterpart of pgd.PGD."""
from __future__ import annotations

import torch

from .pgd import PGD

_TINY = 1e-12


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample l_2 norm, shaped (N, 1, ..., 1) to broadcast against t."""
    n = t.reshape(len(t), -1).norm(dim=1)
    return n.view(-1, *([1] * (t.dim() - 1)))


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """x_adv scaled back into the l_2 ball of radius eps around x, then clipped into [0, 1].

    The clip only moves entries towards x (x lies in [0, 1]), so the point stays in the ball:
    a feasible point of B_2(x) ∩ [0, 1], not always the Euclidean projection onto it."""
    delta = x_adv - x
    scale = torch.clamp(eps / torch.clamp(_flat_norm(delta), min=_TINY), max=1.0)
    return (x + delta * scale).clamp(0, 1)


class PGDL2(PGD):
    """l_2 PGD with random start and restarts: ``PGD`` with the l_2 ball's start, step and projection.

    Arguments:
        eps: radius of the l_2 ball (pixel units, over all C*H*W entries).
        steps: gradient steps per restart.
        restarts: independent random starts; a sample counts as broken if any restart breaks it.
        step_size: defaults to 2.5 * eps / steps (Engstrom et al.'s setting, as for l_inf PGD).
        generator: torch.Generator for the random starts (seeded runs).

    A step moves ``step_size`` along the l_2-normalized gradient of the cross-entropy; every iterate
    goes through ``project_l2`` (into the ball, then into [0, 1]).

    Returns, per sample, the first misclassified point found, else the last restart's point.
    """

    def __init__(self, eps: float = 0.5, steps: int = 20, restarts: int = 10,
                 step_size: float | None = None, random_start: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__(eps, steps, restarts, step_size, random_start, generator)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return project_l2(x_adv, x, self.eps)

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        """A point uniform in the l_2 ball around x (Gaussian direction, radius eps * u^(1/d))."""
        direction = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        direction = direction / torch.clamp(_flat_norm(direction), min=_TINY)
        d = x[0].numel()
        u = torch.rand((len(x),) + (1,) * (x.dim() - 1), generator=self.generator, device=x.device, dtype=x.dtype)
        return self.project(x + direction * self.eps * u.pow(1.0 / d), x)

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / torch.clamp(_flat_norm(grad), min=_TINY)
