"""Base class of the attacks: inputs in [0, 1], normalization lives inside the model."""
from __future__ import annotations

import torch


class Attack:
    """Call with (model, x, y) to get adversarial inputs of x's shape, inside B(x) ∩ [0, 1]."""

    def __init__(self, eps: float):
        self.eps = float(eps)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, model, x, y):
        was_training = model.training
        model.eval()
        try:
            return self.perturb(model, x, y)
        finally:
            model.train(was_training)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0, 1)

    def robust_mask(self, model, x, y) -> torch.Tensor:
        """True where the model is correct on x and on the attack's point."""
        with torch.enable_grad():
            x_adv = self(model, x, y)
        with torch.no_grad():
            return (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
