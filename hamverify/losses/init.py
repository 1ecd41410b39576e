"""Weight initializations for certified training.

``ibp`` (Shi et al. 2021): weights N(0, σ²) with σ = sqrt(2π) / fan_in, biases 0.  The expected
interval width is then about preserved from layer to layer (E|w| = σ sqrt(2/π), and a ReLU
roughly halves a width), where the default (Kaiming-uniform) init lets IBP bounds grow with depth.
"""
from __future__ import annotations

import math

import torch
from torch import nn

INITS = ("default", "ibp")


@torch.no_grad()
def initialize(model: nn.Module, name: str = "default", generator: torch.Generator | None = None) -> nn.Module:
    if name not in INITS:
        raise ValueError(f"unknown init {name!r}; known: {', '.join(INITS)}")
    if name == "default":
        return model
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            fan_in = layer.weight[0].numel()
            layer.weight.normal_(0.0, math.sqrt(2 * math.pi) / fan_in, generator=generator)
            if layer.bias is not None:
                layer.bias.zero_()
    return model
