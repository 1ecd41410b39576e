"""Branch and bound (hamverify.bab) against brute force on tiny networks, against the MILP on small
ones, the subdomain MILP's exactness under splits, the deadline and the validator contract."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from hamverify import HamverifyError
from hamverify.bab import BRANCHING, branch_and_bound
from hamverify.bab.exact import exact_encoding
from hamverify.bounds import split_bounds, symbolic_bounds
from hamverify.cascade import warm_up_optimizer
from hamverify.milp.encode import encode_network, margin_objective
from hamverify.milp.highs import solve_highs
from hamverify.network import Affine, Network, from_torch

try:  # tests/milp's helpers: tests/ is on sys.path under pytest's default import mode
    from milp import Bounds, brute_force_min_margin, interval_bounds, random_box, random_net, twin_net
except ImportError:  # pragma: no cover
    from tests.milp import Bounds, brute_force_min_margin, interval_bounds, random_box, random_net, twin_net

MAX_UNSTABLE = 7  # <= 128 LPs per brute-force margin
TOL = 1e-6


def _shift(net: Network, label: int, delta: float) -> Network:
    """The same network with ``delta`` added to the label's logit (every margin moves by delta)."""
    last = net.affines[-1]
    b = last.b.copy()
    b[label] += delta
    return Network(net.affines[:-1] + (Affine(last.W, b),), net.input_shape)


def _tiny_instance(rng):
    """A 2- or 3-input net with <= MAX_UNSTABLE unstable ReLUs, a box, a label, and the exact minimum
    margin per target (brute force); the label's logit is shifted so that the smallest margin is
    +-(1e-4 .. 0.01): close calls both ways (about 45 % of the instances need branching)."""
    while True:
        d = int(rng.integers(2, 4))
        net = random_net(rng, [d, int(rng.integers(3, 6)), int(rng.integers(3, 6)), 3])
        lo, hi = random_box(rng, d)
        ib = interval_bounds(net, lo, hi)
        if 2 <= sum(int(((b.lower < 0) & (b.upper > 0)).sum()) for b in ib) <= MAX_UNSTABLE:
            break
    label = int(rng.integers(3))
    exact = {j: brute_force_min_margin(net, lo, hi, ib, label, j) for j in range(3) if j != label}
    want = rng.uniform(1e-4, 0.01) * (1 if rng.random() < 0.5 else -1)
    shift = want - min(exact.values())
    return _shift(net, label, shift), lo, hi, label, {j: m + shift for j, m in exact.items()}


def _grid(lo, hi, n=41):
    axes = [np.linspace(a, b, n) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, lo.size)


def _check_verdicts(net, lo, hi, label, exact, res, grid=None):
    """Soundness (a failure here is a disagreement) and completeness on one instance."""
    for j, v in res.verdicts.items():
        if v == "robust":
            assert exact[j] > TOL - 1e-9, (j, exact[j], res)
            assert res.lower_bounds[j] <= exact[j] + 1e-9
            if grid is not None:
                z = net.forward(grid)
                assert np.all(z[:, label] - z[:, j] > 0)
    if res.status == "counterexample":
        x = res.counterexample
        assert x.shape == lo.shape and np.all(x >= lo) and np.all(x <= hi)
        z = net.forward(x)[0]
        assert z[label] - z[res.cex_target] < 0 and res.cex_margin < 0
        assert res.verdicts[res.cex_target] == "counterexample"
        assert min(exact.values()) < 0
    # The instances keep |min margin| >= 1e-4 >> tol: a complete search decides every one of them.
    if min(exact.values()) < 0:
        assert res.status == "counterexample", (exact, res)
    else:
        assert res.status == "robust" and all(v == "robust" for v in res.verdicts.values()), (exact, res)


CONFIGS = [
    dict(branching="babsr", attack=False),
    dict(branching="widest", attack=False, batch=1),
    dict(branching="intercept", attack=True),
    dict(branching="input", attack=False),
    dict(branching="babsr", attack=False, lp="open"),
    dict(branching="babsr", attack=False, bounding="alpha", batch=3),
    dict(branching="babsr", attack=False, intermediate="inherit"),
    dict(branching="intercept", attack=False, intermediate="inherit", batch=1),
    dict(branching="fsb", attack=False),
    dict(branching="fsb", attack=False, bounding="alpha", intermediate="inherit", batch=2),
]


@pytest.mark.parametrize("chunk", range(4))
def test_agrees_with_brute_force_on_tiny_nets(chunk):
    """>= 200 instances in all (55 per chunk), 0 disagreements: pure BaB (no MILP fallback), every
    branching and bounding rule; a robust verdict is checked against the exact minimum and, for
    2-D inputs, a dense grid; a counterexample must lie in the box and be misclassified."""
    rng = np.random.default_rng(500 + chunk)
    for i in range(55):
        net, lo, hi, label, exact = _tiny_instance(rng)
        cfg = CONFIGS[i % len(CONFIGS)]
        res = branch_and_bound(net, lo, hi, label, deadline=time.monotonic() + 30, milp_fallback=False,
                               seed=i, **cfg)
        grid = _grid(lo, hi) if lo.size == 2 else None
        _check_verdicts(net, lo, hi, label, exact, res, grid)
        assert res.stats.domains >= 1 and res.stats.time < 30


def test_milp_fallback_agrees_with_brute_force():
    """The fallback path alone: max_domains=1 hands every subdomain to the exact MILP at once."""
    rng = np.random.default_rng(77)
    used = 0
    for i in range(30):
        net, lo, hi, label, exact = _tiny_instance(rng)
        res = branch_and_bound(net, lo, hi, label, deadline=time.monotonic() + 30, attack=False, max_domains=1,
                               milp_max_domains=16 if i % 2 else 0, steps=0, root_steps=0)
        _check_verdicts(net, lo, hi, label, exact, res)
        used += bool(res.stats.fallback)
    assert used >= 5


def _brute_force_subdomain(net, lo, hi, root, splits, label, target):
    """Exact min over the split subdomain: brute_force_min_margin adds the sign constraint of every
    neuron's phase, so clamping the split neurons' bounds restricts it to the subdomain."""
    clamped = []
    for i, b in enumerate(root):
        lower, upper = b.lower.copy(), b.upper.copy()
        if i in splits:
            act, ina = splits[i]
            lower[act] = 0.0
            upper[ina] = -1e-300  # u <= 0 (and not "unstable"): phase inactive, row z <= 0
        clamped.append(Bounds(lower, upper))
    return brute_force_min_margin(net, lo, hi, clamped, label, target)


def test_subdomain_milp_is_exact_under_splits():
    """The subdomain MILP (fixed binaries) has the subdomain's exact minimum, at a point of the
    subdomain; an empty subdomain is infeasible."""
    rng = np.random.default_rng(5)
    checked = empty = 0
    for i in range(60):
        d = int(rng.integers(2, 4))
        net = random_net(rng, [d, 5, 5, 3])
        lo, hi = random_box(rng, d)
        root = symbolic_bounds(net, lo, hi)
        unstable = [np.flatnonzero(b.unstable) for b in root]
        if sum(u.size for u in unstable) > 8 or sum(u.size for u in unstable) < 2:
            continue
        splits, arr = {}, []
        for layer, u in enumerate(unstable):
            s = np.zeros(root[layer].lower.size, dtype=np.int8)
            pick = rng.choice(u, size=min(u.size, int(rng.integers(0, 3))), replace=False) if u.size else []
            s[pick] = rng.choice([-1, 1], size=len(pick))
            splits[layer] = (s == 1, s == -1)
            arr.append(s)
        label, target = (int(v) for v in rng.choice(3, size=2, replace=False))
        exact = _brute_force_subdomain(net, lo, hi, root, splits, label, target)
        bounds = split_bounds(net, lo, hi, splits, root)
        if bounds is None:
            assert exact == np.inf  # the bounds only call a subdomain empty when it is
            empty += 1
            continue
        milp, logits = exact_encoding(net, arr, lo, hi, bounds, root)
        res = solve_highs(margin_objective(milp, logits, label, target), 30, cutoff=None, stop_on_negative=False,
                          feasibility_tol=1e-9)
        if exact == np.inf:
            assert res.solver_status.startswith("Infeasible")
            empty += 1
            continue
        # (solve_highs's box-centre check may add "invalid bounds": the centre need not lie in the
        # subdomain -- why bab.py solves subdomain MILPs without it.)
        assert res.solver_status.startswith("Optimal")
        assert res.objective_value == pytest.approx(exact, abs=1e-6), i
        pre = net.preactivations(res.x)
        for layer, s in enumerate(arr):
            assert np.all(pre[layer][0][s == 1] >= -1e-6) and np.all(pre[layer][0][s == -1] <= 1e-6)
        checked += 1
    assert checked >= 20


def test_beta_bounds_are_sound_for_any_multipliers():
    """relax.backsub64 with random slopes in [0, 1] and random (also large) multipliers >= 0 never
    exceeds the exact minimum over the split subdomain, nor any sampled point of it; optimize()
    does not lose to the plain CROWN bound (beta = 0, CROWN's slopes) by more than rounding."""
    from hamverify.bounds.rows import backsub64, crown_alpha_init, optimize, stack_rows

    rng = np.random.default_rng(12)
    checked = 0
    for i in range(40):
        d = int(rng.integers(2, 4))
        net = random_net(rng, [d, 5, 5, 3])
        lo, hi = random_box(rng, d)
        root = symbolic_bounds(net, lo, hi)
        unstable = [np.flatnonzero(b.unstable) for b in root]
        if not 2 <= sum(u.size for u in unstable) <= 8:
            continue
        arr, splits = [], {}
        for layer, u in enumerate(unstable):
            s = np.zeros(root[layer].lower.size, dtype=np.int8)
            pick = rng.choice(u, size=min(u.size, 2), replace=False) if u.size else []
            s[pick] = rng.choice([-1, 1], size=len(pick))
            arr.append(s)
            splits[layer] = (s == 1, s == -1)
        bounds = split_bounds(net, lo, hi, splits, root)
        label = int(rng.integers(3))
        targets = np.array([j for j in range(3) if j != label])
        exact = np.array([_brute_force_subdomain(net, lo, hi, root, splits, label, j) for j in targets])
        if bounds is None or not np.all(np.isfinite(exact)):
            continue
        X = lo + (hi - lo) * rng.random((4000, d))
        inside = np.ones(len(X), dtype=bool)
        for p, s in zip(net.preactivations(X), arr):
            inside &= np.all(p[:, s == 1] >= 0, axis=1) & np.all(p[:, s == -1] <= 0, axis=1)
        sampled = np.full(targets.size, np.inf)
        if inside.any():
            z = net.forward(X[inside])
            sampled = (z[:, [label]] - z[:, targets]).min(axis=0)
        layers = stack_rows([bounds], [arr], [targets.size])
        C = np.zeros((targets.size, 3))
        C[:, label] = 1.0
        C[np.arange(targets.size), targets] = -1.0
        for trial in range(5):
            alpha = [rng.random(L.free.shape) for L in layers]
            beta = [rng.exponential(0.3 if trial < 3 else 30.0, L.free.shape) for L in layers]
            lb = backsub64(net, lo, hi, layers, C, alpha, beta)[0]
            assert np.all(lb <= exact + 1e-9) and np.all(lb <= sampled + 1e-9), (i, trial)
        plain = backsub64(net, lo, hi, layers, C, crown_alpha_init(layers), None)[0]
        a, b, _ = optimize(net, lo, hi, layers, C, crown_alpha_init(layers), [np.zeros(L.free.shape) for L in layers],
                           30, 0.1)
        best = backsub64(net, lo, hi, layers, C, a, b)[0]
        assert np.all(best <= exact + 1e-9)
        assert np.all(best >= plain - 1e-5)
        checked += 1
    assert checked >= 10


def _small_conv(seed: int) -> Network:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 6), nn.ReLU(),
                          nn.Linear(6, 3))
    net = from_torch(model.eval().double(), (1, 7, 7))
    assert net.affines[0].conv is not None  # BaB's torch bounds run the conv as a (transposed) convolution
    return net


def _milp_verdicts(net, lo, hi, label, bounds):
    milp, logits = encode_network(net, lo, hi, bounds)
    out = {}
    for j in range(net.num_classes):
        if j != label:
            out[j] = solve_highs(margin_objective(milp, logits, label, j), 60).status
    return out


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_agrees_with_the_milp_on_small_nets(kind):
    rng = np.random.default_rng({"mlp": 21, "conv": 22}[kind])
    decided = 0
    for i in range(12):
        if kind == "mlp":
            net = random_net(rng, [6, 10, 10, 3])
            lo, hi = random_box(rng, 6)
        else:
            net = _small_conv(i)
            x = rng.random(49)
            r = rng.uniform(0.05, 0.2)
            lo, hi = np.clip(x - r, 0, 1), np.clip(x + r, 0, 1)
        label = int(np.argmax(net.forward((lo + hi) / 2)[0]))
        bounds = symbolic_bounds(net, lo, hi)
        # Move the smallest margin near zero (both signs), measured by the MILP's optimum.
        milp, logits = encode_network(net, lo, hi, bounds)
        mins = [solve_highs(margin_objective(milp, logits, label, j), 60, cutoff=None,
                            stop_on_negative=False).objective_value for j in range(3) if j != label]
        net = _shift(net, label, (0.02 if i % 2 else -0.02) - min(mins))
        reference = _milp_verdicts(net, lo, hi, label, bounds)
        res = branch_and_bound(net, lo, hi, label, deadline=time.monotonic() + 60, milp_fallback=False,
                               attack=bool(i % 3 == 0), seed=i, intermediate="inherit" if i % 2 else "refine",
                               branching="fsb" if i % 3 == 1 else "babsr")
        if all(v == "robust" for v in reference.values()):
            assert res.status == "robust", (i, reference, res)
        else:
            assert res.status == "counterexample", (i, reference, res)
            assert reference[res.cex_target] == "counterexample"
            assert np.all(res.counterexample >= lo) and np.all(res.counterexample <= hi)
        for j, v in res.verdicts.items():
            assert v != "robust" or reference[j] == "robust"
        decided += 1
        assert res.stats.branched >= 0
    assert decided == 12


def _hard_instance():
    """Twin copies of one net: the margin is 0.05 everywhere, only provable through both copies."""
    rng = np.random.default_rng(3)
    net = twin_net(rng, 8, 24, 24, margin=0.05)
    lo, hi = np.zeros(8), np.ones(8)
    return net, lo, hi


@pytest.mark.parametrize("budget", [-1.0, 0.5])
def test_deadline_is_honoured(budget):
    net, lo, hi = _hard_instance()
    warm_up_optimizer()  # a process's first torch optimizer costs ~1.4 s (hamverify.cascade), whoever builds it
    t = time.monotonic()
    res = branch_and_bound(net, lo, hi, 0, deadline=t + budget, milp_fallback=True)
    elapsed = time.monotonic() - t
    assert elapsed < max(budget, 0) + 0.5, elapsed
    assert res.status == "timeout" and res.verdicts[1] == "timeout"
    assert res.lower_bounds[1] == -np.inf


def test_milp_fallback_gets_only_the_remaining_time():
    net, lo, hi = _hard_instance()
    t = time.monotonic()
    res = branch_and_bound(net, lo, hi, 0, deadline=t + 2.0, milp_after=0.25, attack=False)
    elapsed = time.monotonic() - t
    assert elapsed < 2.0 + 0.6, elapsed
    assert res.stats.fallback and res.stats.milp_solves >= 1
    assert res.status in ("timeout", "robust")  # robust only if the MILP finished in time


def test_domain_and_memory_limits_without_fallback_give_unknown():
    net, lo, hi = _hard_instance()
    for kw in (dict(max_domains=3), dict(max_memory_mb=1e-3)):
        res = branch_and_bound(net, lo, hi, 0, deadline=time.monotonic() + 20, milp_fallback=False, attack=False, **kw)
        assert res.status == "unknown" and res.verdicts[1] == "unknown", res
        assert "no MILP fallback" in res.reason and res.stats.domains < 100


def test_a_stalled_search_stops_early_and_proves_nothing_it_left_open():
    """``stall_after``: with no target proven since the start, the search stops after stall_after
    seconds -- long before the deadline -- and its open target is unknown."""
    net, lo, hi = _hard_instance()
    t = time.monotonic()
    res = branch_and_bound(net, lo, hi, 0, deadline=t + 30, milp_fallback=False, attack=False, stall_after=0.5)
    elapsed = time.monotonic() - t
    assert res.status == "unknown" and res.verdicts[1] == "unknown", res
    assert "no target proven" in res.reason and 0.5 <= elapsed < 10.0, (elapsed, res.reason)
    assert res.lower_bounds[1] == -np.inf


def test_stall_rule_keeps_every_verdict_sound_on_tiny_instances():
    """A short stall window changes when the search gives up, never what it proves (brute force)."""
    rng = np.random.default_rng(17)
    for _ in range(60):
        net, lo, hi, label, exact = _tiny_instance(rng)
        res = branch_and_bound(net, lo, hi, label, deadline=time.monotonic() + 10, milp_fallback=False,
                               stall_after=0.0)
        for j, v in res.verdicts.items():
            assert v != "robust" or exact[j] > 0
            assert v != "counterexample" or exact[j] < 0 or j == res.cex_target


def test_validator_decides_what_counts_as_a_counterexample():
    rng = np.random.default_rng(9)
    seen = 0
    for i in range(20):
        net, lo, hi, label, exact = _tiny_instance(rng)
        if min(exact.values()) >= 0:
            continue
        seen += 1
        rejected = branch_and_bound(net, lo, hi, label, deadline=time.monotonic() + 10, validate=lambda p: None,
                                    milp_fallback=False)
        assert rejected.status != "counterexample" and rejected.counterexample is None
        assert all(v != "robust" or exact[j] > 0 for j, v in rejected.verdicts.items())
        calls = []

        def validate(p):
            calls.append(p)
            z = net.forward(p)[0]
            m = z[label] - np.delete(z, label).max()
            return (p, m) if m < 0 else None

        accepted = branch_and_bound(net, lo, hi, label, deadline=time.monotonic() + 10, validate=validate)
        assert accepted.status == "counterexample" and calls
        assert any(np.array_equal(accepted.counterexample, c) for c in calls)
    assert seen >= 5


CONV_SPECS = [  # (C_in, H, W, C_out, kernel, stride, padding, dilation, groups)
    (1, 7, 7, 2, 3, 2, 0, 1, 1),
    (2, 8, 6, 4, (3, 2), (2, 1), (1, 0), 1, 2),
    (3, 9, 9, 3, 2, 3, 2, 2, 3),
    (1, 28, 28, 16, 4, 2, 1, 1, 1),  # mnist_small's first layer
]


@pytest.mark.parametrize("spec", CONV_SPECS)
def test_conv_row_products_equal_dense_products(spec):
    """relax.row_products applies W as a transposed convolution: equal to the dense rows @ W."""
    from hamverify.bounds.rows import row_products
    from hamverify.models import Normalize
    c_in, h, w, c_out, k, stride, pad, dil, groups = spec
    torch.manual_seed(sum(map(hash, map(str, spec))) % 1000)
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, dilation=dil, groups=groups)
    bn = nn.BatchNorm2d(c_out).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-2, 2)
    mean, std = tuple(np.linspace(0.2, 0.6, c_in)), tuple(np.linspace(0.3, 0.9, c_in))
    model = nn.Sequential(Normalize(mean, std), conv, bn, nn.ReLU(), nn.Flatten()).eval().double()
    out = model[:3](torch.zeros(1, c_in, h, w, dtype=torch.float64))
    model.append(nn.Linear(out.numel(), 3).double())
    net = from_torch(model, (c_in, h, w))
    assert net.affines[0].conv is not None  # Normalize and BatchNorm folded into the conv's weights
    ops = row_products(net, torch.float64)
    A = torch.from_numpy(np.random.default_rng(1).normal(size=(5, net.affines[0].out_features)))
    dense = A.numpy() @ net.affines[0].dense()
    np.testing.assert_allclose(ops[0](A).numpy(), dense, rtol=1e-10, atol=1e-10)


def test_targets_and_arguments():
    rng = np.random.default_rng(10)
    net, lo, hi, label, exact = _tiny_instance(rng)
    others = [j for j in range(3) if j != label]
    res = branch_and_bound(net, lo, hi, label, targets=others[:1], deadline=time.monotonic() + 10)
    assert list(res.verdicts) == others[:1]
    unlimited = branch_and_bound(net, lo, hi, label)  # no deadline: runs to a verdict
    assert unlimited.status == ("counterexample" if min(exact.values()) < 0 else "robust")
    assert branch_and_bound(net, lo, hi, label, targets=[label]).status == "robust"  # nothing to prove
    with pytest.raises(HamverifyError):
        branch_and_bound(net, lo, hi, label, branching="nope")
    with pytest.raises(HamverifyError):
        branch_and_bound(net, lo, hi, 7)
    with pytest.raises(HamverifyError):
        branch_and_bound(net, lo[:1], hi[:1], label)
    assert set(BRANCHING) >= {"babsr", "widest", "input"}
