"""Warm-up regularizers for certified training, after the two failure modes Shi et al. 2021
name: interval bounds that explode with depth, and imbalanced ReLU states (IBP training favours
dead ReLUs).  Our formulation, on the IBP pre-activation bounds of each ReLU layer:

* tightness: the width of each layer's bounds relative to its pre-activation spread
  (std of the centers over the batch); penalized above ``tau`` — loose bounds relative to
  the signal are what makes a network impossible to certify;
* ReLU balance: for each layer, the mass of the centers on the active side against the inactive
  side, min/max of the two; penalized below ``tau`` — all-dead or all-active layers carry
  no information or no nonlinearity.

Both are zero when the bounds are healthy, so they only steer the warm-up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def tightness_loss(preacts, tau: float = 1.0) -> torch.Tensor:
    terms = []
    for l, u in preacts:
        width = (u - l).mean()
        spread = ((u + l) / 2).std(dim=0).mean().clamp_min(1e-6)
        terms.append(F.relu(width / spread - tau) / tau)
    return torch.stack(terms).mean()


def relu_balance_loss(preacts, tau: float = 0.5) -> torch.Tensor:
    terms = []
    for l, u in preacts:
        c = (u + l) / 2
        pos, neg = F.relu(c).mean(), F.relu(-c).mean()
        balance = torch.min(pos, neg) / torch.max(pos, neg).clamp_min(1e-6)
        terms.append(F.relu(tau - balance) / tau)
    return torch.stack(terms).mean()
