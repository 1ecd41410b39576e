"""StAdv, the spatially transformed adversarial examples of Xiao et al. 2018, written from the paper.

Each output pixel ``p`` takes its value from the input at ``p + f(p)`` by bilinear interpolation
(``torch.nn.functional.grid_sample``), for a per-pixel flow field ``f``.  The paper minimizes

    L_adv(x_f) + tau * L_flow(f),     L_flow(f) = sum_p sum_{q in N(p)} sqrt(|du_p - du_q|^2 + |dv_p - dv_q|^2 + delta)

(``N(p)``: the four neighbours; the total variation of the flow) with a Carlini-Wagner margin
``L_adv = max(z_y - max_{j != y} z_j, -kappa)`` and L-BFGS.  Laidlaw et al. 2021 (the code behind
the paper's Table 1 column "Spatial") add an l_inf bound on the flow: 0.05 in grid_sample's
normalized coordinates, where the image spans [-1, 1] (0.05 is 0.8 pixel on a 32-pixel side), and
optimize with Adam (lr 0.01, 100 steps), clipping the flow to the bound after every step.  Both
are here: ``optimizer="adam"`` (the default, Laidlaw et al.'s setting) projects by clipping;
``optimizer="lbfgs"`` (Xiao et al.'s) writes ``f = bound * tanh(w)`` so the flow never leaves the
bound.  ``bound=None`` drops it (Xiao et al.'s unbounded flow; then L-BFGS optimizes ``f`` itself).

Every returned point is ``grid_sample(x, identity + f)`` with ``|f|_inf <= bound``, so it lies in
[0, 1] (a convex combination of pixels).  ``last_flow`` holds each returned point's flow (N, 2, H, W;
x then y), ``last_distance`` its ``|f|_inf`` in normalized units (times side/2 for pixels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import HamverifyError, __version__
from .base import Attack

OPTIMIZERS = ("adam", "lbfgs")
# Laidlaw et al. 2021's StAdv threat model: l_inf bound 0.05 on the normalized flow.
DEFAULT_BOUND = 0.05


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = float("inf")) -> torch.Tensor:
    """Per-sample Carlini-Wagner margin ``max(z_y - max_{j != y} z_j, -kappa)`` (< 0: misclassified)."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    margin = true - others
    return margin.clamp(min=-kappa) if kappa != float("inf") else margin


def identity_grid(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 2) sampling grid of the identity (pixel centres, ``align_corners=False``)."""
    n, _, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=x.dtype, device=x.device)
    return F.affine_grid(theta.expand(n, 2, 3), (n, 1, h, w), align_corners=False)


def apply_flow(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``x`` resampled at ``p + flow(p)``; ``flow`` (N, 2, H, W) in normalized units (x then y)."""
    grid = identity_grid(x) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def flow_loss(flow: torch.Tensor, delta: float = 1e-8) -> torch.Tensor:
    """Xiao et al.'s L_flow per sample: over each pixel and its four neighbours (inside the image),
    sqrt of the squared flow differences (u and v) plus ``delta``, summed (each pair counted twice)."""
    dh = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    dw = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    term_h = (dh.pow(2).sum(1) + delta).sqrt().flatten(1).sum(1)
    term_w = (dw.pow(2).sum(1) + delta).sqrt().flatten(1).sum(1)
    return 2 * (term_h + term_w)


class StAdv(Attack):
    """Flow-field attack (inputs in [0, 1]).

    Arguments:
        bound: l_inf bound of the flow in normalized grid units (image side = 2); None: unbounded.
        steps: Adam steps, or L-BFGS iterations.
        tau: weight of the flow loss (Laidlaw et al.: 0.0025 / bound, i.e. 0.05 at bound 0.05;
            Xiao et al.: 0.05).  None: 0.0025 / bound (0.05 when unbounded).
        lr: Adam's step size (0.01) or L-BFGS's (1.0).
        optimizer: "adam" (clip to the bound after each step) or "lbfgs" (flow = bound * tanh(w)).
        kappa: the margin loss stops rewarding below -kappa (inf: never, as Laidlaw et al.).

    Returns per sample the iterate with the lowest margin (a misclassified one whenever any was).
    """

    def __init__(self, bound: float | None = DEFAULT_BOUND, steps: int = 100, tau: float | None = None,
                 lr: float | None = None, optimizer: str = "adam", kappa: float = float("inf")):
        if bound is not None and not bound >= 0:
            raise HamverifyError(f"StAdv flow bound must be >= 0, got {bound}")
        if optimizer not in OPTIMIZERS:
            raise HamverifyError(f"unknown StAdv optimizer {optimizer!r}; use {' or '.join(OPTIMIZERS)}")
        if int(steps) < 1:
            raise HamverifyError(f"StAdv steps must be >= 1, got {steps}")
        super().__init__(float("inf") if bound is None else bound)
        self.bound = None if bound is None else float(bound)
        self.steps, self.optimizer, self.kappa = int(steps), optimizer, float(kappa)
        self.tau = (0.0025 / self.bound if self.bound else 0.05) if tau is None else float(tau)
        self.lr = (0.01 if optimizer == "adam" else 1.0) if lr is None else float(lr)
        self.last_distance: torch.Tensor | None = None
        self.last_flow: torch.Tensor | None = None

    def implementation(self) -> dict:
        return {"name": "hamverify", "version": __version__, "class": "hamverify.attacks.stadv.StAdv",
                "paper": "Xiao et al. 2018 (flow field, bilinear resampling, CW margin + tau * flow TV)",
                "threat_model": "l_inf bound on the flow, normalized grid units (image side = 2), "
                                "as Laidlaw et al. 2021",
                "bound": self.bound, "steps": self.steps, "tau": self.tau, "lr": self.lr,
                "optimizer": self.optimizer, "kappa": self.kappa, "padding": "border"}

    def describe(self) -> str:
        bound = "unbounded" if self.bound is None else f"flow <= {self.bound:g}"
        return f"StAdv {bound}, {self.optimizer} {self.steps} steps, tau {self.tau:g} (hamverify {__version__})"

    def distance_unit(self) -> str:
        return "max |flow| in normalized grid units (image side = 2)"

    def _flow(self, w: torch.Tensor) -> torch.Tensor:
        if self.optimizer == "lbfgs" and self.bound is not None:
            return self.bound * torch.tanh(w)
        return w

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = len(x)
        x = x.detach()
        if n == 0 or self.bound == 0:
            self.last_distance = torch.zeros(n, dtype=x.dtype, device=x.device)
            self.last_flow = torch.zeros(n, 2, *x.shape[2:], dtype=x.dtype, device=x.device)
            return x.clone()
        w = torch.zeros(n, 2, *x.shape[2:], dtype=x.dtype, device=x.device, requires_grad=True)
        best_x, best_m = x.clone(), torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        best_f = torch.zeros(n, 2, *x.shape[2:], dtype=x.dtype, device=x.device)

        def objective():
            flow = self._flow(w)
            x_adv = apply_flow(x, flow)
            margin = margin_loss(model(x_adv), y, self.kappa)
            return (margin + self.tau * flow_loss(flow)).sum(), margin.detach(), x_adv.detach(), flow.detach()

        def keep(margin, x_adv, flow):
            better = margin < best_m
            best_m[better] = margin[better]
            best_x[better] = x_adv[better]
            best_f[better] = flow[better]

        with torch.enable_grad():
            if self.optimizer == "adam":
                opt = torch.optim.Adam([w], lr=self.lr)
                for _ in range(self.steps):
                    loss, margin, x_adv, flow = objective()
                    keep(margin, x_adv, flow)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if self.bound is not None:
                        with torch.no_grad():
                            w.clamp_(-self.bound, self.bound)
            else:
                opt = torch.optim.LBFGS([w], lr=self.lr, max_iter=self.steps, history_size=10,
                                        line_search_fn="strong_wolfe")

                def closure():
                    opt.zero_grad()
                    loss, margin, x_adv, flow = objective()
                    keep(margin, x_adv, flow)
                    loss.backward()
                    return loss
                opt.step(closure)
            with torch.no_grad():
                _, margin, x_adv, flow = objective()
                keep(margin, x_adv, flow)
        self.last_flow = best_f
        self.last_distance = best_f.abs().flatten(1).amax(1)
        return best_x
