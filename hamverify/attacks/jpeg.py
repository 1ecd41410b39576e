"""The JPEG attack of Kang et al. 2019 ("Testing robustness against unforeseen adversaries"),
written from the paper: an l_inf perturbation of the image's quantized JPEG coefficients.

JPEG's encoder maps an image (0..255 scale) to YCbCr, halves the chroma resolution (4:2:0), cuts
each channel into 8x8 blocks, takes their 2-D DCT and divides coefficient (u, v) by the entry
(u, v) of the standard luminance or chrominance quantization table.  The attack perturbs those
quantized coefficients, ``c + delta``, and decodes (multiply by the table, inverse DCT, chroma
upsampling by 2x2 repetition, YCbCr -> RGB).  Without the encoder's rounding every step is linear,
so the decoded image is ``x + T(delta)`` with T the decoder's linear part; here the image's own
coefficients are kept exactly (no 4:2:0 loss on the clean image), so delta = 0 returns x, and
``x_adv = clip(x + T(delta), 0, 1)``.  PGD with random start on ``delta`` and the cross-entropy,
as in Kang et al.

Bound, in Kang et al.'s parametrization (their ``advex-uar`` code, which the paper's Table 1 ran
through Laidlaw et al. 2021's wrapper): the optimized variable v lies in [-eps, eps] and a
quantized coefficient moves by ``delta = v / 2``, i.e. at most eps / 2 quantization steps; the
step size is eps / sqrt(steps) on v.  The default eps 0.25 is Laidlaw et al.'s CIFAR-10 default
(their ``JPEGLinfAttack``); the paper does not state its bound.  ``last_distance`` holds each
sample's ``|delta|_inf`` (quantization steps), ``last_delta`` the coefficients themselves.

Grey images (one channel) have only the luminance.  Sides that are not a multiple of 8 (16 for
colour, for the chroma's half resolution) are handled by computing T on the padded image and
cropping, as the encoder pads.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import HamverifyError, __version__
from .base import Attack

# The JPEG standard's quantization tables (ITU T.81 Annex K, quality 50), row u, column v.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99))
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99), (47, 66, 99, 99, 99, 99, 99, 99),
    (99,) * 8, (99,) * 8, (99,) * 8, (99,) * 8)
# JFIF's full-range RGB -> YCbCr without the shift of 128 on Cb and Cr (the decoder uses its inverse).
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
# Laidlaw et al. 2021's CIFAR-10 JPEG bound (Kang et al.'s parametrization).
DEFAULT_EPS = 0.25


def dct_matrix(n: int = 8, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n x n): coefficients = D @ block @ D^T."""
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def _blocks(channel: torch.Tensor) -> torch.Tensor:
    """(N, h, w) -> (N, h/8, w/8, 8, 8)."""
    n, h, w = channel.shape
    return channel.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(blocks: torch.Tensor) -> torch.Tensor:
    """(N, h/8, w/8, 8, 8) -> (N, h, w)."""
    n, bh, bw = blocks.shape[:3]
    return blocks.permute(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)


def dct_blocks(channel: torch.Tensor) -> torch.Tensor:
    """8x8 block DCT of (N, h, w) (JPEG's scaling: 0..255 samples, orthonormal DCT)."""
    d = dct_matrix(dtype=channel.dtype).to(channel.device)
    return d @ _blocks(channel) @ d.T


def idct_blocks(coeffs: torch.Tensor) -> torch.Tensor:
    d = dct_matrix(dtype=coeffs.dtype).to(coeffs.device)
    return _unblocks(d.T @ coeffs @ d)


class JPEGCodec:
    """The decoder's linear map T from quantized-coefficient perturbations to pixel perturbations
    for images of shape (C, H, W), C in {1, 3}; and the encoder's inverse for the tests."""

    def __init__(self, shape, chroma_subsampling: bool = True):
        c, h, w = (int(v) for v in shape)
        if c not in (1, 3):
            raise HamverifyError(f"the JPEG attack takes grey (1 channel) or RGB (3 channels) images, got {c}")
        self.shape, self.colour = (c, h, w), c == 3
        self.sub = bool(chroma_subsampling) and self.colour
        m = 16 if self.sub else 8
        self.ph, self.pw = -(-h // m) * m, -(-w // m) * m  # padded sides

    def delta_shapes(self, n: int) -> list[tuple]:
        """Shapes of the coefficient perturbations: Y, then Cb and Cr for colour images."""
        y = (n, self.ph // 8, self.pw // 8, 8, 8)
        if not self.colour:
            return [y]
        f = 2 if self.sub else 1
        c = (n, self.ph // (8 * f), self.pw // (8 * f), 8, 8)
        return [y, c, c]

    def tables(self, dtype, device):
        luma = torch.tensor(LUMA_TABLE, dtype=dtype, device=device)
        chroma = torch.tensor(CHROMA_TABLE, dtype=dtype, device=device)
        return luma, chroma

    def decode(self, deltas) -> torch.Tensor:
        """Pixel perturbation (N, C, H, W) in [0, 1] units of quantized-coefficient perturbations."""
        luma, chroma = self.tables(deltas[0].dtype, deltas[0].device)
        y = idct_blocks(deltas[0] * luma)
        if not self.colour:
            out = y[:, None]
        else:
            cb, cr = (idct_blocks(d * chroma) for d in deltas[1:])
            if self.sub:
                cb, cr = (t.repeat_interleave(2, 1).repeat_interleave(2, 2) for t in (cb, cr))
            m = torch.linalg.inv(torch.tensor(RGB_TO_YCBCR, dtype=torch.float64)).to(y.dtype).to(y.device)
            out = torch.einsum("rk,nkhw->nrhw", m, torch.stack([y, cb, cr], 1))
        _, h, w = self.shape
        return out[:, :, :h, :w] / 255

    def encode_difference(self, diff: torch.Tensor) -> list[torch.Tensor]:
        """The quantized-coefficient perturbations whose decoding is ``diff`` (N, C, H, W), for a
        ``diff`` that T can produce (padding filled with zeros: exact when T's image was not cut)."""
        n, c, h, w = diff.shape
        full = torch.zeros(n, c, self.ph, self.pw, dtype=diff.dtype, device=diff.device)
        full[:, :, :h, :w] = diff * 255
        luma, chroma = self.tables(diff.dtype, diff.device)
        if not self.colour:
            return [dct_blocks(full[:, 0]) / luma]
        m = torch.tensor(RGB_TO_YCBCR, dtype=diff.dtype, device=diff.device)
        ycc = torch.einsum("kr,nrhw->nkhw", m, full)
        cb, cr = ycc[:, 1], ycc[:, 2]
        if self.sub:
            cb, cr = (F.avg_pool2d(t[:, None], 2)[:, 0] for t in (cb, cr))
        return [dct_blocks(ycc[:, 0]) / luma, dct_blocks(cb) / chroma, dct_blocks(cr) / chroma]


class JPEGAttack(Attack):
    """l_inf PGD in the quantized JPEG coefficients (inputs in [0, 1]).

    Arguments:
        eps: Kang et al.'s bound; each quantized coefficient moves by at most eps / 2.
        steps: PGD steps.
        step_size: on Kang et al.'s variable (in [-eps, eps]); default eps / sqrt(steps).
        random_start: start uniform in the box (Kang et al.'s default).
        chroma_subsampling: perturb Cb and Cr at half resolution (4:2:0), as JPEG and Kang et al.
        generator: torch.Generator of the random start.

    Returns per sample the first misclassified iterate, else the last one.
    """

    def __init__(self, eps: float = DEFAULT_EPS, steps: int = 100, step_size: float | None = None,
                 random_start: bool = True, chroma_subsampling: bool = True,
                 generator: torch.Generator | None = None):
        if not eps >= 0:
            raise HamverifyError(f"JPEG bound must be >= 0, got {eps}")
        if int(steps) < 1:
            raise HamverifyError(f"JPEG attack steps must be >= 1, got {steps}")
        super().__init__(eps)
        self.steps, self.random_start, self.chroma_subsampling = int(steps), bool(random_start), chroma_subsampling
        self.step_size = self.eps / math.sqrt(self.steps) if step_size is None else float(step_size)
        self.generator = generator
        self.last_distance: torch.Tensor | None = None
        self.last_delta: list[torch.Tensor] | None = None

    @property
    def coefficient_bound(self) -> float:
        """The l_inf radius of the perturbation of a quantized coefficient (quantization steps)."""
        return self.eps / 2

    def implementation(self) -> dict:
        return {"name": "hamverify", "version": __version__, "class": "hamverify.attacks.jpeg.JPEGAttack",
                "paper": "Kang et al. 2019 (l_inf perturbation of the quantized 8x8 DCT coefficients, "
                         "YCbCr, PGD on cross-entropy)",
                "threat_model": "l_inf bound on the quantized JPEG coefficients, Kang et al.'s "
                                "parametrization (coefficients move by at most eps/2)",
                "eps": self.eps, "coefficient_bound": self.coefficient_bound, "steps": self.steps,
                "step_size": self.step_size, "random_start": self.random_start,
                "chroma_subsampling": self.chroma_subsampling, "quantization": "JPEG standard tables (quality 50)"}

    def describe(self) -> str:
        return (f"JPEG l_inf eps {self.eps:g} (coefficients +-{self.coefficient_bound:g} steps), "
                f"PGD-{self.steps} (hamverify {__version__})")

    def distance_unit(self) -> str:
        return "max |perturbation| of a quantized JPEG coefficient (quantization steps)"

    def perturb(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        codec = JPEGCodec(x.shape[1:], self.chroma_subsampling)
        shapes = codec.delta_shapes(len(x))
        if len(x) == 0 or self.eps == 0:
            self.last_delta = [torch.zeros(s, dtype=x.dtype, device=x.device) for s in shapes]
            self.last_distance = torch.zeros(len(x), dtype=x.dtype, device=x.device)
            return x.clone()
        if self.random_start:
            v = [(torch.rand(s, generator=self.generator, dtype=x.dtype, device=x.device) * 2 - 1) * self.eps
                 for s in shapes]
        else:
            v = [torch.zeros(s, dtype=x.dtype, device=x.device) for s in shapes]
        best = x.clone()
        best_v = [t.clone() for t in v]
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)

        def point(v):
            return (x + codec.decode([t / 2 for t in v])).clamp(0, 1)

        def keep(x_adv, v, logits):
            nonlocal done
            take = ~done
            if take.any():
                best[take] = x_adv[take].detach()
                for b, t in zip(best_v, v):
                    b[take] = t[take].detach()
            done = done | (logits.argmax(1) != y)

        for _ in range(self.steps):
            v = [t.detach().requires_grad_(True) for t in v]
            with torch.enable_grad():
                x_adv = point(v)
                logits = model(x_adv)
                grads = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), v)
            keep(x_adv, v, logits.detach())
            if bool(done.all()):
                break
            v = [(t + self.step_size * g.sign()).clamp(-self.eps, self.eps) for t, g in zip(v, grads)]
        else:
            with torch.no_grad():
                x_adv = point(v)
                keep(x_adv, v, model(x_adv))
        self.last_delta = [t / 2 for t in best_v]
        self.last_distance = torch.stack([t.flatten(1).abs().amax(1) for t in self.last_delta], 1).amax(1)
        return best
