"""The verification cascade (hamverify.cascade) shared by `verify` and `vnnlib`: which stage decides,
that every falsified input carries a float64-validated point, that each stage honours its deadline
(also with a busy sibling process on the machine), that both commands go through it, and that the
faster symbolic bounds equal the straightforward back-substitution."""
from __future__ import annotations

import copy
import multiprocessing
import pathlib
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

import hamverify.cascade as cascade
from hamverify import HamverifyError
from hamverify.bounds import interval_bounds, margin_lower_bounds, symbolic_bounds
from hamverify.bounds import symbolic as S
from hamverify.bounds.interval import LayerBounds, affine_interval, relu_interval
from hamverify.models import ReLUNet
from hamverify.network import Affine, Network
from hamverify.verify import Verifier, VerifySettings

try:  # tests/milp's helpers: tests/ is on sys.path under pytest's default import mode
    from milp import twin_net
except ImportError:  # pragma: no cover
    from tests.milp import twin_net

REPO = pathlib.Path(__file__).resolve().parents[1]
SLACK = 2.0  # seconds a budget may be exceeded by (issue 13: "60 s + 2 s under a loaded machine")


# ------------------------------------------------------------------------------------------ models

def planted_net(d: int = 20) -> nn.Module:
    """tests/test_attacks_margin.py's planted network: at x = 0.5, eps 0.3, the only counterexample
    (class 2) sits at the all-upper corner, and CE PGD walks away from it."""
    lin1, lin2 = nn.Linear(d, 2), nn.Linear(2, 3)
    with torch.no_grad():
        lin1.weight.copy_(torch.stack([torch.full((d,), 1.0 / d), torch.full((d,), -1.0 / d)]))
        lin1.bias.copy_(torch.tensor([0.0, 1.0]))
        lin2.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 10.0], [40.0, 0.0]]))
        lin2.bias.copy_(torch.tensor([0.0, -9.0, -31.5]))
    return ReLUNet(nn.Flatten(), lin1, nn.ReLU(), lin2).eval()


def twin_model(d=8, n1=20, n2=20):
    """tests/milp's known-hard net (logit 0 - logit 1 = 0.05 everywhere, ~80 unstable ReLUs)."""
    net = twin_net(np.random.default_rng(0), d=d, n1=n1, n2=n2)
    model = ReLUNet(nn.Flatten(), nn.Linear(d, 2 * n1), nn.ReLU(), nn.Linear(2 * n1, 2 * n2), nn.ReLU(),
                    nn.Linear(2 * n2, 2))
    with torch.no_grad():
        for lin, aff in zip([model[1], model[3], model[5]], net.affines):
            lin.weight.copy_(torch.from_numpy(aff.dense()))
            lin.bias.copy_(torch.from_numpy(aff.b))
    return model.eval()


def margin64(model, x, label):
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        z = m(torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(1, -1)))[0].numpy()
    return float(z[label] - np.delete(z, label).max())


def random_net(rng, sizes, sparse_layers=()):
    affs = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = rng.standard_normal((b, a)) / np.sqrt(a)
        if i in sparse_layers:
            W[rng.random(W.shape) < 0.7] = 0.0
            W = sp.csr_matrix(W)
        affs.append(Affine(W, rng.standard_normal(b) * 0.2))
    return Network(tuple(affs), (sizes[0],))


# ------------------------------------------------------------------------------------ which stage

def test_attack_stage_finds_what_the_papers_pgd_misses_and_validates_it():
    model = planted_net()
    x = np.full(20, 0.5)
    v = Verifier(model, (20,), VerifySettings(eps=0.3, timeout=30))
    rec, cex = v.verify(x, 0, 0)
    assert rec.status == "falsified" and rec.decided_by == "attack", rec
    assert rec.pgd_robust is True  # the paper's PGD-20x10 ran and missed it
    assert {"bounds", "pgd", "attack"} <= set(rec.stage_times) and "milp" not in rec.stage_times
    p = np.asarray(cex, dtype=np.float64).ravel()
    assert np.all(p >= 0.2 - 1e-12) and np.all(p <= 0.8 + 1e-12)
    assert margin64(model, p, 0) < 0 and rec.cex_margin == pytest.approx(margin64(model, p, 0), abs=1e-12)
    # Without the attack stage the MILP finds it; the PGD column is the same.
    old = Verifier(model, (20,), VerifySettings(eps=0.3, timeout=30, stages="milp"))
    rec2, cex2 = old.verify(x, 0, 0)
    assert rec2.status == "falsified" and rec2.decided_by == "milp" and rec2.pgd_robust is True
    assert margin64(model, cex2, 0) < 0


def small_relu_model(seed: int, sizes=(6, 32, 32, 32, 3)) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return ReLUNet(*layers[:-1]).double().eval()


def test_alpha_tightening_agrees_with_the_milp_and_never_loosens_the_bounds():
    """tightening "alpha": the alpha stage optimizes the intermediate bounds of inputs the margins
    leave open; every verdict equals the MILP's alone, and the record's unstable ReLUs never
    exceed the symbolic bounds' count."""
    checked = tightened = 0
    for seed in range(12):
        model = small_relu_model(seed)
        x = np.random.default_rng(seed).random(6)
        label = int(model(torch.from_numpy(x[None]))[0].argmax())
        for eps in (0.1, 0.3):
            new = Verifier(model, (6,), VerifySettings(eps=eps, timeout=30, tightening="alpha", stages="alpha,milp"))
            ref = Verifier(model, (6,), VerifySettings(eps=eps, timeout=30, stages="milp"))
            rec, _ = new.verify(x, label, 0)
            rec_ref, _ = ref.verify(x, label, 0)
            assert rec.status == rec_ref.status, (seed, eps, rec, rec_ref)
            lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
            sym = sum(int(b.unstable.sum()) for b in symbolic_bounds(new.net, lo, hi))
            assert sum(rec.unstable_per_layer) <= sym
            checked += 1
            tightened += sum(rec.unstable_per_layer) < sym
    assert checked == 24 and tightened > 0  # the optimization ran and removed unstable ReLUs somewhere


def _bab_settings_seen(monkeypatch, keys, **settings) -> set:
    """Verify six small nets with ``stages="bab,milp"`` and ``settings``; every verdict must equal
    the MILP's alone.  Returns the set of ``branch_and_bound`` keyword values ``keys`` it ran with."""
    import hamverify.bab as bab
    seen = []
    real = bab.branch_and_bound

    def spy(*args, **kwargs):
        seen.append(tuple(kwargs[k] for k in keys))
        return real(*args, **kwargs)

    monkeypatch.setattr(bab, "branch_and_bound", spy)
    for seed in range(6):
        model = small_relu_model(seed)
        x = np.random.default_rng(seed).random(6)
        label = int(model(torch.from_numpy(x[None]))[0].argmax())
        new = Verifier(model, (6,), VerifySettings(eps=0.3, timeout=30, stages="bab,milp", **settings))
        ref = Verifier(model, (6,), VerifySettings(eps=0.3, timeout=30, stages="milp"))
        assert new.verify(x, label, 0)[0].status == ref.verify(x, label, 0)[0].status, seed
    assert seen
    return set(seen)


def test_fsb_branching_reaches_the_search_and_agrees_with_the_milp(monkeypatch):
    """``bab_branching`` is what the cascade's BaB runs with; with "fsb" every verdict equals the
    MILP's alone."""
    assert _bab_settings_seen(monkeypatch, ("branching",), bab_branching="fsb") == {("fsb",)}


def test_inherited_bounds_and_batch_reach_the_search_and_agree_with_the_milp(monkeypatch):
    """``bab_intermediate`` / ``bab_batch`` are what the cascade's BaB runs with; with the
    parent's bounds inherited and 32 subdomains a batch every verdict equals the MILP's alone."""
    assert _bab_settings_seen(monkeypatch, ("intermediate", "batch"), bab_intermediate="inherit",
                              bab_batch=32) == {("inherit", 32)}


def test_a_proof_by_the_bounds_runs_no_attack():
    model = planted_net()
    x = np.full(20, 0.5)
    v = Verifier(model, (20,), VerifySettings(eps=0.01, timeout=30))
    rec, cex = v.verify(x, 0, 0)
    assert rec.status == "verified" and rec.decided_by == "bounds" and cex is None
    assert rec.pgd_robust is True and rec.open_after_bounds == 0
    assert set(rec.stage_times) == {"clean", "bounds"} and rec.time_pgd == 0.0


def test_counterexamples_from_every_stage_are_validated(monkeypatch):
    """Attack and solver points that the float64 model does not misclassify never count."""
    model = planted_net()
    x = np.full(20, 0.5)
    v = Verifier(model, (20,), VerifySettings(eps=0.3, timeout=30))
    monkeypatch.setattr(Verifier, "validate_counterexample", lambda self, *a, **k: None)
    rec, cex = v.verify(x, 0, 0)
    assert rec.status in ("unknown", "timeout") and cex is None, rec
    assert rec.pgd_robust is True


def test_stages_setting_is_normalized_and_checked():
    assert VerifySettings(eps=0.1, stages="milp, attack").stages == "attack,milp"
    assert VerifySettings(eps=0.1, stages="none").stages == "none"
    assert VerifySettings(eps=0.1).stages == "attack,alpha,bab,milp"
    with pytest.raises(HamverifyError, match="unknown stage"):
        VerifySettings(eps=0.1, stages="attack,magic")
    with pytest.raises(HamverifyError, match="strictly between"):
        VerifySettings(eps=0.1, lp_share=1.0)
    with pytest.raises(HamverifyError, match="attack_steps"):
        VerifySettings(eps=0.1, attack_steps=-1)
    with pytest.raises(HamverifyError, match="bab_branching"):
        VerifySettings(eps=0.1, bab_branching="input")  # input splits are for low-dimensional boxes only
    assert VerifySettings(eps=0.1, bab_branching="fsb").cascade_config().bab_branching == "fsb"
    with pytest.raises(HamverifyError, match="bab_intermediate"):
        VerifySettings(eps=0.1, bab_intermediate="fresh")
    with pytest.raises(HamverifyError, match="bab_batch"):
        VerifySettings(eps=0.1, bab_batch=0)
    assert VerifySettings(eps=0.1, bab_batch=4).cascade_config().bab_batch == 4
    from hamverify.records import RESUME_SETTINGS
    assert {"stages", "attack_steps", "attack_restarts", "alpha_steps", "lp_share", "bab_share",
            "bab_branching", "bab_intermediate", "bab_batch"} <= set(RESUME_SETTINGS)


def test_without_milp_open_targets_end_unknown():
    model = twin_model()
    v = Verifier(model, (8,), VerifySettings(eps=0.5, timeout=20, stages="attack"))
    rec, cex = v.verify(np.full(8, 0.5), 0, 0)
    assert rec.status == "unknown" and "open after the last stage" in rec.reason and cex is None


# -------------------------------------------------------------------------- one cascade, both tools

def test_verify_and_vnnlib_go_through_the_same_cascade(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from hamverify.onnx_io import IRModule, model_to_onnx, save_onnx
    from hamverify.vnncomp import solve_instance
    calls = []
    real = cascade.run_cascade

    def spy(problem, budget, cfg):
        out = real(problem, budget, cfg)
        calls.append((type(problem).__name__, out.verdict, out.decided_by))
        return out

    monkeypatch.setattr(cascade, "run_cascade", spy)
    model = planted_net()
    v = Verifier(model, (20,), VerifySettings(eps=0.3, timeout=30))
    rec, _ = v.verify(np.full(20, 0.5), 0, 0)
    assert calls == [("_InputProblem", "falsified", "attack")] and rec.decided_by == "attack"

    net = v.net
    path = save_onnx(model_to_onnx(IRModule(net).float(), net.input_shape), tmp_path / "planted.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(20)] + [f"(declare-const Y_{j} Real)" for j in range(3)]
    lines += [f"(assert (>= X_{i} 0.2))\n(assert (<= X_{i} 0.8))" for i in range(20)]
    lines += ["(assert (or (and (>= Y_1 Y_0)) (and (>= Y_2 Y_0))))"]
    spec = tmp_path / "planted.vnnlib"
    spec.write_text("\n".join(lines) + "\n")
    res = solve_instance(path, spec, 30)
    assert res.result == "sat" and res.decided_by == "attack"
    assert calls[-1] == ("_BoxProblem", "falsified", "attack")
    assert "attack" in res.stage_times and "bounds" in res.stage_times


# ------------------------------------------------------------------------------- stage deadlines

def test_symbolic_bounds_past_their_deadline_keep_ia_and_stay_sound():
    rng = np.random.default_rng(0)
    net = random_net(rng, [10, 30, 30, 20, 4], sparse_layers=(1,))
    lo, hi = rng.random(10) * 0.5, rng.random(10) * 0.5 + 0.5
    ia = interval_bounds(net, lo, hi)
    late = symbolic_bounds(net, lo, hi, deadline=time.monotonic() - 1)
    full = symbolic_bounds(net, lo, hi)
    pts = lo + (hi - lo) * rng.random((2000, 10))
    pre = net.preactivations(pts)
    for b_ia, b_late, b_full, z in zip(ia, late, full, pre):
        assert np.all(b_late.lower <= z.min(0) + 1e-9) and np.all(b_late.upper >= z.max(0) - 1e-9)
        assert np.all(b_full.lower >= b_late.lower - 1e-9) and np.all(b_full.upper <= b_late.upper + 1e-9)
        np.testing.assert_allclose(b_late.lower, b_ia.lower, rtol=1e-12, atol=1e-12)
    assert any(np.any(f.lower > i.lower + 1e-6) for f, i in zip(full, ia))  # symbolic does tighten


def test_lp_stage_honours_its_deadline():
    rng = np.random.default_rng(1)
    net = random_net(rng, [20, 60, 60, 60, 5])
    lo, hi = np.zeros(20), np.ones(20)
    bounds = symbolic_bounds(net, lo, hi)
    t = time.monotonic()
    same = cascade.lp_stage(net, lo, hi, bounds, 0.5, deadline=t - 1)
    assert time.monotonic() - t < 0.5
    for a, b in zip(same, bounds):
        np.testing.assert_array_equal(a.lower, b.lower)
    t = time.monotonic()
    tightened = cascade.lp_stage(net, lo, hi, bounds, 0.5, deadline=t + 0.3)
    assert time.monotonic() - t < 0.3 + SLACK
    for a, b in zip(tightened, bounds):
        assert np.all(a.lower >= b.lower - 1e-9) and np.all(a.upper <= b.upper + 1e-9)


def test_alpha_stage_honours_its_deadline():
    model = twin_model()
    v = Verifier(model, (8,), VerifySettings(eps=0.5))
    lo, hi = np.zeros(8), np.ones(8)
    bounds = symbolic_bounds(v.net, lo, hi)
    t = time.monotonic()
    margins = cascade.alpha_stage(v.net, lo, hi, 0, [1], bounds, steps=100_000, deadline=t + 0.3, stop_at=1e-6)
    assert time.monotonic() - t < 0.3 + SLACK
    assert margins[1] >= margin_lower_bounds(v.net, lo, hi, bounds, 0)[1] - 1e-12


def test_papers_pgd_and_bab_honour_their_deadlines():
    from hamverify.verify import PGD_GRACE
    model = twin_model()
    v = Verifier(model, (8,), VerifySettings(eps=0.5, pgd_steps=200, pgd_restarts=1000))
    x = np.full(8, 0.5)
    t = time.monotonic()
    point = v._pgd(x, 0, 0, deadline=t + 0.2)
    assert time.monotonic() - t < 0.2 + PGD_GRACE + SLACK and point.shape == (8,)
    if cascade.bab_module() is None:
        pytest.skip("hamverify.bab is not installed")
    from hamverify.verify import _InputProblem
    from hamverify.records import VerificationRecord
    lo, hi = np.zeros(8), np.ones(8)
    problem = _InputProblem(v, x, lo, hi, 0, VerificationRecord(index=0, label=0))
    bounds = symbolic_bounds(v.net, lo, hi)
    t = time.monotonic()
    res = cascade.bab_stage(problem, 0, [1], bounds, t + 0.5, 1e-6)
    assert time.monotonic() - t < 0.5 + SLACK
    assert res.verdicts[1] in ("timeout", "unknown", "robust")


def test_milp_encoding_is_not_started_after_the_deadline():
    model = twin_model()
    v = Verifier(model, (8,), VerifySettings(eps=0.5))
    from hamverify.records import VerificationRecord
    from hamverify.verify import _InputProblem
    lo, hi = np.zeros(8), np.ones(8)
    rec = VerificationRecord(index=0, label=0)
    problem = _InputProblem(v, np.full(8, 0.5), lo, hi, 0, rec)
    budget = cascade.Budget(1.0, start=time.monotonic() - 5)
    out = problem.milp([1], symbolic_bounds(v.net, lo, hi), budget, cascade.StageTimes())
    assert out.verdict == "timeout" and rec.milp_rows is None


def _spin(stop_at: float):
    while time.time() < stop_at:
        pass


@pytest.fixture
def busy_sibling():
    """A sibling process spinning on a core (and one more on a 2-core machine) while the test runs."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_spin, args=(time.time() + 60,), daemon=True) for _ in range(2)]
    for p in procs:
        p.start()
    yield
    for p in procs:
        p.terminate()
        p.join(5)


@pytest.mark.parametrize("tightening", ["symbolic", "alpha", "lp"])
def test_a_budget_ends_in_time_under_load(busy_sibling, tightening):
    """The hard twin instance with every stage on and a 4 s budget, beside busy processes: the input
    ends within the budget + 2 s, and an overrun would be in the record."""
    model = twin_model()
    v = Verifier(model, (8,), VerifySettings(eps=0.5, timeout=4.0, tightening=tightening))
    t = time.monotonic()
    rec, cex = v.verify(np.full(8, 0.5), 0, 0)
    elapsed = time.monotonic() - t
    assert elapsed <= 4.0 + SLACK, (elapsed, rec.stage_times)
    assert rec.status in ("timeout", "verified"), rec
    assert (rec.overrun is not None) == (rec.time_total > 4.0)
    assert sum(rec.stage_times.values()) <= rec.time_total + 1e-6


def test_a_vnnlib_budget_ends_in_time_under_load(busy_sibling, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from hamverify.onnx_io import IRModule, model_to_onnx, save_onnx
    from hamverify.vnncomp import solve_instance
    net = twin_net(np.random.default_rng(0), d=8, n1=20, n2=20)
    path = save_onnx(model_to_onnx(IRModule(net).float(), net.input_shape), tmp_path / "twin.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(8)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))" for i in range(8)] + ["(assert (>= Y_1 Y_0))"]
    spec = tmp_path / "twin.vnnlib"
    spec.write_text("\n".join(lines) + "\n")
    t = time.monotonic()
    res = solve_instance(path, spec, 4.0)
    assert time.monotonic() - t <= 4.0 + SLACK, res
    assert res.result in ("timeout", "unsat"), res


# ------------------------------------------------------------------------- symbolic bounds, faster

def _reference_backsub(net, relaxations, layer, A, const, lo, hi):
    """The straightforward back-substitution: full-width dense rows through every ReLU and map."""
    A = A.toarray() if sp.issparse(A) else np.array(A, dtype=np.float64)
    for i in reversed(range(layer)):
        r = relaxations[i]
        pos = np.maximum(A, 0.0)
        const = const + pos @ r.upper_intercept
        A = np.where(A > 0, A * r.upper_slope, A * r.lower_slope)
        W = net.affines[i].dense()
        const = const + A @ net.affines[i].b
        A = A @ W
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    return A @ mid + np.abs(A) @ rad + const


def _reference_symbolic(net, lo, hi):
    bounds = interval_bounds(net, lo, hi)
    relax = [S.relu_relaxation(bounds[0])]
    for j in range(1, len(bounds)):
        cur = bounds[j].intersect(affine_interval(net.affines[j], *relu_interval(bounds[j - 1])))
        rows = np.flatnonzero(cur.unstable)
        if rows.size:
            W = net.affines[j].dense()[rows]
            b = net.affines[j].b[rows]
            ub = _reference_backsub(net, relax, j, np.vstack([W, -W]), np.concatenate([b, -b]), lo, hi)
            cur.lower[rows] = np.maximum(cur.lower[rows], -ub[rows.size:])
            cur.upper[rows] = np.minimum(cur.upper[rows], ub[:rows.size])
        bounds[j] = cur
        relax.append(S.relu_relaxation(cur))
    return bounds


@pytest.mark.parametrize("seed", range(6))
def test_symbolic_bounds_equal_the_reference(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(4, 12))] + [int(rng.integers(5, 40)) for _ in range(int(rng.integers(2, 5)))] + [3]
    net = random_net(rng, sizes, sparse_layers=tuple(i for i in range(len(sizes) - 1) if rng.random() < 0.5))
    c = rng.random(sizes[0])
    lo, hi = c - rng.uniform(0.05, 0.5), c + rng.uniform(0.05, 0.5)
    ref = _reference_symbolic(net, lo, hi)
    new = symbolic_bounds(net, lo, hi)
    for a, b in zip(ref, new):
        scale = 1 + np.abs(a.lower) + np.abs(a.upper)
        assert np.all(b.lower >= a.lower - 1e-9 * scale) and np.all(b.upper <= a.upper + 1e-9 * scale)
        np.testing.assert_allclose(b.lower, a.lower, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(b.upper, a.upper, rtol=1e-9, atol=1e-9)
    label = int(rng.integers(3))
    m_new = margin_lower_bounds(net, lo, hi, new, label)
    spec_rows = np.eye(3)[label] - np.eye(3)
    relax = [S.relu_relaxation(b) for b in ref]
    for j in range(3):
        if j == label:
            continue
        last = net.affines[-1]
        A = spec_rows[j] @ last.dense()
        ref_m = -_reference_backsub(net, relax, len(net.affines) - 1, -A[None], np.array([-(spec_rows[j] @ last.b)]),
                                    lo, hi)[0]
        assert m_new[j] >= ref_m - 1e-9 * (1 + abs(ref_m))


def test_symbolic_bounds_of_the_shipped_mnist_model_equal_the_reference():
    from hamverify.models import INPUT_SHAPE, load_checkpoint
    from hamverify.network import from_torch
    path = REPO / "models" / "mnist_small_hamming_0.1.pt"
    if not path.is_file():
        pytest.skip("shipped MNIST model missing")
    model, _ = load_checkpoint(path)
    net = from_torch(model.double(), INPUT_SHAPE["mnist"])
    rng = np.random.default_rng(0)
    x = (rng.random(784) > 0.8).astype(float)
    lo, hi = np.clip(x - 0.1, 0, 1), np.clip(x + 0.1, 0, 1)
    ref = _reference_symbolic(net, lo, hi)
    new = symbolic_bounds(net, lo, hi)
    for a, b in zip(ref, new):
        np.testing.assert_allclose(b.lower, a.lower, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(b.upper, a.upper, rtol=1e-9, atol=1e-9)


def test_prior_bounds_are_respected():
    rng = np.random.default_rng(9)
    net = random_net(rng, [6, 20, 20, 3])
    lo, hi = np.zeros(6), np.ones(6)
    full = symbolic_bounds(net, lo, hi)
    prior = [LayerBounds(b.lower + 0.25 * (b.upper - b.lower), b.upper - 0.25 * (b.upper - b.lower)) for b in full]
    with_prior = symbolic_bounds(net, lo, hi, prior)
    for p, w in zip(prior, with_prior):
        assert np.all(w.lower >= p.lower) and np.all(w.upper <= p.upper)
