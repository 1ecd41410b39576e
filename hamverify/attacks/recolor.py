"""ReColorAdv (Laidlaw & Feizi 2019, "Functional adversarial attacks"), written from the paper.

The authors' package ``recoloradv`` 0.0.1 installs (``pip install --no-deps recoloradv``) but its
perturbation, colour-space and loss modules import torchvision at module level (and its attack
module ``six``); the registry's torchvision is a CUDA build that does not import beside the CPU
torch, so the package cannot run here and this is hamverify's own code.

The threat model is *functional*: one colour function f per image, applied to every pixel,
``x_adv(p) = rgb(c(p) + f(c(p)))`` with ``c`` the pixel's colour in a colour space scaled to the
unit cube.  f is piecewise trilinear: offsets on a regular grid over the cube (resolution
16 x 32 x 32 in CIELUV, as the paper's CIFAR-10 setting), interpolated by
``torch.nn.functional.grid_sample``; every offset is bounded in l_inf (0.06, the paper's and
Laidlaw et al. 2021's bound).  The loss is the Carlini-Wagner margin plus ``lam`` times the
paper's smoothness term, the sum over neighbouring grid points of the l_2 norm of the difference
of their offsets; Adam (lr 0.001, 100 steps) from f = 0, clipping the offsets to the bound after
every step (Laidlaw et al.'s settings; lam 0.0036 / bound as their ``ReColorAdvAttack``).

CIELUV (D65, sRGB primaries) is scaled as L/100, (u + 100)/200, (v + 100)/200.  So that f = 0
returns x exactly despite the round trip's float error, the point is
``clip(x + rgb(c + f(c)) - rgb(c), 0, 1)``, still a function of each pixel's colour alone.
Grey images (one channel) get a piecewise-linear function of the intensity (32 knots).
``last_distance`` holds each sample's largest |offset|.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import HamverifyError, __version__
from .base import Attack
from .stadv import margin_loss

COLOR_SPACES = ("cieluv", "rgb")
DEFAULT_BOUND = 0.06
DEFAULT_RESOLUTION = (16, 32, 32)
GREY_RESOLUTION = 32

# sRGB (linear) -> CIE XYZ, D65 white.
_RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
_WHITE = (0.95047, 1.0, 1.08883)
_TINY = 1e-10


def _white_uv():
    xn, yn, zn = _WHITE
    d = xn + 15 * yn + 3 * zn
    return 4 * xn / d, 9 * yn / d


def rgb_to_cieluv(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> CIELUV scaled (L/100, (u+100)/200, (v+100)/200)."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    x, y, z = torch.einsum("kr,nrhw->nkhw", m, lin).unbind(1)
    un, vn = _white_uv()
    t = y / _WHITE[1]
    L = torch.where(t > (6 / 29) ** 3, 116 * t.clamp(min=_TINY) ** (1 / 3) - 16, (29 / 3) ** 3 * t)
    d = x + 15 * y + 3 * z + _TINY
    u = 13 * L * (4 * x / d - un)
    v = 13 * L * (9 * y / d - vn)
    return torch.stack([L / 100, (u + 100) / 200, (v + 100) / 200], 1)


def cieluv_to_rgb(luv: torch.Tensor) -> torch.Tensor:
    """The inverse of ``rgb_to_cieluv`` (not clipped: colours outside the sRGB gamut leave [0, 1])."""
    L = luv[:, 0] * 100
    u = luv[:, 1] * 200 - 100
    v = luv[:, 2] * 200 - 100
    un, vn = _white_uv()
    Ls = L.clamp(min=_TINY)
    up = u / (13 * Ls) + un
    vp = (v / (13 * Ls) + vn).clamp(min=_TINY)
    y = torch.where(L > 8, _WHITE[1] * ((L + 16) / 116) ** 3, _WHITE[1] * L * (3 / 29) ** 3)
    x = y * 9 * up / (4 * vp)
    z = y * (12 - 3 * up - 20 * vp) / (4 * vp)
    m = torch.linalg.inv(torch.tensor(_RGB_TO_XYZ, dtype=torch.float64)).to(luv.dtype).to(luv.device)
    lin = torch.einsum("rk,nkhw->nrhw", m, torch.stack([x, y, z], 1))
    return torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp(min=_TINY) ** (1 / 2.4) - 0.055)


def smoothness(offsets: torch.Tensor) -> torch.Tensor:
    """Per sample: sum over neighbouring grid points of the l_2 norm (over the colour channels)
    of their offsets' difference.  ``offsets`` (N, C, *grid)."""
    total = torch.zeros(len(offsets), dtype=offsets.dtype, device=offsets.device)
    for axis in range(2, offsets.dim()):
        diff = offsets.diff(dim=axis)
        total = total + (diff.pow(2).sum(1) + 1e-12).sqrt().flatten(1).sum(1)
    return total


class ReColorAdv(Attack):
    """Functional recolouring attack (inputs in [0, 1]).

    Arguments:
        bound: l_inf bound of the colour function's offsets (scaled colour space units).
        steps: Adam steps.
        lam: weight of the smoothness term (None: 0.0036 / bound).
        lr: Adam's step size.
        color_space: "cieluv" (the paper's) or "rgb"; grey images always use the intensity.
        resolution: grid points per colour axis (3 values; grey images use GREY_RESOLUTION, 32).
        kappa: the margin loss stops rewarding below -kappa (inf: never).

    Returns per sample the iterate with the lowest margin (a misclassified one whenever any was).
    """

    def __init__(self, bound: float = DEFAULT_BOUND, steps: int = 100, lam: float | None = None,
                 lr: float = 0.001, color_space: str = "cieluv", resolution=DEFAULT_RESOLUTION,
                 kappa: float = float("inf")):
        if not bound >= 0:
            raise HamverifyError(f"ReColorAdv bound must be >= 0, got {bound}")
        if color_space not in COLOR_SPACES:
            raise HamverifyError(f"unknown colour space {color_space!r}; use {' or '.join(COLOR_SPACES)}")
        if int(steps) < 1:
            raise HamverifyError(f"ReColorAdv steps must be >= 1, got {steps}")
        resolution = tuple(int(r) for r in resolution)
        if len(resolution) != 3 or min(resolution) < 2:
            raise HamverifyError(f"ReColorAdv resolution must be 3 sizes >= 2, got {resolution}")
        super().__init__(bound)
        self.bound, self.steps, self.lr, self.kappa = float(bound), int(steps), float(lr), float(kappa)
        self.lam = 0.0036 / self.bound if lam is None and self.bound > 0 else float(lam or 0.0)
        self.color_space, self.resolution = color_space, resolution
        self.last_distance: torch.Tensor | None = None

    def implementation(self) -> dict:
        return {"name": "hamverify", "version": __version__, "class": "hamverify.attacks.recolor.ReColorAdv",
                "paper": "Laidlaw & Feizi 2019 (per-image colour function: offsets on a colour-space grid, "
                         "trilinear interpolation, CW margin + smoothness)",
                "not_used": "recoloradv 0.0.1 (its modules import torchvision, which does not import "
                            "beside the CPU torch)",
                "threat_model": "l_inf bound on the colour function's offsets (scaled colour space)",
                "bound": self.bound, "steps": self.steps, "lam": self.lam, "lr": self.lr,
                "color_space": self.color_space, "resolution": list(self.resolution), "kappa": self.kappa}

    def describe(self) -> str:
        return (f"ReColorAdv {self.color_space} {'x'.join(map(str, self.resolution))} offsets <= {self.bound:g}, "
                f"Adam {self.steps} steps (hamverify {__version__}; recoloradv not used)")

    def distance_unit(self) -> str:
        return "max |offset| of the colour function (scaled colour space units)"

    # -- the colour function --------------------------------------------------------------------
    def _space(self, x: torch.Tensor):
        """(colour of each pixel in the unit cube, colour -> RGB)."""
        if x.shape[1] == 1 or self.color_space == "rgb":
            return x, (lambda c: c)
        if x.shape[1] != 3:
            raise HamverifyError(f"ReColorAdv takes grey or RGB images, got {x.shape[1]} channels")
        return rgb_to_cieluv(x), cieluv_to_rgb

    def _grid_shape(self, x):
        if x.shape[1] == 1:
            return (len(x), 1, 1, GREY_RESOLUTION)
        return (len(x), 3, *self.resolution)

    @staticmethod
    def _offsets_at(grid: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        """f(c) per pixel: ``grid`` (N, C, *res) interpolated at colours (N, C, H, W) in [0, 1]."""
        n, c, h, w = colour.shape
        coords = colour.flatten(2) * 2 - 1  # (N, C, HW), align_corners=True: 0 -> first knot, 1 -> last
        if c == 1:
            pts = torch.stack([coords[:, 0], torch.zeros_like(coords[:, 0])], -1)[:, None]  # (N, 1, HW, 2)
            out = F.grid_sample(grid, pts, mode="bilinear", padding_mode="border", align_corners=True)
        else:
            # grid_sample's last coordinate order is (W, H, D) = the grid's axes 4, 3, 2.
            pts = coords.flip(1).permute(0, 2, 1)[:, None, None]  # (N, 1, 1, HW, 3)
            out = F.grid_sample(grid, pts, mode="bilinear", padding_mode="border", align_corners=True)
        return out.reshape(n, c, h, w)

    def recolor(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """The threat model's point of offsets ``grid``: clip(x + rgb(c + f(c)) - rgb(c), 0, 1)."""
        colour, to_rgb = self._space(x)
        moved = to_rgb(colour + self._offsets_at(grid, colour))
        return (x + (moved - to_rgb(colour))).clamp(0, 1)

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        n = len(x)
        if n == 0 or self.bound == 0:
            self.last_distance = torch.zeros(n, dtype=x.dtype, device=x.device)
            return x.clone()
        grid = torch.zeros(self._grid_shape(x), dtype=x.dtype, device=x.device, requires_grad=True)
        colour, to_rgb = self._space(x)
        base = to_rgb(colour).detach()
        colour = colour.detach()
        best_x, best_m = x.clone(), torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        best_d = torch.zeros(n, dtype=x.dtype, device=x.device)
        opt = torch.optim.Adam([grid], lr=self.lr)

        def evaluate():
            x_adv = (x + (to_rgb(colour + self._offsets_at(grid, colour)) - base)).clamp(0, 1)
            return x_adv, margin_loss(model(x_adv), y, self.kappa)

        def keep(x_adv, margin):
            better = margin.detach() < best_m
            best_m[better] = margin.detach()[better]
            best_x[better] = x_adv.detach()[better]
            best_d[better] = grid.detach()[better].abs().flatten(1).amax(1)

        with torch.enable_grad():
            for _ in range(self.steps):
                x_adv, margin = evaluate()
                keep(x_adv, margin)
                loss = (margin + self.lam * smoothness(grid)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    grid.clamp_(-self.bound, self.bound)
        with torch.no_grad():
            keep(*evaluate())
        self.last_distance = best_d
        return best_x
