"""The per-input pipeline (hamverify.verify.Verifier) end to end: soundness and completeness against
brute force on tiny nets, PGD consistency on small conv nets, counterexample validation against
doctored solver answers, the per-input timeout, and HiGHS vs PuLP(CBC) agreement (METHOD.md §5).

Most tests run the cascade's MILP core (``stages="milp"``: bounds, the paper's PGD, one MILP per
open class), so that the MILP stage has work to do; the default cascade (margin attack,
alpha-CROWN, BaB before the MILP) is checked against the same brute force too."""
from __future__ import annotations

import collections
import copy
import time

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

import hamverify.milp.highs as highs_backend
from hamverify.attacks import PGD
from hamverify.milp import COUNTEREXAMPLE, ROBUST, TIMEOUT, UNKNOWN, SolveResult
from hamverify.models import ReLUNet
from hamverify.network import from_torch
from hamverify.verify import Verifier, VerifySettings

try:  # tests/milp's helpers: tests/ is on sys.path under pytest's default import mode
    from milp import brute_force_min_margin, interval_bounds, twin_net
except ImportError:  # tests/ as a package
    from tests.milp import brute_force_min_margin, interval_bounds, twin_net

TIGHTENINGS = ("ia", "symbolic", "lp")
NEAR_ZERO = 1e-5  # |exact min margin| below this: only "never wrong" is required


def _settings(eps, tightening="ia", backend="highs", timeout=5.0, **kw):
    kw = {"pgd_steps": 5, "pgd_restarts": 1, "lp_time_per_neuron": 0.5, **kw}
    return VerifySettings(eps=eps, timeout=timeout, tightening=tightening, backend=backend, **kw)


def _random_weights(model, rng, bias_scale=0.5):
    with torch.no_grad():
        for p in model.parameters():
            scale = 1.0 if p.ndim >= 2 else bias_scale
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)) * scale))
    return model.float().eval()


def _tiny_mlp(rng, d, h, h2, k):
    return _random_weights(ReLUNet(nn.Flatten(), nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h2), nn.ReLU(),
                                   nn.Linear(h2, k)), rng)


def _margin64(model, x, label, shape):
    """z_label - max_{j != label} z_j of an independent float64 copy of the torch model."""
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        z = m(torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(1, *shape)))[0].numpy()
    return float(z[label] - np.delete(z, label).max())


def _box(x, eps):
    return np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)


# ------------------------------------------------------------------------------------------ brute force


def exact_min_margin(net, lo, hi, label, n_samples=1024, seed=0) -> float:
    """``min_{x in box} z_label(x) - max_{j != label} z_j(x)`` exactly: a depth-first enumeration of
    the activation patterns of the (interval-)unstable ReLUs, pruning patterns whose region is empty
    (known non-empty when a sample point has that pattern, else one feasibility LP), then one LP per
    region and target class (scipy's linprog) unless the target's margin is bounded below, over the
    whole box, by a value already attained.  The closed regions cover the box."""
    d = net.input_size
    rng = np.random.default_rng(seed)
    samples = np.vstack([lo + (hi - lo) * rng.random((n_samples, d)), (lo + hi) / 2])
    sample_pre = net.preactivations(samples)
    ib = interval_bounds(net, lo, hi)
    box = list(zip(lo, hi))
    W_out, b_out = net.affines[-1].dense(), net.affines[-1].b
    others = [j for j in range(net.num_classes) if j != label]
    z = net.forward(samples)
    best = [float((z[:, label] - np.delete(z, label, axis=1).max(1)).min())]  # an upper bound to start from

    def lp(cost, A, b):
        return linprog(cost, A_ub=np.vstack(A) if A else None, b_ub=np.array(b) if A else None,
                       bounds=box, method="highs")

    def leaf(G, g, A, b):
        for j in others:
            c = W_out[label] - W_out[j]
            cost, const = c @ G, c @ g + b_out[label] - b_out[j]
            if np.minimum(cost * lo, cost * hi).sum() + const >= best[0]:
                continue  # not even the whole box goes below the best value found: skip the LP
            res = lp(cost, A, b)
            if res.status == 0:
                best[0] = min(best[0], res.fun + const)

    def layer(k, G, g, A, b, mask):
        if k == len(net.affines) - 1:
            return leaf(G, g, A, b)
        aff = net.affines[k]
        Gz, gz = aff.dense() @ G, aff.dense() @ g + aff.b
        base = (ib[k].lower >= 0).astype(float)
        unstable = np.flatnonzero((ib[k].lower < 0) & (ib[k].upper > 0))

        def neuron(i, phase, A, b, mask):
            if i == len(unstable):
                return layer(k + 1, phase[:, None] * Gz, phase * gz, A, b, mask)
            n = unstable[i]
            for on in (1.0, 0.0):
                sign = -1.0 if on else 1.0  # active: -z <= 0; inactive: z <= 0
                A2, b2 = A + [sign * Gz[n]], b + [-sign * gz[n]]
                m2 = mask & ((sample_pre[k][:, n] >= 0) if on else (sample_pre[k][:, n] <= 0))
                if m2.any() or lp(np.zeros(d), A2, b2).status == 0:
                    p2 = phase.copy()
                    p2[n] = on
                    neuron(i + 1, p2, A2, b2, m2)

        neuron(0, base, A, b, mask)

    layer(0, np.eye(d), np.zeros(d), [], [], np.ones(len(samples), dtype=bool))
    return best[0]


def test_brute_force_matches_sampling_and_full_enumeration():
    """The oracle itself: never above the smallest sampled margin, and equal to the unpruned
    enumeration of tests/milp (one LP per pattern) on a few nets."""
    rng = np.random.default_rng(5)
    for _ in range(6):
        d = int(rng.integers(2, 5))
        model = _tiny_mlp(rng, d, 4, 4, 3)
        net = from_torch(copy.deepcopy(model).double(), (d,))
        lo, hi = _box(rng.random(d), 0.4)
        label = int(rng.integers(3))
        exact = exact_min_margin(net, lo, hi, label)
        bounds = interval_bounds(net, lo, hi)
        full = min(brute_force_min_margin(net, lo, hi, bounds, label, j) for j in range(3) if j != label)
        assert exact == pytest.approx(full, abs=1e-8)
        pts = lo + (hi - lo) * rng.random((2000, d))
        z = net.forward(pts)
        sampled = (z[:, label] - np.delete(z, label, axis=1).max(1)).min()
        assert exact <= sampled + 1e-9


# ------------------------------------------------------------------------------ tiny-net instances


def _instances(n=210, seed=2024):
    """Random tiny MLPs (d = 2..4, two hidden layers of 3..5, 3 classes), N(0,1) weights, eps large
    enough that interval bounds leave several unstable ReLUs; label = prediction (10 %: another class)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        d, h, h2 = int(rng.integers(2, 5)), int(rng.integers(3, 6)), int(rng.integers(3, 6))
        model = _tiny_mlp(rng, d, h, h2, 3)
        x = rng.random(d)
        eps = float(rng.choice([0.25, 0.4, 0.6]))
        with torch.no_grad():
            pred = int(model.double()(torch.from_numpy(x[None]))[0].argmax())
        model.float()
        label = pred if rng.random() > 0.1 else int((pred + rng.integers(1, 3)) % 3)
        out.append(dict(i=i, model=model, d=d, x=x, eps=eps, label=label, tightening=TIGHTENINGS[i % 3]))
    return out


@pytest.fixture(scope="module")
def tiny_results():
    """Every instance through the Verifier's MILP core (HiGHS), through the default cascade
    (``rec_default``), and the brute force, once per module."""
    torch.manual_seed(0)
    rows = []
    for inst in _instances():
        v = Verifier(inst["model"], (inst["d"],), _settings(inst["eps"], inst["tightening"], stages="milp"))
        rec, cex = v.verify(inst["x"], inst["label"], inst["i"])
        full = Verifier(inst["model"], (inst["d"],), _settings(inst["eps"], inst["tightening"]))
        rec_default, cex_default = full.verify(inst["x"], inst["label"], inst["i"])
        lo, hi = _box(inst["x"], inst["eps"])
        exact = exact_min_margin(v.net, lo, hi, inst["label"])
        rows.append(dict(inst, rec=rec, cex=cex, rec_default=rec_default, cex_default=cex_default, exact=exact,
                         lo=lo, hi=hi))
    return rows


def test_verdicts_agree_with_brute_force(tiny_results):
    decided = collections.Counter()
    compared = 0
    for r in tiny_results:
        rec, exact = r["rec"], r["exact"]
        what = (r["i"], r["tightening"], r["eps"], exact, rec.status, rec.decided_by, rec.reason)
        # Soundness, whatever the margin: never verified below 0, never falsified above 0.
        assert not (rec.status == "verified" and exact < 0), what
        assert not (rec.status == "falsified" and exact > 0), what
        if abs(exact) < NEAR_ZERO:
            assert rec.status in ("verified", "falsified", "misclassified", "unknown"), what
            continue
        compared += 1
        # Completeness on these tiny nets: always decided, and decided right.
        assert rec.status in ("verified", "falsified", "misclassified"), what
        if rec.status == "misclassified":
            assert exact < 0 and rec.predicted != rec.label and rec.decided_by == "clean", what
        else:
            assert (rec.status == "verified") == (exact > 0), what
            assert (rec.status == "falsified") == (exact < 0), what
        decided[(r["tightening"], rec.status, rec.decided_by)] += 1
    assert compared >= 200, compared
    total = lambda pred: sum(v for k, v in decided.items() if pred(*k))  # noqa: E731
    # The MILP stage does a good share of the work, on every tightening, in both directions.
    assert total(lambda t, s, by: by == "milp") >= 25, decided
    for tightening in TIGHTENINGS:
        assert total(lambda t, s, by: t == tightening and by == "milp") >= 3, (tightening, decided)
    assert total(lambda t, s, by: s == "verified" and by == "milp") >= 10, decided
    assert total(lambda t, s, by: s == "falsified" and by == "milp") >= 5, decided
    assert total(lambda t, s, by: by == "bounds") >= 20, decided
    assert total(lambda t, s, by: by == "pgd") >= 20, decided
    assert total(lambda t, s, by: s == "misclassified") >= 5, decided


def test_default_cascade_agrees_with_brute_force(tiny_results):
    """The default cascade (margin attack, alpha, BaB, MILP) on the same instances: never wrong,
    always decided away from 0, every counterexample valid, and its margin attack takes over
    counterexamples that the MILP core left to the solver."""
    by = collections.Counter()
    for r in tiny_results:
        rec, cex, exact = r["rec_default"], r["cex_default"], r["exact"]
        what = (r["i"], r["tightening"], r["eps"], exact, rec.status, rec.decided_by, rec.reason)
        assert not (rec.status == "verified" and exact < 0), what
        assert not (rec.status == "falsified" and exact > 0), what
        if rec.status == "falsified":
            _assert_valid_counterexample(r["model"], (r["d"],), r["x"], r["eps"], r["label"], rec, cex)
            assert rec.pgd_robust is (rec.decided_by != "pgd"), what
        if abs(exact) >= NEAR_ZERO:
            assert rec.status in ("verified", "falsified", "misclassified"), what
        if rec.status == "verified":
            assert rec.pgd_robust is True, what
        # The paper's PGD column does not depend on the stages after it.
        assert rec.pgd_robust == r["rec"].pgd_robust, what
        assert set(rec.stage_times) <= {"clean", "bounds", "pgd", "attack", "lp", "alpha", "bab", "milp"}, what
        by[rec.decided_by] += 1
    milp_core_cex = sum(r["rec"].status == "falsified" and r["rec"].decided_by == "milp" for r in tiny_results)
    assert by["attack"] >= 1 and by["attack"] + by["milp"] >= 1, by
    assert by["pgd"] == sum(r["rec"].decided_by == "pgd" for r in tiny_results), by
    assert milp_core_cex >= 5, milp_core_cex


def test_records_are_complete(tiny_results):
    for r in tiny_results:
        rec = r["rec"]
        assert rec.index == r["i"] and rec.label == r["label"] and rec.eps == r["eps"]
        assert rec.tightening == r["tightening"] and rec.backend == "highs"
        assert rec.time_total >= rec.time_pgd + rec.time_bounds + rec.time_build + rec.time_solve - 1e-9
        if rec.decided_by == "milp":
            assert rec.milp_binaries is not None and rec.targets_solved >= 1 and rec.solver_status
        if rec.status == "verified":
            assert rec.pgd_robust is True and r["cex"] is None
            proof = rec.objective_bound if rec.decided_by == "milp" else rec.margin_bounds_min
            assert proof is None or proof >= 1e-6  # HiGHS: infeasible under the cutoff tol proves >= tol
        if rec.decided_by == "bounds":
            assert rec.margin_bounds_min <= r["exact"] + 1e-7  # a bound, never above the truth


def _assert_valid_counterexample(model, shape, x, eps, label, rec, cex):
    lo, hi = _box(np.asarray(x, dtype=np.float64).ravel(), eps)
    assert cex is not None and rec.cex_margin is not None and rec.cex_margin < 0
    p = np.asarray(cex, dtype=np.float64).ravel()
    assert p.shape == lo.shape
    assert np.all(p >= lo) and np.all(p <= hi) and np.all(p >= 0) and np.all(p <= 1)
    assert np.max(np.abs(p - np.asarray(x).ravel())) <= eps + 1e-12
    m = _margin64(model, p, label, shape)
    assert m < 0
    assert m == pytest.approx(rec.cex_margin, abs=1e-9)


def test_every_counterexample_is_in_the_box_and_misclassified(tiny_results):
    falsified = [r for r in tiny_results if r["rec"].status == "falsified"]
    assert len(falsified) >= 25
    for r in falsified:
        _assert_valid_counterexample(r["model"], (r["d"],), r["x"], r["eps"], r["label"], r["rec"], r["cex"])
    for r in tiny_results:
        if r["rec"].status != "falsified":
            assert r["cex"] is None and r["rec"].cex_margin is None


def test_highs_and_pulp_agree_through_the_verifier(tiny_results):
    milp_decided = [r for r in tiny_results if r["rec"].decided_by == "milp"]
    picked = (milp_decided[:16] + [r for r in tiny_results if r["rec"].decided_by == "bounds"][:4])
    assert len(picked) == 20 and sum(r["rec"].decided_by == "milp" for r in picked) >= 12
    for r in picked:
        v = Verifier(r["model"], (r["d"],), _settings(r["eps"], r["tightening"], backend="pulp", stages="milp"))
        rec, cex = v.verify(r["x"], r["label"], r["i"])
        assert rec.backend == "pulp"
        assert (rec.status, rec.decided_by) == (r["rec"].status, r["rec"].decided_by), (r["i"], rec)
        if rec.status == "falsified":
            _assert_valid_counterexample(r["model"], (r["d"],), r["x"], r["eps"], r["label"], rec, cex)


# ----------------------------------------------------------------------------- small conv nets


def _conv_net(rng, k):
    return _random_weights(ReLUNet(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 6), nn.ReLU(),
                                   nn.Linear(6, k)), rng, bias_scale=0.3)


def test_never_verified_where_pgd_finds_an_adversarial_example():
    """Random conv nets on 1x6x6 inputs: wherever an independent, stronger PGD (other seeds, more
    restarts) finds a point the float64 model misclassifies, the verifier (run with a deliberately
    weak PGD of its own, so that the MILP has to find it) must not say verified - it says falsified
    with a valid counterexample; and wherever the verifier says verified, that PGD finds nothing."""
    rng = np.random.default_rng(7)
    shape = (1, 6, 6)
    broken = verified = milp_falsified = 0
    for i in range(60):
        k = int(rng.integers(2, 5))
        model = _conv_net(rng, k)
        x = rng.random(shape)
        with torch.no_grad():
            label = int(model(torch.from_numpy(x[None]).float())[0].argmax())
        eps = float(rng.choice([0.05, 0.1, 0.2]))
        v = Verifier(model, shape, _settings(eps, TIGHTENINGS[i % 3], pgd_steps=1, pgd_restarts=1, seed=i,
                                             stages="milp"))
        rec, cex = v.verify(x, label, i)
        assert rec.status in ("verified", "falsified", "misclassified"), rec

        attack = PGD(eps, steps=30, restarts=4, generator=torch.Generator().manual_seed(1000 + i))
        x_adv = attack(model, torch.from_numpy(x[None]).float(), torch.tensor([label]))[0].double().numpy()
        lo, hi = _box(x.ravel(), eps)
        adv = np.clip(x_adv.ravel(), lo, hi)
        if _margin64(model, adv, label, shape) < 0:
            broken += 1
            assert rec.status != "verified", (i, rec)
            if rec.status == "falsified":
                _assert_valid_counterexample(model, shape, x, eps, label, rec, cex)
        milp_falsified += rec.status == "falsified" and rec.decided_by == "milp"
        if rec.status == "verified":
            verified += 1
            pts = np.clip(x.ravel() + rng.uniform(-eps, eps, (500, x.size)), 0, 1)
            with torch.no_grad():
                z = copy.deepcopy(model).double()(torch.from_numpy(pts.reshape(-1, *shape)))
            assert (z.argmax(1) == label).all()
    assert broken >= 12 and verified >= 12 and milp_falsified >= 3, (broken, verified, milp_falsified)


# ----------------------------------------------------------------------- doctored solver answers


@pytest.fixture(scope="module")
def milp_instance(tiny_results):
    """An instance that reaches the MILP stage and is truly robust (margin well above 0)."""
    for r in tiny_results:
        if r["rec"].decided_by == "milp" and r["rec"].status == "verified" and r["rec"].targets_solved >= 2:
            return r
    pytest.fail("no MILP-decided robust instance among the tiny nets")


def _fake_solver(results):
    """A stand-in for solve_highs returning the given SolveResults in turn (the last one repeats)."""
    calls = []

    def solve(milp, time_limit, tol=1e-6, seed_point=None, **kw):
        calls.append(milp)
        return results[min(len(calls) - 1, len(results) - 1)]
    solve.calls = calls
    return solve


def _result(status, x=None, objective_value=None, objective_bound=None):
    return SolveResult(status=status, objective_value=objective_value, objective_bound=objective_bound, x=x,
                       solve_time=0.0, solver_status=f"doctored {status}")


def _verify(r, **kw):
    v = Verifier(r["model"], (r["d"],), _settings(r["eps"], r["tightening"], **kw))
    return v.verify(r["x"], r["label"], r["i"])


def test_doctored_counterexample_is_rejected(milp_instance, monkeypatch):
    r = milp_instance
    # The clean input itself is correctly classified: a solver claiming it is a counterexample lies.
    fake = _fake_solver([_result(COUNTEREXAMPLE, x=r["x"].copy(), objective_value=-0.5)])
    monkeypatch.setattr(highs_backend, "solve_highs", fake)
    rec, cex = _verify(r)
    assert fake.calls, "the MILP stage was not reached"
    assert rec.status == "unknown" and rec.decided_by is None and cex is None
    assert rec.cex_margin is None and rec.counterexample is None
    assert "not misclassified" in rec.reason


@pytest.mark.parametrize("point", ["nan", "outside"])
def test_doctored_points_outside_or_invalid_are_rejected(milp_instance, monkeypatch, point):
    r = milp_instance
    x = r["x"].copy()
    # "outside": far outside B(x) ∩ [0,1]; it is projected onto the box before the float64 check,
    # and the projection (a box corner) is not misclassified since the instance is robust.
    signs = np.where(np.arange(len(x)) % 2 == 0, 1.0, -1.0)
    p = np.full_like(x, np.nan) if point == "nan" else x + 50.0 * signs
    monkeypatch.setattr(highs_backend, "solve_highs", _fake_solver([_result(COUNTEREXAMPLE, x=p, objective_value=-1.0)]))
    rec, cex = _verify(r)
    assert rec.status == "unknown" and cex is None, rec


def test_doctored_robust_answers_only_count_when_all_targets_are_proven(milp_instance, monkeypatch):
    r = milp_instance
    # One target proven, the other unknown: unknown, not verified.
    monkeypatch.setattr(highs_backend, "solve_highs",
                        _fake_solver([_result(ROBUST, objective_bound=0.3), _result(UNKNOWN)]))
    rec, _ = _verify(r)
    assert rec.targets_solved >= 2 and rec.status == "unknown" and rec.decided_by is None, rec
    # A solver time-out on any target: timeout.
    monkeypatch.setattr(highs_backend, "solve_highs", _fake_solver([_result(TIMEOUT)]))
    rec, _ = _verify(r)
    assert rec.status == "timeout" and rec.decided_by is None
    # Unknown everywhere: unknown with the solver's reason.
    monkeypatch.setattr(highs_backend, "solve_highs", _fake_solver([_result(UNKNOWN)]))
    rec, _ = _verify(r)
    assert rec.status == "unknown" and "doctored unknown" in rec.reason
    # A robust answer without a bound still gives a well-formed verified record.
    monkeypatch.setattr(highs_backend, "solve_highs", _fake_solver([_result(ROBUST, objective_bound=None)]))
    rec, _ = _verify(r)
    assert rec.status == "verified" and rec.decided_by == "milp"
    rec.to_json()


def test_doctored_robust_cannot_override_a_pgd_counterexample(tiny_results, monkeypatch):
    """The solver is only asked once PGD failed: a lying 'robust' cannot hide a PGD-found point."""
    r = next(r for r in tiny_results if r["rec"].decided_by == "pgd")
    fake = _fake_solver([_result(ROBUST, objective_bound=1.0)])
    monkeypatch.setattr(highs_backend, "solve_highs", fake)
    rec, cex = _verify(r)
    assert rec.status == "falsified" and rec.decided_by == "pgd" and not fake.calls
    _assert_valid_counterexample(r["model"], (r["d"],), r["x"], r["eps"], r["label"], rec, cex)


# ------------------------------------------------------------------------------------------- timeout


def _twin_model(d=8, n1=20, n2=20):
    """tests/milp's known-hard net as a torch model: logit 0 - logit 1 = 0.05 everywhere, ~80
    unstable ReLUs over [0,1]^8, provable only by deep branching."""
    net = twin_net(np.random.default_rng(0), d=d, n1=n1, n2=n2)
    a1, a2, a3 = net.affines
    model = ReLUNet(nn.Flatten(), nn.Linear(d, 2 * n1), nn.ReLU(), nn.Linear(2 * n1, 2 * n2), nn.ReLU(),
                    nn.Linear(2 * n2, 2))
    with torch.no_grad():
        for lin, aff in zip([model[1], model[3], model[5]], [a1, a2, a3]):
            lin.weight.copy_(torch.from_numpy(aff.dense()))
            lin.bias.copy_(torch.from_numpy(aff.b))
    return model.eval()


@pytest.mark.parametrize("backend", ["highs", "pulp"])
def test_one_second_budget_on_a_hard_instance_ends_as_timeout(backend):
    model = _twin_model()
    x = np.full(8, 0.5)
    v = Verifier(model, (8,), _settings(0.5, "ia", backend=backend, timeout=1.0, pgd_steps=5, pgd_restarts=1))
    start = time.monotonic()
    rec, cex = v.verify(x, 0, 0)
    elapsed = time.monotonic() - start
    assert rec.status == "timeout", rec
    assert cex is None and rec.decided_by is None and rec.reason
    assert rec.milp_binaries is not None and rec.milp_binaries >= 60
    assert elapsed < 2.5, elapsed
    assert rec.time_total <= elapsed


def test_flat_and_image_input_shapes_give_the_same_record():
    """Verifier takes x flat or in input_shape; a (d,) input_shape works for MLPs."""
    rng = np.random.default_rng(3)
    model = _tiny_mlp(rng, 4, 5, 5, 3)
    x = rng.random(4)
    v = Verifier(model, (4,), _settings(0.3))
    with torch.no_grad():
        label = int(model(torch.from_numpy(x[None]).float())[0].argmax())
    a, _ = v.verify(x, label, 1)
    b, _ = v.verify(x.reshape(1, 4), label, 1)
    assert (a.status, a.decided_by, a.margin_bounds_min) == (b.status, b.decided_by, b.margin_bounds_min)
