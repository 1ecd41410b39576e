"""Deciding VNN-COMP instances (hamverify.vnncomp): answers known by construction or by brute force,
both MILP formulations, the soundness guards (no sat without a validated counterexample, no unsat
without proofs), the result format, and the resumable CSV batch (API and CLI)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import hamverify.bounds  # noqa: E402
import hamverify.milp.highs  # noqa: E402
from hamverify import HamverifyError  # noqa: E402
from hamverify.cli import main  # noqa: E402
from hamverify.milp import SolveResult  # noqa: E402
from hamverify.network import Affine, Network  # noqa: E402
from hamverify.onnx_io import IRModule, import_onnx, model_to_onnx, onnx_run, onnx_session, save_onnx  # noqa: E402
from hamverify.vnncomp import (MODES, Checker, cex_path, constant_output, decide, float32_in_box,  # noqa: E402
                               read_results, run_batch, solve_instance)
from hamverify.vnnlib import parse_vnnlib  # noqa: E402

from milp import brute_force_min_margin, interval_bounds, random_net  # noqa: E402  (tests/milp helpers)




def write_net(path, net: Network):
    return save_onnx(model_to_onnx(IRModule(net).float(), net.input_shape), path)


def write_spec(path, lo, hi, n_out, output: str):
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {float(a)!r}))", f"(assert (<= X_{i} {float(b)!r}))"]
    path.write_text("\n".join(lines) + "\n" + output + "\n")
    return path


# y0 = relu(x0), y1 = relu(x1), y2 = 0.5: every answer below is known by construction.
HAND = Network((Affine(np.eye(2), np.zeros(2)), Affine(np.array([[1.0, 0], [0, 1], [0, 0]]), np.array([0, 0, 0.5]))),
               (2,))
EITHER = "(assert (or (and (>= Y_0 Y_2)) (and (>= Y_1 Y_2))))"
BOTH = "(assert (>= Y_0 Y_2))\n(assert (>= Y_1 Y_2))"
DISJ = "(assert (or (and (>= Y_0 Y_2) (<= Y_0 0.45)) (and (>= Y_1 0.52))))"
KNOWN = [  # (name, lo, hi, output, answer)
    ("robust", [-0.2, -0.2], [0.4, 0.4], EITHER, "unsat"),
    ("cex_in_box", [-0.2, -0.2], [0.6, 0.4], EITHER, "sat"),
    ("rows_conjoined", [0, 0], [1, 0.45], BOTH, "unsat"),  # Y_0 >= Y_2 alone is satisfiable
    ("rows_conjoined_sat", [0, 0], [1, 0.55], BOTH, "sat"),
    ("disjuncts_all_infeasible", [0, 0], [1, 0.5], DISJ, "unsat"),
    ("second_disjunct", [0, 0], [1, 0.6], DISJ, "sat"),
]


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand")
    net_path = write_net(root / "hand.onnx", HAND)
    specs = {name: write_spec(root / f"{name}.vnnlib", lo, hi, 3, out) for name, lo, hi, out, _ in KNOWN}
    return root, net_path, specs


def parse_sat(text):
    lines = text.strip().splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((") and lines[-1].endswith("))")
    values = {}
    for line in lines[1:]:
        name, value = line.strip(" ()").split()
        values[name] = float(value)
    return values


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,lo,hi,output,answer", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_answers(hand, mode, name, lo, hi, output, answer):
    _, net_path, specs = hand
    res = solve_instance(net_path, specs[name], 20, mode=mode)
    assert res.result == answer, res.reason
    if answer == "sat":
        values = parse_sat(res.vnncomp_text())
        x = np.array([values["X_0"], values["X_1"]])
        y = np.array([values[f"Y_{j}"] for j in range(3)])
        assert np.all((x >= lo) & (x <= hi))
        assert np.array_equal(x, x.astype(np.float32))  # what onnxruntime sees is what is reported
        np.testing.assert_allclose(y, onnx_run(onnx_session(net_path), x.reshape(1, 2)).ravel(), atol=1e-7)
        exact = HAND.forward(x)[0]
        if name == "second_disjunct":
            assert exact[1] >= 0.52
        elif output == BOTH:
            assert exact[0] >= 0.5 and exact[1] >= 0.5
        else:
            assert max(exact[0], exact[1]) >= 0.5


def test_input_box_disjunction(tmp_path):
    net_path = write_net(tmp_path / "hand.onnx", HAND)
    spec = tmp_path / "s.vnnlib"
    spec.write_text("(declare-const X_0 Real)(declare-const X_1 Real)" + "".join(
        f"(declare-const Y_{j} Real)" for j in range(3)) +
        "(assert (or (and (>= X_0 0) (<= X_0 0.3) (>= X_1 0) (<= X_1 0.3))"
        "            (and (>= X_0 0.7) (<= X_0 0.9) (>= X_1 0) (<= X_1 0.3))))"
        "(assert (>= Y_0 Y_2))")
    res = solve_instance(net_path, spec, 20)
    assert res.result == "sat" and 0.7 <= res.x[0] <= 0.9
    spec.write_text(spec.read_text().replace("(>= X_0 0.7) (<= X_0 0.9)", "(>= X_0 0.1) (<= X_0 0.45)"))
    assert solve_instance(net_path, spec, 20).result == "unsat"


# --------------------------------------------------------------------------- random nets vs brute force

def _brute_force_cases(root, per_answer=3):
    """Random small nets and boxes, robust ones only where symbolic bounds cannot prove it; the exact
    minimum margin (float32 weights, as in the ONNX file) is known by pattern enumeration."""
    rng = np.random.default_rng(7)
    cases = {"sat": [], "unsat": []}
    for attempt in range(400):
        if min(len(v) for v in cases.values()) >= per_answer:
            break
        net = random_net(rng, (3, 6, 5, 3))
        c, r = rng.random(3), rng.uniform(0.05, 0.3)
        lo, hi = c - r, c + r
        label = int(np.argmax(net.forward(c)[0]))
        bounds = interval_bounds(net, lo, hi)
        if sum(int(((b.lower < 0) & (b.upper > 0)).sum()) for b in bounds) > 8:
            continue
        sym = hamverify.bounds.compute_bounds(net, lo, hi, "symbolic")
        if np.delete(hamverify.bounds.margin_lower_bounds(net, lo, hi, sym, label), label).min() > -0.05:
            continue  # bounds (nearly) prove it: not a MILP instance
        name = f"r{attempt}"
        path = write_net(root / f"{name}.onnx", net)
        net = import_onnx(path).net  # the float32-rounded weights are the network
        bounds = interval_bounds(net, lo, hi)
        truth = min(brute_force_min_margin(net, lo, hi, bounds, label, t) for t in range(3) if t != label)
        answer = "sat" if truth < 0 else "unsat"
        if abs(truth) < 1e-3 or len(cases[answer]) >= per_answer:
            continue
        out = "(assert (or " + " ".join(f"(and (>= Y_{t} Y_{label}))" for t in range(3) if t != label) + "))"
        cases[answer].append((path, write_spec(root / f"{name}.vnnlib", lo, hi, 3, out), answer))
    return cases["sat"] + cases["unsat"]


@pytest.fixture(scope="module")
def brute(tmp_path_factory):
    return _brute_force_cases(tmp_path_factory.mktemp("brute"))


@pytest.mark.parametrize("mode", MODES)
def test_random_nets_agree_with_brute_force_without_pgd(brute, mode, monkeypatch):
    original = Checker.attack

    def no_pgd(self, lo, hi, disjuncts, starts=None, **kw):  # only the polishing of solver points stays
        return original(self, lo, hi, disjuncts, starts=starts, **kw) if starts else []

    monkeypatch.setattr(Checker, "attack", no_pgd)
    answers = [case[2] for case in brute]
    assert "sat" in answers and "unsat" in answers
    for path, spec, answer in brute:
        res = solve_instance(path, spec, 30, mode=mode)
        assert res.result == answer, (path.name, res.reason)
        assert res.decided_by == "milp" and res.milp_solves > 0


# ------------------------------------------------------------------------------------- soundness guards

def test_no_sat_without_validation(hand, monkeypatch):
    _, net_path, specs = hand
    monkeypatch.setattr(Checker, "validate", lambda self, *a, **k: None)
    res = solve_instance(net_path, specs["cex_in_box"], 20)
    assert res.result == "unknown" and "not confirmed" in res.reason


@pytest.mark.parametrize("status,expected", [("unknown", "unknown"), ("timeout", "timeout")])
def test_no_unsat_without_a_final_solver_status(hand, monkeypatch, status, expected):
    _, net_path, specs = hand

    def no_proof(net, lo, hi, bounds, C):
        return np.full(len(C), -np.inf)  # bounds prove nothing: every disjunct goes to the MILP

    monkeypatch.setattr(hamverify.bounds, "specification_lower_bounds", no_proof)
    assert solve_instance(net_path, specs["robust"], 20).result == "unsat"  # the MILP proves it
    monkeypatch.setattr(hamverify.milp.highs, "solve_highs",
                        lambda *a, **k: SolveResult(status, None, None, None, 0.0, "doctored"))
    assert solve_instance(net_path, specs["robust"], 20).result == expected


def test_size_mismatch_is_one_line(hand, tmp_path):
    _, net_path, _ = hand
    spec = write_spec(tmp_path / "s.vnnlib", [0, 0, 0], [1, 1, 1], 3, "(assert (>= Y_0 Y_1))")
    with pytest.raises(HamverifyError) as exc:
        solve_instance(net_path, spec, 10)
    assert "3 inputs" in str(exc.value) and "\n" not in str(exc.value)


def test_float32_in_box():
    lo, hi = np.array([0.1, 0.2, -1.0]), np.array([0.1 + 2e-9, 0.3, 1.0])  # float32(0.1) > 0.1
    x = float32_in_box([0.1, 0.25, 2.0], lo, hi)
    assert np.array_equal(x, x.astype(np.float32)) and np.all((x >= lo) & (x <= hi))
    assert float32_in_box([0.1], np.array([0.1 + 1e-12]), np.array([0.1 + 2e-12])) is None


# -------------------------------------------------------------------------------------------- batches

def _instances(root, specs, extra=()):
    rows = [["hand.onnx", f"{name}.vnnlib", "20"] for name in ("robust", "cex_in_box", "rows_conjoined")]
    rows += [list(r) for r in extra]
    with open(root / "instances.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root / "instances.csv"


def test_batch_csv_resume_and_errors(hand, tmp_path, monkeypatch):
    root, _, specs = hand
    instances = _instances(root, specs, [("hand.onnx", "missing.vnnlib", "5")])
    results = tmp_path / "out" / "results.csv"
    rows = run_batch(instances, results, workers=1, log=lambda m: None)
    assert [r[:3] for r in rows] == [["hand.onnx", "robust.vnnlib", "unsat"], ["hand.onnx", "cex_in_box.vnnlib", "sat"],
                                     ["hand.onnx", "rows_conjoined.vnnlib", "unsat"],
                                     ["hand.onnx", "missing.vnnlib", "error"]]
    assert all(float(r[3]) >= 0 for r in rows)
    cex_file = cex_path(results, "hand.onnx", "cex_in_box.vnnlib")
    assert cex_file.parent == tmp_path / "out" / "results.csv.cex" and cex_file.name.startswith("hand__cex_in_box__")
    assert rows[1][4] == "results.csv.cex/" + cex_file.name  # the sat row names its file
    assert cex_file.read_text().startswith("sat\n((X_0 ")
    assert "not found" in rows[3][4]  # the error row keeps its reason
    # resume: nothing is decided again; a torn last line is dropped and only that instance reruns
    text = results.read_text().splitlines()
    results.write_text("\n".join(text[:-1]) + "\nhand.onnx,missing.vnn")
    calls = []
    import hamverify.vnncomp as vnncomp
    real = vnncomp.solve_instance
    monkeypatch.setattr(vnncomp, "solve_instance", lambda *a, **k: calls.append(a) or real(*a, **k))
    rows2 = run_batch(instances, results, workers=1, log=lambda m: None, retry_errors=False)
    assert len(calls) == 1 and str(calls[0][1]).endswith("missing.vnnlib")
    assert [r[:3] for r in rows2] == [r[:3] for r in rows]
    assert len(read_results(results)) == 4 and len(results.read_text().splitlines()) == 4


def test_cli_single_and_batch(hand, tmp_path):
    root, net_path, specs = hand
    runner = CliRunner()
    out = tmp_path / "r.txt"
    res = runner.invoke(main, ["vnnlib", "--onnx", str(net_path), "--vnnlib", str(specs["cex_in_box"]),
                               "--timeout", "20", "--results", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("sat\n((X_0 ") and res.stdout == out.read_text()
    res = runner.invoke(main, ["vnnlib", "--onnx", str(net_path), "--vnnlib", str(specs["robust"])])
    assert res.exit_code == 0 and res.stdout == "unsat\n"
    instances = _instances(root, specs)
    res = runner.invoke(main, ["vnnlib", "--instances", str(instances), "--results", str(tmp_path / "b.csv"),
                               "--workers", "2"])
    assert res.exit_code == 0, res.output
    with open(tmp_path / "b.csv") as f:
        assert [r[2] for r in csv.reader(f)] == ["unsat", "sat", "unsat"]
    for args, needle in ((["--instances", str(instances)], "--results"),
                         (["--instances", str(instances), "--onnx", str(net_path), "--results", "x.csv"], "not both"),
                         (["--onnx", str(net_path)], "--vnnlib"),
                         (["--onnx", str(net_path), "--vnnlib", str(root / "nope.vnnlib")], "not found")):
        res = runner.invoke(main, ["vnnlib", *args])
        assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)(assert (>= Y_5 0))")
    res = runner.invoke(main, ["vnnlib", "--onnx", str(net_path), "--vnnlib", str(bad)])
    assert res.exit_code == 2 and "undeclared variable Y_5" in res.output


def test_cli_stages_choose_the_cascade(hand, tmp_path, monkeypatch):
    """--stages reaches the cascade (single instance and batch rows) and a bad list is one line."""
    from hamverify import vnncomp
    root, net_path, specs = hand
    seen = []
    real = vnncomp.decide
    monkeypatch.setattr(vnncomp, "decide", lambda *a, **k: seen.append(k["stages"]) or real(*a, **k))
    runner = CliRunner()
    res = runner.invoke(main, ["vnnlib", "--onnx", str(net_path), "--vnnlib", str(specs["cex_in_box"]),
                               "--stages", "milp"])
    assert res.exit_code == 0 and res.stdout.startswith("sat\n")  # the MILP alone finds the counterexample
    res = runner.invoke(main, ["vnnlib", "--instances", str(_instances(root, specs)), "--results",
                               str(tmp_path / "b.csv"), "--stages", "alpha,milp"])
    assert res.exit_code == 0, res.output
    assert seen == [("milp",)] + [("alpha", "milp")] * 3
    res = runner.invoke(main, ["vnnlib", "--onnx", str(net_path), "--vnnlib", str(specs["robust"]),
                               "--stages", "attack,bogus"])
    assert res.exit_code == 2 and "unknown stage(s) bogus" in res.output and len(res.output.strip().splitlines()) == 1


# ------------------------------------------------------------------- issue 16: batch files and resume

def test_cex_files_of_specs_differing_after_a_dot(hand, tmp_path):
    """Issue 16.1: prop_7_0.03 and prop_7_0.05 of one network each get their own counterexample file."""
    root, _, _ = hand
    boxes = {"prop_7_0.03.vnnlib": ([0.55, 0.0], [0.6, 0.1]), "prop_7_0.05.vnnlib": ([0.8, 0.2], [0.9, 0.3])}
    for name, (lo, hi) in boxes.items():
        write_spec(root / name, lo, hi, 3, EITHER)
    sub = root / "other"
    sub.mkdir(exist_ok=True)
    write_net(sub / "hand.onnx", HAND)
    write_spec(sub / "prop_7_0.03.vnnlib", [0.7, 0.7], [0.75, 0.75], 3, EITHER)
    rows = [["hand.onnx", name, "20"] for name in boxes] + [["other/hand.onnx", "other/prop_7_0.03.vnnlib", "20"]]
    with open(root / "dots.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    results = tmp_path / "dots.csv"
    out = run_batch(root / "dots.csv", results, log=lambda m: None)
    assert [r[2] for r in out] == ["sat", "sat", "sat"]
    files = sorted((tmp_path / "dots.csv.cex").iterdir())
    assert len(files) == 3
    expected = dict(boxes, **{"other/prop_7_0.03.vnnlib": ([0.7, 0.7], [0.75, 0.75])})
    for (onnx, vnnlib, *_), row in zip(rows, out):
        path = cex_path(results, onnx, vnnlib)
        assert "prop_7_0.0" in path.name and row[4] == "dots.csv.cex/" + path.name
        x = np.array([parse_sat(path.read_text())[f"X_{i}"] for i in range(2)])
        lo, hi = expected[vnnlib]
        assert np.all((x >= lo) & (x <= hi)), (vnnlib, x)  # the file holds this instance's counterexample


def test_error_reason_kept_and_retried_on_resume(hand, tmp_path):
    """Issue 16.2: the reason of an error stays with its row; a rerun retries error rows (by default)."""
    root, _, _ = hand
    late = root / "late.vnnlib"
    late.unlink(missing_ok=True)
    with open(root / "late.csv", "w", newline="") as f:
        csv.writer(f).writerows([["hand.onnx", "robust.vnnlib", "20"], ["hand.onnx", "late.vnnlib", "20"]])
    results = tmp_path / "late_results.csv"
    runner = CliRunner()
    args = ["vnnlib", "--instances", str(root / "late.csv"), "--results", str(results)]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    with open(results, newline="") as f:
        rows = list(csv.reader(f))
    assert [r[2] for r in rows] == ["unsat", "error"]
    assert "VNN-LIB file not found" in rows[1][4] and "late.vnnlib" in rows[1][4]
    write_spec(late, [-0.2, -0.2], [0.6, 0.4], 3, EITHER)  # the cause is fixed
    res = runner.invoke(main, args + ["--keep-errors"])
    assert res.exit_code == 0 and "error 1" in res.stdout
    with open(results, newline="") as f:
        assert [r[2] for r in csv.reader(f)] == ["unsat", "error"]
    res = runner.invoke(main, args)  # the default retries it
    assert res.exit_code == 0, res.output
    assert "retrying 1" in res.stderr and "resuming: 1 of 2" in res.stderr
    with open(results, newline="") as f:
        rows = list(csv.reader(f))
    assert [r[2] for r in rows] == ["unsat", "sat"] and len(rows) == 2
    assert cex_path(results, "hand.onnx", "late.vnnlib").is_file()
    assert "--retry-errors / --keep-errors" in runner.invoke(main, ["vnnlib", "--help"]).output


def test_results_without_the_detail_column_resume(hand, tmp_path, monkeypatch):
    """A results file written before the fifth column existed: its rows are kept, its errors retried."""
    root, _, specs = hand
    instances = _instances(root, specs)
    results = tmp_path / "old.csv"
    results.write_text("hand.onnx,robust.vnnlib,unsat,0.5\nhand.onnx,cex_in_box.vnnlib,sat,0.4\n"
                       "hand.onnx,rows_conjoined.vnnlib,error,0.1\n")
    import hamverify.vnncomp as vnncomp
    calls = []
    real = vnncomp.solve_instance
    monkeypatch.setattr(vnncomp, "solve_instance", lambda *a, **k: calls.append(a) or real(*a, **k))
    rows = run_batch(instances, results, log=lambda m: None)
    assert len(calls) == 1 and str(calls[0][1]).endswith("rows_conjoined.vnnlib")
    assert [r[2] for r in rows] == ["unsat", "sat", "unsat"] and rows[0] == ["hand.onnx", "robust.vnnlib", "unsat",
                                                                               "0.5", ""]


# ------------------------------------------------------------------------ issue 16: constant outputs

def constant_onnx(path, values, n_in=2, relu_branch=False):
    """An ONNX graph whose output is a Constant node (optionally beside an unused Gemm+Relu branch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    values = np.asarray(values, dtype=np.float32).reshape(1, -1)
    nodes = [helper.make_node("Constant", [], ["out"], value=numpy_helper.from_array(values))]
    inits = []
    if relu_branch:
        inits = [numpy_helper.from_array(np.ones((4, n_in), np.float32), "W"),
                 numpy_helper.from_array(np.zeros(4, np.float32), "b")]
        nodes = [helper.make_node("Gemm", ["input", "W", "b"], ["h"], transB=1),
                 helper.make_node("Relu", ["h"], ["r"])] + nodes
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(values.shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return save_onnx(model, path)


@pytest.mark.parametrize("relu_branch", [False, True])
def test_constant_output_is_decided(tmp_path, relu_branch):
    """Issue 16.5: a network whose output does not depend on the input is answered, not rejected."""
    net_path = constant_onnx(tmp_path / "c.onnx", [0.2, 0.7, 0.5], relu_branch=relu_branch)
    imported = import_onnx(net_path)
    assert imported.net.num_classes == 3 and constant_output(imported.net)
    np.testing.assert_allclose(imported.net.forward(np.array([[0.0, 0.0], [3.0, -1.0]])),
                               [[0.2, 0.7, 0.5]] * 2, atol=1e-7)
    lo, hi = [0.1, -0.3], [0.4, 0.2]
    sat = solve_instance(net_path, write_spec(tmp_path / "sat.vnnlib", lo, hi, 3, EITHER.replace("Y_0", "Y_1")), 10)
    assert sat.result == "sat" and sat.decided_by == "constant"
    values = parse_sat(sat.vnncomp_text())
    x = np.array([values["X_0"], values["X_1"]])
    assert np.all((x >= lo) & (x <= hi))
    y = onnx_run(onnx_session(net_path), x.astype(np.float32).reshape(1, 2)).ravel()
    assert y[1] >= y[2]  # the real network violates the property at the reported point
    unsat = solve_instance(net_path, write_spec(tmp_path / "unsat.vnnlib", lo, hi, 3, BOTH), 10)
    assert unsat.result == "unsat" and unsat.decided_by == "constant"


def test_constant_output_soundness(tmp_path, monkeypatch):
    """No unsat when the constant misses a disjunct by less than tol; no sat without validation."""
    net_path = constant_onnx(tmp_path / "c.onnx", [0.5, 0.5005, 0.0])
    imported = import_onnx(net_path)
    import onnx
    proto = onnx.load(str(net_path))
    spec = parse_vnnlib(write_spec(tmp_path / "s.vnnlib", [0, 0], [1, 1], 3, "(assert (>= Y_0 Y_1))"))
    res = decide(imported, proto, spec, deadline=float("inf"), tol=1e-3)
    assert res.result == "unknown" and "tolerance" in res.reason
    assert decide(imported, proto, spec, deadline=float("inf"), tol=1e-6).result == "unsat"
    spec = parse_vnnlib(write_spec(tmp_path / "t.vnnlib", [0, 0], [1, 1], 3, "(assert (>= Y_1 Y_0))"))
    assert decide(imported, proto, spec, deadline=float("inf")).result == "sat"
    monkeypatch.setattr(Checker, "validate", lambda self, *a, **k: None)
    res = decide(imported, proto, spec, deadline=float("inf"))
    assert res.result == "unknown" and "not confirmed" in res.reason


def test_rows_constant_over_the_box_need_no_search(hand, tmp_path, monkeypatch):
    """Rows that hold on the whole box (here Y_2 = 0.5 >= 0.4) give sat from the bounds, PGD or not."""
    _, net_path, _ = hand
    monkeypatch.setattr(Checker, "attack", lambda self, *a, starts=None, **k: [])
    res = solve_instance(net_path, write_spec(tmp_path / "s.vnnlib", [0, 0], [1, 1], 3, "(assert (>= Y_2 0.4))"), 10)
    assert res.result == "sat" and res.decided_by == "bounds" and res.milp_solves == 0
    res = solve_instance(net_path, write_spec(tmp_path / "u.vnnlib", [0, 0], [1, 1], 3, "(assert (>= Y_2 0.6))"), 10)
    assert res.result == "unsat" and res.decided_by == "bounds"


def test_counterexample_on_the_box_edge_from_the_milp(tmp_path, monkeypatch):
    """y = x on [1, 1000] with "y <= 1": the only witness is x = 1, where the row holds with equality
    (VNN-LIB's <= is not strict). The MILP's min t is 0, in [0, tol]: not a proof, but its point is a
    counterexample once validated -- found with the attack switched off, and never without validation."""
    net_path = write_net(tmp_path / "id.onnx", Network((Affine(np.eye(1), np.zeros(1)),), (1,)))
    spec = write_spec(tmp_path / "edge.vnnlib", [1.0], [1000.0], 1, "(assert (<= Y_0 1.0))")
    monkeypatch.setattr(Checker, "attack", lambda self, *a, starts=None, **k: [])
    res = solve_instance(net_path, spec, 20)
    assert res.result == "sat" and res.decided_by == "milp", res
    assert parse_sat(res.vnncomp_text())["X_0"] == 1.0
    monkeypatch.setattr(Checker, "validate", lambda self, *a, **k: None)
    assert solve_instance(net_path, spec, 20).result == "unknown"


def test_the_attack_gets_its_time_after_torch_is_imported(tmp_path, monkeypatch):
    """A first attack that had to import torch inside its own deadline found nothing on a loaded
    machine; the deadline now starts after the torch modules are built (here: they take 2 s)."""
    import time as _time

    net_path = write_net(tmp_path / "id.onnx", Network((Affine(np.eye(1), np.zeros(1)),), (1,)))
    spec = write_spec(tmp_path / "edge.vnnlib", [1.0], [1000.0], 1, "(assert (<= Y_0 1.0))")
    slow = Checker.torch_modules

    def slow_modules(self):
        if self._modules is None:
            _time.sleep(2.0)
        return slow(self)

    monkeypatch.setattr(Checker, "torch_modules", slow_modules)
    res = solve_instance(net_path, spec, 20, stages="attack")
    assert res.result == "sat" and res.decided_by == "attack", res
