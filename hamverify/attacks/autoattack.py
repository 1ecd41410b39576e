"""AutoAttack (Croce & Hein 2020) through the torchattacks package, an optional dependency.

torchattacks 3.5.1 declares torchvision and requests as requirements but imports neither; pip
would replace the CPU torch with a multi-GB CUDA build to satisfy torchvision, so it is installed
without its declared dependencies: ``pip install --no-deps torchattacks==3.5.1`` (``make attacks``).

torchattacks' ``version="standard"`` runs APGD-CE, APGD-T (9 target classes), FAB-T (9 target
classes) and Square (5000 queries), one restart each, on the points the previous ones left
correct.  Its APGD and FAB run 10 iterations by default, where the reference AutoAttack uses 100:
``steps`` sets them (``steps=100`` gives the reference budget); ``implementation()`` records which
budgets were used, and every output of ``hamverify attack`` names torchattacks and its version.
"""
from __future__ import annotations

import contextlib
import io

import torch

from .. import HamverifyError
from .base import Attack
from .pgd_l2 import project_l2

INSTALL_HINT = "pip install --no-deps torchattacks==3.5.1"
NORMS = {"linf": "Linf", "l2": "L2"}
VERSIONS = ("standard", "plus", "rand")


def import_torchattacks():
    """The torchattacks module, or a one-line HamverifyError with the install command."""
    try:
        import torchattacks
    except ImportError:
        raise HamverifyError(f"AutoAttack needs torchattacks, which is not installed: {INSTALL_HINT}") from None
    return torchattacks


def canonical_norm(norm: str) -> str:
    """'Linf' / 'linf' / 'L2' / 'l2' -> torchattacks' spelling ('Linf' or 'L2')."""
    key = str(norm).lower()
    if key not in NORMS:
        raise HamverifyError(f"unknown norm {norm!r}: use Linf or L2")
    return NORMS[key]


class AutoAttack(Attack):
    """torchattacks.AutoAttack behind the hamverify Attack interface (inputs in [0, 1]).

    Arguments:
        eps: radius of the ball (pixel units; for L2 over all C*H*W entries).
        norm: "Linf" or "L2".
        version: torchattacks' AutoAttack version ("standard": APGD-CE, APGD-T, FAB-T, Square).
        seed: seed of every component (torchattacks reseeds torch's global generator with it; the
            caller's generator state is restored afterwards).
        steps: iterations of APGD-CE, APGD-T and FAB-T (None: torchattacks' defaults, 10).

    The returned points are put back into B(x) ∩ [0, 1] (a no-op up to float rounding), so a
    misclassified returned point is an adversarial example of the stated radius.
    """

    def __init__(self, eps: float = 8 / 255, norm: str = "Linf", version: str = "standard", seed: int = 0,
                 steps: int | None = None):
        super().__init__(eps)
        self.norm = canonical_norm(norm)
        if version not in VERSIONS:
            raise HamverifyError(f"unknown AutoAttack version {version!r}; torchattacks has {', '.join(VERSIONS)}")
        if steps is not None and int(steps) < 1:
            raise HamverifyError(f"AutoAttack steps must be >= 1, got {steps}")
        self.version, self.seed = version, int(seed)
        self.steps = None if steps is None else int(steps)
        self.components: list[dict] = []  # filled by the first run: what torchattacks actually ran

    def implementation(self) -> dict:
        """Which code ran: torchattacks, its version, the AutoAttack version and component budgets."""
        ta = import_torchattacks()
        return {"name": "torchattacks", "version": str(getattr(ta, "__version__", "unknown")),
                "class": "torchattacks.AutoAttack", "autoattack_version": self.version, "norm": self.norm,
                "seed": self.seed, "steps": self.steps if self.steps is not None else "torchattacks default",
                "components": list(self.components)}

    def describe(self) -> str:
        ta = import_torchattacks()
        steps = f", {self.steps} steps" if self.steps is not None else ""
        return (f"AutoAttack {self.version} {self.norm}{steps} "
                f"(torchattacks {getattr(ta, '__version__', 'unknown')})")

    def _build(self, model, n_classes: int):
        ta = import_torchattacks()
        # torchattacks prints (on stdout) when a model has no parameters to take the device from.
        with contextlib.redirect_stdout(io.StringIO()):
            aa = ta.AutoAttack(model, norm=self.norm, eps=self.eps, version=self.version, n_classes=n_classes,
                               seed=self.seed, verbose=False)
        parts = getattr(getattr(aa, "_autoattack", None), "attacks", [])
        if self.steps is not None:
            for part in parts:
                if hasattr(part, "steps"):
                    part.steps = self.steps
        self.components = [_component(p) for p in parts]
        return aa

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if len(x) == 0 or self.eps == 0:
            return x.clone()
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
        aa = self._build(model, n_classes)
        if getattr(aa, "device", None) is None:
            aa.set_device(x.device)
        with torch.random.fork_rng(devices=[]):
            x_adv = aa(x.detach(), y.detach()).detach()
        if self.norm == "Linf":
            return self.project(x_adv, x)
        return project_l2(x_adv, x, self.eps)


def _component(part) -> dict:
    """Name and budget of one torchattacks component (attribute names of torchattacks 3.5.1)."""
    out = {"name": getattr(part, "attack", type(part).__name__)}
    for key in ("loss", "steps", "n_queries", "n_restarts", "n_target_classes", "multi_targeted"):
        value = getattr(part, key, None)
        if value is not None and not (key == "n_target_classes" and not _is_targeted(part)):
            out[key] = value
    return out


def _is_targeted(part) -> bool:
    return type(part).__name__ == "APGDT" or bool(getattr(part, "multi_targeted", False))
