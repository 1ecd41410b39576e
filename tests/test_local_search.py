"""The trust-region MILP search (hamverify.local_search) and the cascade's ``local`` stage: against
brute force on tiny networks, descent from the start point, only validated points reported, the
deadline, and a falsified input through ``verify`` that carries a float64-checked point."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from hamverify.local_search import ir_margin, trust_region_search
from hamverify.models import ReLUNet
from hamverify.verify import Verifier, VerifySettings

try:  # sibling test modules: tests/ is on sys.path under pytest's default import mode
    from test_bab import _tiny_instance
    from test_cascade import planted_net, twin_model
except ImportError:  # pragma: no cover
    from tests.test_bab import _tiny_instance
    from tests.test_cascade import planted_net, twin_model

def _instance(rng):
    """tests/test_bab.py's tiny instance (2-3 inputs, <= 7 unstable ReLUs, exact minima by brute
    force, the smallest shifted to +-(1e-4 .. 0.01)) and its closest target."""
    net, lo, hi, label, exact = _tiny_instance(rng)
    target = min(exact, key=exact.get)
    return net, lo, hi, label, target, exact[target]


def _accept_negative(net, lo, hi, label, target):
    def accept(p):
        assert np.all(p >= lo) and np.all(p <= hi)
        return p if ir_margin(net, p, label, target) < 0 else None
    return accept


def test_a_radius_covering_the_box_agrees_with_brute_force():
    """With a sub-box that always covers the whole box the search is the exact MILP: it finds a
    point below 0 exactly when the brute-force minimum is negative (120 instances)."""
    rng = np.random.default_rng(11)
    disagreements, negatives = 0, 0
    for _ in range(120):
        net, lo, hi, label, target, exact = _instance(rng)
        start = rng.uniform(lo, hi)
        res = trust_region_search(net, lo, hi, label, target, start, time.monotonic() + 30,
                                  _accept_negative(net, lo, hi, label, target), radii=(2.0,))
        negatives += exact < 0
        disagreements += (res.found is not None) != (exact < 0)
        assert res.margin >= exact - 1e-6  # no point beats the exact minimum
    assert negatives >= 40
    assert disagreements == 0


def test_the_search_descends_and_reports_only_accepted_points():
    rng = np.random.default_rng(5)
    for _ in range(40):
        net, lo, hi, label, target, exact = _instance(rng)
        start = rng.uniform(lo, hi)
        res = trust_region_search(net, lo, hi, label, target, start, time.monotonic() + 30,
                                  lambda p: None)  # a validator that accepts nothing
        assert res.found is None
        assert np.all(res.point >= lo) and np.all(res.point <= hi)
        assert res.margin == pytest.approx(ir_margin(net, res.point, label, target))
        assert res.margin <= ir_margin(net, np.clip(start, lo, hi), label, target) + 1e-12
        assert res.margin >= exact - 1e-6


def test_the_search_stops_at_its_deadline():
    rng = np.random.default_rng(2)
    net, lo, hi, label, target, _ = _instance(rng)
    t = time.monotonic()
    res = trust_region_search(net, lo, hi, label, target, 0.5 * (lo + hi), t - 1.0, lambda p: p)
    assert res.solves == 0 and res.found is None
    assert time.monotonic() - t < 0.5


def planted_with_idle_relus(extra: int = 24, d: int = 20) -> nn.Module:
    """The planted net of tests/test_cascade.py plus ``extra`` hidden ReLUs that are unstable on
    the ball (zero at x = 0.5) and feed nothing: more than DIRECT_MILP_UNSTABLE, so the cascade
    does not go straight to the MILP."""
    base = planted_net(d)
    rng = np.random.default_rng(0)
    W = rng.normal(size=(extra, d))
    lin1, lin2 = nn.Linear(d, 2 + extra), nn.Linear(2 + extra, 3)
    with torch.no_grad():
        lin1.weight.copy_(torch.cat([base[1].weight, torch.from_numpy(W).float()]))
        lin1.bias.copy_(torch.cat([base[1].bias, torch.from_numpy(-0.5 * W.sum(axis=1)).float()]))
        lin2.weight.zero_()
        lin2.weight[:, :2] = base[3].weight
        lin2.bias.copy_(base[3].bias)
    return ReLUNet(nn.Flatten(), lin1, nn.ReLU(), lin2).eval()


def test_the_local_stage_falsifies_through_verify_with_a_float64_point():
    """The planted net: the paper's PGD misses the counterexample; with only ``local`` and ``milp``
    after it, the local stage's targeted search finds it, validated in float64."""
    model = planted_with_idle_relus()
    x = np.full(20, 0.5)
    v = Verifier(model, (20,), VerifySettings(eps=0.3, timeout=30, stages="local,milp"))
    rec, cex = v.verify(x, 0, 0)
    assert rec.status == "falsified" and rec.decided_by == "local"
    assert rec.pgd_robust is True  # the paper's PGD column keeps its meaning
    assert np.all(np.abs(cex - x) <= 0.3 + 1e-12) and np.all((cex >= 0) & (cex <= 1))
    with torch.no_grad():
        z = model.double()(torch.from_numpy(cex).view(1, 20))[0]
    assert z[0] < z[1:].max() and rec.cex_margin < 0


def test_the_local_stage_never_falsifies_a_robust_input():
    """The twin net is robust everywhere (margin 0.05) but no bound proves it: the local stage
    runs, spends time, and claims nothing."""
    model = twin_model()
    x = np.full(8, 0.5)
    v = Verifier(model, (8,), VerifySettings(eps=0.3, timeout=8, stages="local,milp"))
    rec, cex = v.verify(x, 0, 0)
    assert cex is None and rec.status in ("verified", "timeout")
    assert rec.stage_times.get("local", 0.0) > 0.0
