"""The IR as a torch module, so that the per-input pipeline (PGD, float64 validation) runs on an
imported network.  Apart from :mod:`hamverify.onnx_io` because it needs torch at import time."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .models import ReLUNet
from .network import Network


class IRModule(ReLUNet):
    """The IR as a torch module: Flatten, Linear, ReLU, ..., Linear (dense weights, float64 by
    default), taking ``[N, *input_shape]`` (any shape with ``input_size`` values per sample).

    ``from_torch(IRModule(net), net.input_shape)`` rebuilds the same affine maps, so the
    :class:`~hamverify.verify.Verifier` can run PGD (float32 copy) and validate counterexamples
    (float64 copy) on an imported network."""

    def __init__(self, net: Network, dtype: torch.dtype = torch.float64):
        layers: list[nn.Module] = [nn.Flatten()]
        for k, aff in enumerate(net.affines):
            W = np.asarray(aff.dense(), dtype=np.float64)
            lin = nn.Linear(W.shape[1], W.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(np.asarray(aff.b, dtype=np.float64)))
            layers.append(lin)
            if k < len(net.affines) - 1:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.input_shape = tuple(net.input_shape)
