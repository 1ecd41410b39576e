"""The network IR that every verification component shares (docs/ARCHITECTURE.md).

A ``Network`` is ``Affine, ReLU, Affine, ReLU, ..., Affine`` acting on the flattened input
(C, H, W order, as ``torch.flatten``).  Normalization, Flatten and eval-mode BatchNorm are folded
into the neighbouring affine map when the IR is built, so bounds, the MILP encoding and the
statistics only ever see two kinds of step.  Everything is float64 numpy / scipy.sparse.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from . import HamverifyError

# torch is imported inside the functions that take a torch model: the IR itself, ONNX import and
# every bound need only numpy / scipy (issue 16, item 4: a `vnnlib` process proving an instance by
# bounds never imports torch).


@dataclass(frozen=True)
class ConvSpec:
    """The convolution an unrolled ``Affine.W`` equals (``conv_matrix(weight, in_shape, ...)``), kept
    so that torch code can apply ``W`` and ``W^T`` as (transposed) convolutions instead of dense
    products (branch and bound: ``bounds/rows.py``).  Only a speed hint: every bound that decides a
    verdict is computed from ``W`` itself."""

    weight: np.ndarray  # (C_out, C_in / group, kH, kW), float64
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]
    group: int = 1

    def matrix(self) -> sp.csr_matrix:
        return conv_matrix(self.weight, self.in_shape, self.strides, self.pads, self.dilations, self.group)[0]


_TRANSPOSED: dict = {}


def transposed_csr(W):
    """``W.T`` as CSR, built once per sparse map and kept while ``W`` lives (a dense-rows-times-``W``
    product runs as ``W.T @ A.T``; converting ``W.T`` anew cost 2.5 ms per call on mnist_small's
    first conv, measured in branch and bound's float64 passes).  ``W`` is never modified in place."""
    hit = _TRANSPOSED.get(id(W))
    if hit is not None and hit[0]() is W:
        return hit[1]
    for k in [k for k, v in _TRANSPOSED.items() if v[0]() is None]:
        del _TRANSPOSED[k]
    WT = W.T.tocsr()
    _TRANSPOSED[id(W)] = (weakref.ref(W), WT)
    return WT


@dataclass(frozen=True)
class Affine:
    """y = W @ x + b.  ``W`` is a CSR matrix (unrolled convolution) or a dense array (linear layer).
    ``conv``: the convolution ``W`` equals, when the IR was built from one (else None)."""

    W: sp.csr_matrix | np.ndarray
    b: np.ndarray
    conv: ConvSpec | None = field(default=None, compare=False, repr=False)

    @property
    def in_features(self) -> int:
        return self.W.shape[1]

    @property
    def out_features(self) -> int:
        return self.W.shape[0]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply to a batch ``x`` of shape (N, in_features)."""
        return np.asarray((self.W @ x.T).T) + self.b

    def dense(self) -> np.ndarray:
        return self.W.toarray() if sp.issparse(self.W) else self.W

    def positive_negative(self):
        """(W+, W-) with W = W+ + W-, in W's own storage (used by interval arithmetic)."""
        if sp.issparse(self.W):
            return self.W.maximum(0).tocsr(), self.W.minimum(0).tocsr()
        return np.maximum(self.W, 0), np.minimum(self.W, 0)


@dataclass(frozen=True)
class Network:
    """``affines[0], ReLU, affines[1], ReLU, ..., affines[-1]`` on a flattened input."""

    affines: tuple[Affine, ...]
    input_shape: tuple[int, ...]

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def relu_layer_sizes(self) -> list[int]:
        """Number of ReLUs in each ReLU layer (the outputs of every affine map but the last)."""
        return [a.out_features for a in self.affines[:-1]]

    @property
    def num_classes(self) -> int:
        return self.affines[-1].out_features

    def _flat(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(1, -1) if x.ndim == 1 or x.shape == self.input_shape else x.reshape(len(x), -1)

    def preactivations(self, x) -> list[np.ndarray]:
        """Pre-activations of every ReLU layer, each (N, m_j), for a batch of inputs."""
        h = self._flat(x)
        out = []
        for aff in self.affines[:-1]:
            h = aff.forward(h)
            out.append(h)
            h = np.maximum(h, 0.0)
        return out

    def forward(self, x) -> np.ndarray:
        """Logits (N, classes) in float64."""
        h = self._flat(x)
        for aff in self.affines[:-1]:
            h = np.maximum(aff.forward(h), 0.0)
        return self.affines[-1].forward(h)


def conv_matrix(weight: np.ndarray, in_shape, strides, pads, dilations, group: int = 1):
    """Exact CSR matrix of a 2-D convolution without bias (column i = conv(e_i)), ONNX padding
    ``[top, left, bottom, right]``; returns (matrix, (C_out, H_out, W_out)).

    Built from index arithmetic, one vectorized pass per kernel tap (kH * kW passes): entry
    (row of output (co, oh, ow), column of input (ci, oh*s - top + kh*d, ow*s - left + kw*d)) is
    ``weight[co, ci mod C_in/group, kh, kw]`` where that input lies inside the image."""
    weight = np.asarray(weight, dtype=np.float64)
    C_in, H, W = (int(s) for s in in_shape)
    C_out, C_g, kH, kW = weight.shape
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilations)
    top, left, bottom, right = (int(p) for p in pads)
    group = int(group)
    if C_g * group != C_in or C_out % group:
        raise HamverifyError(f"Conv weight {list(weight.shape)} with group {group} does not fit {C_in} input "
                             f"channels")
    H_out = (H + top + bottom - dh * (kH - 1) - 1) // sh + 1
    W_out = (W + left + right - dw * (kW - 1) - 1) // sw + 1
    if H_out <= 0 or W_out <= 0:
        raise HamverifyError(f"Conv kernel {kH}x{kW} does not fit the padded {H}x{W} input")
    co = np.arange(C_out)[:, None, None, None]
    ci = (co // (C_out // group)) * C_g + np.arange(C_g)[None, :, None, None]  # (C_out, C_g, 1, 1)
    oh = np.arange(H_out)[None, None, :, None]
    ow = np.arange(W_out)[None, None, None, :]
    rows_all = np.broadcast_to(co * (H_out * W_out) + oh * W_out + ow, (C_out, C_g, H_out, W_out))
    rows, cols, vals = [], [], []
    for kh in range(kH):
        ih = oh * sh - top + kh * dh
        for kw in range(kW):
            iw = ow * sw - left + kw * dw
            inside = np.broadcast_to((ih >= 0) & (ih < H) & (iw >= 0) & (iw < W), rows_all.shape)
            w = np.broadcast_to(weight[:, :, kh, kw][:, :, None, None], rows_all.shape)
            keep = inside & (w != 0)
            rows.append(rows_all[keep])
            cols.append(np.broadcast_to(ci * (H * W) + ih * W + iw, rows_all.shape)[keep])
            vals.append(w[keep])
    M = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(C_out * H_out * W_out, C_in * H * W))
    return M, (C_out, H_out, W_out)


def _unroll_conv(conv, in_shape: tuple[int, int, int]):
    """Exact matrix of a torch convolution (without bias); returns (matrix, output shape)."""
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise HamverifyError(f"Conv2d padding {conv.padding!r} / mode {conv.padding_mode!r} is not supported")
    ph, pw = conv.padding
    return conv_matrix(conv.weight.detach().double().cpu().numpy(), in_shape, conv.stride, (ph, pw, ph, pw),
                       conv.dilation, conv.groups)


def _bias(layer, size: int) -> np.ndarray:
    return np.zeros(size) if layer.bias is None else layer.bias.detach().double().cpu().numpy()


def from_torch(model, input_shape: Sequence[int]) -> Network:
    """Build the IR from a feed-forward torch model (a Sequential of supported layers)."""
    from torch import nn
    from .models import Normalize  # local import: models imports nothing from here

    shape = tuple(int(s) for s in input_shape)
    W: sp.csr_matrix | np.ndarray | None = None  # pending affine since the last ReLU; None = identity
    b = np.zeros(int(np.prod(shape)))
    affines: list[Affine] = []
    # What the pending W is, structurally: "identity", ("channel-scale", s) (a Normalize so far),
    # ("conv", ConvSpec) (a convolution, maybe with per-channel scalings folded in), or None.
    form: object = "identity"

    def compose(W_layer, b_layer):
        nonlocal W, b
        b = np.asarray(W_layer @ b).ravel() + b_layer
        if W is None:
            W = W_layer
        else:
            W = W_layer @ W
            if sp.issparse(W) and W.nnz > 0.3 * W.shape[0] * W.shape[1]:
                W = W.toarray()

    layers = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    for layer in layers:
        if isinstance(layer, Normalize):
            c = shape[0]
            mean = layer.mean.detach().double().cpu().numpy().ravel()
            std = layer.std.detach().double().cpu().numpy().ravel()
            per = int(np.prod(shape)) // c
            scale = np.repeat(1.0 / np.broadcast_to(std, (c,)), per)
            shift = -np.repeat(np.broadcast_to(mean, (c,)) / np.broadcast_to(std, (c,)), per)
            form = ("channel-scale", 1.0 / np.broadcast_to(std, (c,))) if form == "identity" else None
            compose(sp.diags(scale).tocsr(), shift)
        elif isinstance(layer, nn.Conv2d):
            if len(shape) != 3:
                raise HamverifyError(f"Conv2d needs a (C, H, W) input, got shape {shape}")
            Wc, out_shape = _unroll_conv(layer, shape)
            form = _conv_form(form, layer, shape, out_shape)
            compose(Wc, np.repeat(_bias(layer, layer.out_channels), int(np.prod(out_shape[1:]))))
            shape = out_shape
        elif isinstance(layer, nn.BatchNorm2d):
            if layer.training:
                raise HamverifyError("BatchNorm2d must be in eval mode to be folded into the IR")
            rm, rv = layer.running_mean.double().numpy(), layer.running_var.double().numpy()
            g = layer.weight.detach().double().numpy() if layer.affine else np.ones_like(rm)
            beta = layer.bias.detach().double().numpy() if layer.affine else np.zeros_like(rm)
            s = g / np.sqrt(rv + layer.eps)
            per = int(np.prod(shape[1:]))
            if isinstance(form, tuple) and form[0] == "conv":  # scales the conv's output channels
                spec = form[1]
                form = ("conv", ConvSpec(spec.weight * s[:, None, None, None], spec.in_shape, spec.out_shape,
                                         spec.strides, spec.pads, spec.dilations, spec.group))
            else:
                form = None
            compose(sp.diags(np.repeat(s, per)).tocsr(), np.repeat(beta - rm * s, per))
        elif isinstance(layer, nn.Flatten):
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, nn.Linear):
            if int(np.prod(shape)) != layer.in_features:
                raise HamverifyError(f"Linear expects {layer.in_features} inputs, got {shape}")
            compose(layer.weight.detach().double().cpu().numpy(), _bias(layer, layer.out_features))
            form = None
            shape = (layer.out_features,)
        elif isinstance(layer, nn.ReLU):
            if W is None:
                raise HamverifyError("a ReLU directly on the input is not supported")
            affines.append(_affine(W, b, form))
            W, b, form = None, np.zeros(int(np.prod(shape))), "identity"
        else:
            raise HamverifyError(f"unsupported layer for verification: {type(layer).__name__}")
    if W is None:
        raise HamverifyError("the network must end with an affine layer")
    affines.append(_affine(W, b, form))
    return Network(tuple(affines), tuple(int(s) for s in input_shape))


def _conv_form(form, conv, in_shape, out_shape):
    """The pending map's form after a Conv2d: still one convolution if it was the identity or a
    per-input-channel scaling (a Normalize, folded into the weights), else None."""
    if isinstance(conv.padding, str):
        return None
    if form == "identity":
        scale = np.ones(in_shape[0])
    elif isinstance(form, tuple) and form[0] == "channel-scale":
        scale = np.asarray(form[1], dtype=np.float64)
    else:
        return None
    weight = conv.weight.detach().double().cpu().numpy()
    per_group = weight.shape[1]
    scale_in = scale.reshape(conv.groups, per_group)  # input channel g*per_group + k
    weight = weight * np.repeat(scale_in, weight.shape[0] // conv.groups, axis=0)[:, :, None, None]
    ph, pw = conv.padding
    return ("conv", ConvSpec(weight, tuple(int(v) for v in in_shape), tuple(int(v) for v in out_shape),
                             tuple(int(v) for v in conv.stride), (ph, pw, ph, pw),
                             tuple(int(v) for v in conv.dilation), int(conv.groups)))


def _affine(W, b, form) -> Affine:
    """The IR step, with its ConvSpec when the pending map is one convolution.  The spec is checked
    against W (cheap: one more unrolling) so a hint can never disagree with the matrix it describes."""
    spec = form[1] if isinstance(form, tuple) and form[0] == "conv" else None
    if spec is not None and sp.issparse(W):
        M = spec.matrix()
        diff = abs(M - W)
        if M.shape != W.shape or (diff.nnz and diff.max() > 1e-9 * max(1.0, abs(W).max())):
            spec = None
    elif spec is not None:
        spec = None  # densified on the way: no longer the unrolled convolution
    return Affine(W, b, spec)


def check_against_torch(net: Network, model, n: int = 8, seed: int = 0) -> float:
    """Max |IR - torch| over random inputs in [0, 1] (float64 on both sides)."""
    import torch
    rng = np.random.default_rng(seed)
    x = rng.random((n, *net.input_shape))
    with torch.no_grad():
        ref = model.double()(torch.from_numpy(x)).numpy()
    model.float()
    return float(np.abs(net.forward(x) - ref).max())


def from_onnx(path) -> Network:
    """Import an ONNX ReLU network into the IR (see hamverify.onnx_io; needs the `onnx` extra)."""
    from .onnx_io import from_onnx as _from_onnx
    return _from_onnx(path)
