"""LPA, the Lagrangian perceptual attack of Laidlaw et al. 2021 ("Perceptual adversarial
robustness"), written from the paper, with a *self-bound* LPIPS distance.

The neural perceptual threat model bounds ``d(x, x_adv) <= bound`` for an LPIPS distance d, the
l_2 distance between normalized feature maps of a network.  The paper's Table 1 used an AlexNet
trained on CIFAR-10 as that network; its weights cannot be fetched here, so by default d uses the
attacked model's own features ("self-bound", as Laidlaw et al.'s PAT-self): every ReLU layer's
activation vector (``forward_with_preacts``), each scaled to unit l_2 norm,

    d(x, x') = sqrt( sum_l || a_l(x) / |a_l(x)| - a_l(x') / |a_l(x')| ||^2 ).

(LPIPS normalizes over the channels at each location and averages over locations; the layer-wise
normalization here works for convolutional and dense layers alike.)  A self-bound distance depends
on the model: a robust model's features move less, so the same bound allows larger pixel changes,
and the figures are not comparable with the paper's NPTM column.  ``features`` takes any other
feature network (a callable returning a list of (N, ...) tensors), e.g. a local LPIPS network.

LPA maximizes ``min(max_{j != y} z_j - z_y, kappa) - lam * max(0, d(x_adv, x) - bound)`` by
normalized gradient steps whose LPIPS length (estimated by a finite difference of size ``h``)
decays from ``bound`` to ``bound / 10``; ``lam`` starts at ``lam`` and is multiplied by 10, for the
samples still outside the bound, ``lambda_rounds - 1`` times.  The result is projected into the
bound by bisection on the segment from x (LPA's projection step; the paper uses Newton's method),
so every returned point has ``d <= bound`` and lies in [0, 1].  ``last_distance`` holds each d.
"""
from __future__ import annotations

import torch

from .. import HamverifyError, __version__
from .base import Attack
from .stadv import margin_loss

DEFAULT_BOUND = 0.5  # Laidlaw et al.'s CIFAR-10 LPIPS bound (for their AlexNet distance)
_TINY = 1e-12


def self_features(model):
    """The attacked model's ReLU activations, each layer scaled to unit l_2 norm per sample."""
    if not hasattr(model, "forward_with_preacts"):
        raise HamverifyError("lpa's self-bound LPIPS reads the model's hidden activations: it needs a hamverify "
                             "checkpoint (a model with forward_with_preacts), not an ONNX file")

    def features(x):
        _, preacts = model.forward_with_preacts(x)
        acts = [torch.relu(p.flatten(1)) for p in preacts]
        return [a / (a.norm(dim=1, keepdim=True) + _TINY) for a in acts]
    return features


def checkpoint_features(path):
    """The LPIPS network of a local weights file: the ReLU activations of the hamverify checkpoint
    at ``path`` (e.g. a network trained on the same data, in the role of the paper's AlexNet),
    each layer l_2-normalized as ``self_features``."""
    from ..models import load_checkpoint
    model, _meta = load_checkpoint(path)
    features = self_features(model.float().eval())
    features.description = f"local weights file {path}: its ReLU activations, each layer l_2-normalized"
    return features


def lpips_network_name(features) -> str:
    """What an LPIPS feature network is, for outputs: self-bound (None), a local file, or a callable."""
    if features is None:
        return "self-bound: the attacked model's own ReLU activations, each layer l_2-normalized"
    if getattr(features, "description", None):
        return features.description
    return f"given feature network {getattr(features, '__name__', type(features).__name__)}"


def feature_distance(fa, fb) -> torch.Tensor:
    """Per-sample l_2 distance between two lists of feature tensors."""
    return torch.sqrt(sum((a - b).flatten(1).pow(2).sum(1) for a, b in zip(fa, fb)) + _TINY)


class LPIPSAttack(Attack):
    """What LPA and PPGD share: a ball of radius ``bound`` in the LPIPS distance of ``features``
    (None: self-bound, the attacked model's own activations), ``steps``, a seeded ``generator``
    for the random start, ``last_distance`` (each returned point's distance) and the outputs
    naming the LPIPS network.  Subclasses set ``title`` and ``paper`` and add ``settings()``."""
    title = "LPIPS attack"
    paper = ""

    def __init__(self, bound: float, steps: int, features=None, generator: torch.Generator | None = None):
        if not bound >= 0:
            raise HamverifyError(f"{self.title} bound must be >= 0, got {bound}")
        super().__init__(bound)
        self.bound, self.steps = float(bound), int(steps)
        self.features, self.generator = features, generator
        self.last_distance: torch.Tensor | None = None

    @property
    def lpips_network(self) -> str:
        return lpips_network_name(self.features)

    def settings(self) -> dict:
        return {}

    def implementation(self) -> dict:
        cls = type(self)
        return {"name": "hamverify", "version": __version__, "class": f"{cls.__module__}.{cls.__name__}",
                "paper": self.paper, "lpips_network": self.lpips_network,
                "threat_model": "LPIPS distance <= bound (not the paper's AlexNet LPIPS)",
                "bound": self.bound, "steps": self.steps, **self.settings()}

    def describe(self) -> str:
        lpips = "self-bound LPIPS" if self.features is None else "LPIPS of a given network"
        return f"{self.title} {lpips} <= {self.bound:g}, {self.steps} steps (hamverify {__version__})"

    def distance_unit(self) -> str:
        return f"LPIPS distance ({self.lpips_network})"

    def _nothing_to_do(self, x: torch.Tensor) -> bool:
        """True (with last_distance all 0) for no inputs or a zero bound: then x is the answer."""
        if len(x) and self.bound != 0:
            return False
        self.last_distance = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        return True

    def _begin(self, model, x: torch.Tensor):
        """``(feats, f0, start)``: the feature network, x's features and the small random start
        (x + 0.01 x Gaussian noise from the generator, as Laidlaw et al., clipped into [0, 1])."""
        feats = self.features or self_features(model)
        with torch.no_grad():
            f0 = [f.detach() for f in feats(x)]
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
        return feats, f0, (x + 0.01 * noise).clamp(0, 1)


class LPA(LPIPSAttack):
    """Lagrangian perceptual attack (inputs in [0, 1]).

    Arguments:
        bound: LPIPS bound (in the chosen feature network's distance).
        steps: gradient steps in all.
        lambda_rounds: rounds of the penalty weight (x10 each for samples outside the bound).
        lam: the penalty's starting weight.
        kappa: the margin objective stops rewarding above kappa.
        h: finite-difference step (pixel l_2) that measures a step's LPIPS length.
        projection_steps: bisection steps of the final projection.
        features: None (self-bound: the attacked model's activations) or a callable x -> [tensors].
        generator: torch.Generator of the small random start (0.01 x Gaussian, as the paper).
    """

    title = "LPA"
    paper = ("Laidlaw et al. 2021 (LPA: Lagrangian penalty on the LPIPS distance, normalized steps of decaying "
             "LPIPS length, projection)")

    def __init__(self, bound: float = DEFAULT_BOUND, steps: int = 40, lambda_rounds: int = 5, lam: float = 10.0,
                 kappa: float = 1.0, h: float = 0.1, projection_steps: int = 10, features=None,
                 generator: torch.Generator | None = None):
        if int(steps) < 1 or int(lambda_rounds) < 1:
            raise HamverifyError(f"LPA steps and lambda rounds must be >= 1, got {steps}, {lambda_rounds}")
        super().__init__(bound, steps, features, generator)
        self.lambda_rounds = int(lambda_rounds)
        self.lam, self.kappa, self.h, self.projection_steps = float(lam), float(kappa), float(h), int(projection_steps)

    def settings(self) -> dict:
        return {"lambda_rounds": self.lambda_rounds, "lam": self.lam, "kappa": self.kappa, "h": self.h,
                "projection": f"bisection, {self.projection_steps} steps"}

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        n = len(x)
        if self._nothing_to_do(x):
            return x.clone()
        feats, f0, x_adv = self._begin(model, x)
        lam = torch.full((n,), self.lam, dtype=x.dtype, device=x.device)
        per_round = max(1, -(-self.steps // self.lambda_rounds))
        shape = (n,) + (1,) * (x.dim() - 1)
        for t in range(self.steps):
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                fa = feats(x_adv)
                dist = feature_distance(fa, f0)
                gain = (-margin_loss(model(x_adv), y)).clamp(max=self.kappa)
                objective = gain - lam * torch.relu(dist - self.bound)
                grad, = torch.autograd.grad(objective.sum(), x_adv)
            with torch.no_grad():
                direction = grad / (grad.flatten(1).norm(dim=1).view(shape) + _TINY)
                fa = [f.detach() for f in fa]
                per_unit = feature_distance(feats((x_adv + self.h * direction).clamp(0, 1)), fa) / self.h
                eta = self.bound * 0.1 ** (t / self.steps)
                x_adv = (x_adv + (eta / per_unit.clamp(min=_TINY)).view(shape) * direction).clamp(0, 1)
                if (t + 1) % per_round == 0 and t + 1 < self.steps:
                    lam = torch.where(dist.detach() > self.bound, lam * 10, lam)
        with torch.no_grad():
            x_adv, dist = self._project(feats, x, x_adv.detach(), f0)
        self.last_distance = dist
        return x_adv

    def _project(self, feats, x, x_adv, f0):
        return project_on_segment(feats, x, x_adv, f0, self.bound, self.projection_steps)


def project_on_segment(feats, x, x_adv, f0, bound: float, steps: int = 10):
    """``(point, d)``: the point of the segment x -> x_adv farthest along it with d <= bound
    (bisection, ``steps`` halvings; x itself, d = 0, when no tried point is inside)."""
    shape = (len(x),) + (1,) * (x.dim() - 1)
    dist = feature_distance(feats(x_adv), f0)
    inside = dist <= bound
    lo = torch.where(inside, torch.ones_like(dist), torch.zeros_like(dist))
    hi = torch.ones_like(dist)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = feature_distance(feats(x + mid.view(shape) * (x_adv - x)), f0) <= bound
        lo = torch.where(ok & ~inside, mid, lo)
        hi = torch.where(~ok & ~inside, mid, hi)
    point = x + lo.view(shape) * (x_adv - x)
    return point, feature_distance(feats(point), f0)
