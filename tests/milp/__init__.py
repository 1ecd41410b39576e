"""Shared helpers of the MILP tests: small random networks, interval bounds, a brute-force exact margin."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from hamverify.network import Affine, Network


@dataclass
class Bounds:
    lower: np.ndarray
    upper: np.ndarray


def random_net(rng, sizes, bias_scale=0.5) -> Network:
    affines = tuple(Affine(rng.standard_normal((sizes[i + 1], sizes[i])),
                           rng.standard_normal(sizes[i + 1]) * bias_scale) for i in range(len(sizes) - 1))
    return Network(affines, (sizes[0],))


def interval_bounds(net: Network, lo, hi) -> list[Bounds]:
    out, h_lo, h_hi = [], np.asarray(lo, float), np.asarray(hi, float)
    for aff in net.affines[:-1]:
        W_pos, W_neg = aff.positive_negative()
        l = np.asarray(W_pos @ h_lo + W_neg @ h_hi).ravel() + aff.b
        u = np.asarray(W_pos @ h_hi + W_neg @ h_lo).ravel() + aff.b
        out.append(Bounds(l, u))
        h_lo, h_hi = np.maximum(l, 0), np.maximum(u, 0)
    return out


def widen(rng, bounds: list[Bounds], scale=0.5) -> list[Bounds]:
    """Valid but looser bounds (some stable neurons become unstable)."""
    return [Bounds(b.lower - scale * rng.random(b.lower.shape), b.upper + scale * rng.random(b.upper.shape))
            for b in bounds]


def random_box(rng, d):
    center, radius = rng.random(d), rng.uniform(0.05, 0.5)
    return np.clip(center - radius, 0, 1), np.clip(center + radius, 0, 1)


def twin_net(rng, d, n1, n2, margin=0.05) -> Network:
    """Two copies of one ReLU net; logit 0 - logit 1 = ``margin`` everywhere, which a MILP can only
    prove by branching through both copies (hard for its size)."""
    W1, b1 = rng.standard_normal((n1, d)), rng.standard_normal(n1) * 0.5
    W2, b2 = rng.standard_normal((n2, n1)) / np.sqrt(n1), rng.standard_normal(n2) * 0.5
    w3, Z, z2 = rng.standard_normal(n2), np.zeros((n2, n1)), np.zeros(n2)
    return Network((Affine(np.vstack([W1, W1]), np.concatenate([b1, b1])),
                    Affine(np.block([[W2, Z], [Z, W2]]), np.concatenate([b2, b2])),
                    Affine(np.vstack([np.concatenate([w3, z2]), np.concatenate([z2, w3])]), np.array([margin, 0.0]))),
                   (d,))


def brute_force_min_margin(net: Network, lo, hi, bounds, label: int, target: int) -> float:
    """Exact ``min_{x in box} z_label - z_target``: for every activation pattern of the unstable
    neurons, an LP over the region where that pattern holds; the regions cover the box."""
    unstable = [np.flatnonzero((b.lower < 0) & (b.upper > 0)) for b in bounds]
    n_unstable = sum(len(u) for u in unstable)
    best = np.inf
    d = net.input_size
    for bits in itertools.product((0.0, 1.0), repeat=n_unstable):
        bits = np.array(bits)
        G, g = np.eye(d), np.zeros(d)  # current post-activation = G x + g
        A_ub, b_ub, offset = [], [], 0
        for aff, b, unst in zip(net.affines[:-1], bounds, unstable):
            W = aff.dense()
            Gz, gz = W @ G, W @ g + aff.b
            phase = (b.lower >= 0).astype(float)
            phase[unst] = bits[offset:offset + len(unst)]
            offset += len(unst)
            sign = np.where(phase > 0, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
            A_ub.append(sign[:, None] * Gz)
            b_ub.append(-sign * gz)
            G, g = phase[:, None] * Gz, phase * gz
        W = net.affines[-1].dense()
        cost = (W[label] - W[target]) @ G
        const = (W[label] - W[target]) @ g + net.affines[-1].b[label] - net.affines[-1].b[target]
        res = linprog(cost, A_ub=np.vstack(A_ub), b_ub=np.concatenate(b_ub), bounds=list(zip(lo, hi)),
                      method="highs")
        if res.status == 0:
            best = min(best, res.fun + const)
    return best
