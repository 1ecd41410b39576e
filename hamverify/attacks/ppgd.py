"""PPGD, the perceptual projected gradient descent of Laidlaw et al. 2021 ("Perceptual adversarial
robustness: defense against unseen threat models"), written from the paper, with the self-bound
LPIPS distance of ``hamverify.attacks.lpa``.

The neural perceptual threat model allows every x_adv with ``d(x, x_adv) = |phi(x) - phi(x_adv)|_2
<= bound``, phi the normalized features of an LPIPS network (here by default the attacked model's
own ReLU activations: see lpa.py).  PPGD is projected gradient ascent in that distance:

* **step.** Around the current point x~, phi(x~ + delta) ~ phi(x~) + J delta (J: the Jacobian of
  phi at x~), so a step of LPIPS length eta solves ``max_delta grad f . delta  s.t.  |J delta|_2 <=
  eta``, whose solution is ``delta = eta * z / |J z|_2`` with ``(J^T J) z = grad f``.  The linear
  system is solved approximately by a few conjugate-gradient iterations (from z = 0), each one
  Jacobian-vector and one vector-Jacobian product (two backward passes; no J is ever formed).
  f is the margin ``max_{j != y} z_j - z_y`` (the loss Laidlaw et al. use for their attacks).
* **projection.** When the step leaves the ball, Newton's method on the scalar constraint
  ``d(x, x~) = bound`` moves x~ back along the gradient of d:
  ``x~ <- x~ - (d - bound) * grad d / |grad d|^2``, a few times; whatever is still outside then
  goes through lpa's bisection on the segment x -> x~, so every iterate lies inside the ball and
  in [0, 1].

Per sample the returned point is the iterate with the lowest margin (a misclassified one whenever
any iterate was).  The step length ``eta`` is a hyperparameter the paper leaves to the user; the
default here, ``2.5 * bound / steps``, is the rule hamverify's l_inf / l_2 PGD use (so the
iterates can cross the ball 2.5 times).  ``last_distance`` holds each returned point's d.
"""
from __future__ import annotations

import torch

from .. import HamverifyError
from .lpa import DEFAULT_BOUND, LPIPSAttack, feature_distance, project_on_segment
from .stadv import margin_loss

_TINY = 1e-12


def _flat(features) -> torch.Tensor:
    """A list of (N, ...) feature tensors as one (N, F) matrix."""
    return torch.cat([f.flatten(1) for f in features], 1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product of two (N, ...) tensors."""
    return (a * b).flatten(1).sum(1)


class PPGD(LPIPSAttack):
    """Perceptual projected gradient descent (inputs in [0, 1]).

    Arguments:
        bound: LPIPS bound (in the chosen feature network's distance).
        steps: gradient steps.
        step_size: LPIPS length eta of a step (None: 2.5 * bound / steps).
        cg_steps: conjugate-gradient iterations for (J^T J) z = grad f.
        newton_steps: Newton iterations of the projection (then bisection for what is still outside).
        projection_steps: bisection steps of that fallback.
        features: None (self-bound: the attacked model's activations) or a callable x -> [tensors].
        generator: torch.Generator of the small random start (0.01 x Gaussian, projected into the bound).
    """

    title = "PPGD"
    paper = ("Laidlaw et al. 2021 (PPGD: steps of fixed LPIPS length along (J^T J)^-1 grad by conjugate gradient, "
             "Newton projection onto the LPIPS ball)")

    def __init__(self, bound: float = DEFAULT_BOUND, steps: int = 40, step_size: float | None = None,
                 cg_steps: int = 5, newton_steps: int = 5, projection_steps: int = 10, features=None,
                 generator: torch.Generator | None = None):
        if int(steps) < 1 or int(cg_steps) < 1:
            raise HamverifyError(f"PPGD steps and CG steps must be >= 1, got {steps}, {cg_steps}")
        if step_size is not None and not step_size > 0:
            raise HamverifyError(f"PPGD step size must be > 0, got {step_size}")
        super().__init__(bound, steps, features, generator)
        self.cg_steps = int(cg_steps)
        self.step_size = 2.5 * self.bound / self.steps if step_size is None else float(step_size)
        self.newton_steps, self.projection_steps = int(newton_steps), int(projection_steps)

    def settings(self) -> dict:
        return {"step_size": self.step_size, "cg_steps": self.cg_steps,
                "projection": f"Newton, {self.newton_steps} steps, then bisection, {self.projection_steps} steps"}

    # -- the step ----------------------------------------------------------------------------
    def _step(self, model, feats, x_adv, y):
        """``(delta of LPIPS length ~ eta, margin at x_adv)``: the linearized steepest-ascent step."""
        shape = (len(x_adv),) + (1,) * (x_adv.dim() - 1)
        xa = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            margin = margin_loss(model(xa), y)
            grad, = torch.autograd.grad((-margin).sum(), xa)
            phi = _flat(feats(xa))
            # J^T u is linear in u; differentiating it against u gives J p (the double-backward trick).
            u = torch.zeros_like(phi, requires_grad=True)
            jt_u, = torch.autograd.grad(phi, xa, grad_outputs=u, create_graph=True)

            def jvp(p):
                out, = torch.autograd.grad(jt_u, u, grad_outputs=p, retain_graph=True)
                return out

            def jtj(p):
                out, = torch.autograd.grad(phi, xa, grad_outputs=jvp(p), retain_graph=True)
                return out

            z = torch.zeros_like(grad)
            r = grad.clone()
            p = r.clone()
            rr = _dot(r, r)
            for _ in range(self.cg_steps):
                ap = jtj(p)
                alpha = rr / _dot(p, ap).clamp(min=_TINY)
                z = z + alpha.view(shape) * p
                r = r - alpha.view(shape) * ap
                rr_new = _dot(r, r)
                p = r + (rr_new / rr.clamp(min=_TINY)).view(shape) * p
                rr = rr_new
            length = jvp(z).norm(dim=1)
        # No usable curvature (dead features): fall back to the plain gradient direction.
        flat = length <= _TINY
        if flat.any():
            z[flat] = grad[flat]
            length = torch.where(flat, grad.flatten(1).norm(dim=1), length)
        return (self.step_size / length.clamp(min=_TINY)).view(shape) * z.detach(), margin.detach()

    # -- the projection ----------------------------------------------------------------------
    def _project(self, feats, x, x_adv, f0):
        """``(point, d)`` inside the ball: Newton on d(x, .) = bound along grad d, then bisection."""
        shape = (len(x),) + (1,) * (x.dim() - 1)
        for _ in range(self.newton_steps):
            xa = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                dist = feature_distance(feats(xa), f0)
                excess = dist - self.bound
                if not (excess > 0).any():
                    break
                grad, = torch.autograd.grad(dist.sum(), xa)
            scale = (excess.clamp(min=0) / grad.flatten(1).pow(2).sum(1).clamp(min=_TINY)).view(shape)
            x_adv = (xa.detach() - scale * grad).clamp(0, 1)
        with torch.no_grad():
            return project_on_segment(feats, x, x_adv.detach(), f0, self.bound, self.projection_steps)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        n = len(x)
        if self._nothing_to_do(x):
            return x.clone()
        feats, f0, start = self._begin(model, x)
        x_adv, dist = self._project(feats, x, start, f0)
        best_x, best_d = x_adv.clone(), dist.clone()
        best_m = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)

        def keep(margin):  # the margin of the current (projected) iterate
            better = margin < best_m
            best_m[better], best_x[better], best_d[better] = margin[better], x_adv[better], dist[better]

        for _ in range(self.steps):
            delta, margin = self._step(model, feats, x_adv, y)
            keep(margin)
            x_adv, dist = self._project(feats, x, (x_adv + delta).clamp(0, 1), f0)
        with torch.no_grad():
            keep(margin_loss(model(x_adv), y))
        self.last_distance = best_d
        return best_x
