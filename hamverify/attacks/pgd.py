"""Projected gradient descent in l_inf (Madry et al. 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Attack


class PGD(Attack):
    """l_inf PGD with random start and restarts.

    Arguments:
        eps: radius of the l_inf ball (pixel units).
        steps: gradient steps per restart.
        restarts: independent random starts; a sample counts as broken if any restart breaks it.
        step_size: defaults to 2.5 * eps / steps (Engstrom et al.'s setting, docs/METHOD.md §1).
        generator: torch.Generator for the random starts (seeded runs).

    Returns, per sample, the first misclassified point found, else the last restart's point.
    """

    def __init__(self, eps: float = 8 / 255, steps: int = 20, restarts: int = 10,
                 step_size: float | None = None, random_start: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__(eps)
        self.steps, self.restarts, self.random_start = int(steps), int(restarts), random_start
        self.step_size = 2.5 * self.eps / max(self.steps, 1) if step_size is None else float(step_size)
        self.generator = generator

    def _start(self, x):
        """A uniform random point of the ball around x (then into [0, 1])."""
        noise = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return self.project(x + (noise * 2 - 1) * self.eps, x)

    def _direction(self, grad):
        """The steepest-ascent direction of the norm's unit ball: the sign, for l_inf."""
        return grad.sign()

    def _one_restart(self, model, x, y):
        x_adv = self._start(x) if self.random_start else x.clone()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():  # callers may be inside no_grad (training's initial terms)
                loss = F.cross_entropy(model(x_adv), y)
                grad, = torch.autograd.grad(loss, x_adv)
            x_adv = self.project(x_adv.detach() + self.step_size * self._direction(grad), x)
        return x_adv.detach()

    def perturb(self, model, x, y):
        best = x.clone()
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(max(self.restarts, 1)):
            todo = ~broken
            if not todo.any():
                break
            x_adv = self._one_restart(model, x[todo], y[todo])
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y[todo]
            idx = todo.nonzero().squeeze(1)
            best[idx] = x_adv
            broken[idx[wrong]] = True
        return best
