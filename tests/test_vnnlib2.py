"""VNN-LIB 2.0 (hamverify.vnnlib2) and the standard's solver command line (hamverify-vnnlib): the
parser (indexed variables, several inputs in one row, strictness, products -> unknown, version
detection, one-line errors), the compilation of several networks / inputs / outputs / hidden nodes
into one IR network, end-to-end verdicts on tiny ONNX networks with the counterexample checked on
the network, the capability queries, bad input, and a handful of the conformance suite's own cases
(when ``vnnlib-satisfactory`` is installed)."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hamverify import HamverifyError  # noqa: E402
from hamverify.network import Affine, Network  # noqa: E402
from hamverify.vnnlib2 import (build_instance, parallel, parse_query_text, solve_query,  # noqa: E402
                               vnnlib_version)
from hamverify.vnnlib_cli import main, onnx_operators  # noqa: E402

HEADER = "(vnnlib-version <2.0>)\n"
HAND_DECL = "(declare-network N (declare-input X float32 [1,2]) (declare-output Y float32 [1,3]))\n"


# ------------------------------------------------------------------------------------------ networks

def save(path, nodes, inputs, outputs, inits=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def tensor(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def const(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def mlp(path, W1, b1, W2, b2, hidden="h"):
    """y = W2 relu(W1 x + b1) + b2 on x of shape [1, n]; the pre-activation is the tensor ``hidden``."""
    W1, W2 = np.asarray(W1, np.float32), np.asarray(W2, np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], [hidden], transB=1),
             helper.make_node("Relu", [hidden], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1)]
    return save(path, nodes, [tensor("x", ["N", W1.shape[1]])], [tensor("y", ["N", W2.shape[0]])],
                [const("W1", W1), const("b1", b1), const("W2", W2), const("b2", b2)])


# y0 = relu(x0), y1 = relu(x1), y2 = 0.5 (as in test_vnncomp)
HAND = dict(W1=np.eye(2), b1=np.zeros(2), W2=[[1, 0], [0, 1], [0, 0]], b2=[0, 0, 0.5])


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("nets")
    rng = np.random.default_rng(0)
    W1, b1 = rng.normal(size=(6, 3)), rng.normal(size=6) * 0.1
    W2, b2 = rng.normal(size=(2, 6)), rng.normal(size=2) * 0.1
    out = {"hand": mlp(root / "hand.onnx", **HAND),
           "rand": mlp(root / "rand.onnx", W1, b1, W2, b2),
           "rand2": mlp(root / "rand2.onnx", W1, b1 + 0.05, W2, b2)}  # another net, same interface
    # two inputs, two outputs: s = a - b, t = relu(a) + 1
    nodes = [helper.make_node("Sub", ["a", "b"], ["s"]), helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Add", ["ra", "one"], ["t"])]
    out["multi"] = save(root / "multi.onnx", nodes, [tensor("a", [1]), tensor("b", [1])],
                        [tensor("s", [1]), tensor("t", [1])], [const("one", [1.0])])
    return out


def ort(path, feeds: dict, names=None):
    import onnxruntime
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(names, {k: np.asarray(v, dtype=np.float32) for k, v in feeds.items()})


def run(capsys, args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def verify(capsys, tmp_path, text, networks: dict, name="q.vnnlib", timeout=60):
    """``hamverify-vnnlib verify`` of the 2.0 query ``text`` (written to ``name``)."""
    args = ["verify", write(tmp_path, text, name)]
    args += [a for n, p in networks.items() for a in ("--network", f"{n}={p}")]
    return run(capsys, args + ["--timeout", timeout])


def parse_assignment(out: str) -> dict:
    """The standard's command-line assignment format -> {name: (type, shape, values)}."""
    lines = out.strip().splitlines()
    assert lines[0] == "sat"
    values, i = {}, 1
    while i < len(lines):
        name, dtype, shape = lines[i].split(" ", 2)
        dims = [int(d) for d in shape.strip("[]").split(",") if d]
        n = int(np.prod(dims)) if dims else 1
        values[name] = (dtype, dims, np.array([float(v) for v in lines[i + 1:i + 1 + n]]))
        i += 1 + n
    return values


# ------------------------------------------------------------------------------------------ parsing

def test_indexed_variables_flatten_row_major_and_rows_over_several_inputs():
    q = parse_query_text(HEADER + """
(declare-network f
    (declare-input  X float32 [2, 3])
    (declare-output Y Real [])
)
(assert (and (>= X[0,0] 0.0) (<= X[1,2] 1.0)))
(assert (<= (+ (* 0.5 X[0,1]) (* -2 X[1,0]) 3) (- Y 1)))  ; several inputs and the output in one row
(assert (> Y (- 1e-1)))
""", "q")
    assert q.version == "2.0" and q.networks[0].inputs[0].shape == (2, 3) and not q.nonlinear
    (case,) = q.cases
    rows = {r.coeffs: (r.const, r.strict) for r in case}
    assert rows[((("X", 0), -1.0),)] == (0.0, False)  # X[0,0] >= 0  ->  -X[0,0] <= 0
    assert rows[((("X", 5), 1.0),)] == (-1.0, False)  # X[1,2] is element 5
    assert rows[((("X", 1), 0.5), (("X", 3), -2.0), (("Y", 0), -1.0))] == (4.0, False)
    assert rows[((("Y", 0), -1.0),)] == (-0.1, True)  # strict


def test_equalities_disequalities_and_disjunctions_in_dnf():
    q = parse_query_text(HEADER + """
(declare-network f (declare-input X Real [2]) (declare-output Y Real [2]))
(assert (<= 0 X[0] 1))  ; a chain
(assert (== X[1] 0.5))
(assert (or (>= Y[0] Y[1]) (!= Y[1] 2)))
""", "q")
    assert len(q.cases) == 3  # (Y0 >= Y1) | (Y1 < 2) | (Y1 > 2)
    assert all(len(c) == 5 for c in q.cases)
    assert [r.strict for r in q.cases[1]][-1] and [r.strict for r in q.cases[2]][-1]


def test_products_of_variables_are_outside_the_linear_fragment():
    q = parse_query_text(HEADER + """
(declare-network f (declare-input X Real [2]) (declare-output Y Real [1]))
(assert (>= (* 2 X[0] 3) 1))
(assert (>= (* X[0] X[1]) 0.5))
""", "q")
    assert "product of variables" in q.nonlinear and q.nonlinear.startswith("q:5:")
    res, instance = solve_query(q, {"f": "unused.onnx"}, 10)
    assert res.result == "unknown" and instance is None and "product" in res.reason


def test_version_detection():
    v1 = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n; not (declare-network here)\n(assert (<= X_0 1))"
    assert vnnlib_version(v1) == "1.0"
    assert vnnlib_version("(vnnlib-version <2.0>)") == "2.0"
    assert vnnlib_version("; comment\n(declare-network N (declare-input X Real [1]) (declare-output Y Real [1]))") \
        == "2.0"


@pytest.mark.parametrize("body,message", [
    ("(declare-network f (declare-input X Real [2]) (declare-output Y Real [1]))\n(assert (<= X[2] 1))",
     "index 2 of X is outside [0, 2)"),
    ("(declare-network f (declare-input X Real [2]) (declare-output Y Real [1]))\n(assert (<= X 1))",
     "takes 1 index, got 0"),
    ("(declare-network f (declare-input X Real [1]) (declare-output Y Real [1]))\n(assert (<= Z[0] 1))",
     "undeclared variable Z"),
    ("(declare-network f (declare-input X Real [1]) (declare-output X Real [1]))\n(assert (<= X[0] 1))",
     "declared twice"),
    ("(declare-network f (declare-input X flaot32 [1]) (declare-output Y Real [1]))\n(assert (<= X[0] 1))",
     "unknown element type"),
    ("(declare-network f (declare-output Y Real [1]))\n(assert (<= Y[0] 1))", "at least one input"),
    ("(declare-network f (declare-input X Real [1]) (declare-output Y Real [1]))\n(assert (<= X[0] 1)",
     "unbalanced"),
    ("(declare-network f (declare-input X Real [1]) (declare-output Y Real [1]))", "no assertions"),
])
def test_errors_are_one_line_with_the_line_number(body, message):
    with pytest.raises(HamverifyError, match=re.escape(message)) as exc:
        parse_query_text(HEADER + body, "spec.vnnlib")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("spec.vnnlib")


def test_other_versions_are_refused():
    with pytest.raises(HamverifyError, match="version 3.0 is not supported"):
        parse_query_text("(vnnlib-version <3.0>)\n(declare-network f (declare-input X Real [1]) "
                         "(declare-output Y Real [1]))\n(assert (<= X[0] 1))", "s")


def test_parallel_networks_carry_the_shorter_one_exactly():
    deep = Network((Affine(np.array([[1.0, -1.0]]), np.array([0.5])), Affine(np.array([[2.0]]), np.zeros(1)),
                    Affine(np.array([[-1.0]]), np.array([0.1]))), (2,))
    flat = Network((Affine(np.array([[3.0]]), np.array([-7.0])),), (1,))  # negative on the box: shifted
    lo, hi = np.array([-1.0, 0.0, -2.0]), np.array([1.0, 1.0, 2.0])
    net = parallel([(deep, np.array([0, 1])), (flat, np.array([2]))], 3, lo, hi)
    assert len(net.affines) == 3 and net.num_classes == 2
    rng = np.random.default_rng(1)
    x = rng.uniform(lo, hi, size=(200, 3))
    expect = np.hstack([deep.forward(x[:, :2]), flat.forward(x[:, 2:])])
    np.testing.assert_allclose(net.forward(x), expect, atol=1e-12)


def test_same_boxes_and_polytopes_as_the_standards_own_parser(tmp_path, nets):
    vnnlib = pytest.importorskip("vnnlib")
    import vnnlib.compat
    text = HEADER + HAND_DECL + """
(assert (>= X[0,0] -0.5))
(assert (<= X[0,0] 0.25))
(assert (>= X[0,1] 0.0))
(assert (<= X[0,1] 1.0))
(assert (or (and (>= Y[0,0] Y[0,2]) (<= Y[0,1] 0.3)) (>= (+ Y[0,1] (* 2.0 Y[0,0])) 1.5)))
"""
    # (input bounds as one assertion each: vnnlib 1.0.2's compat.transform returns unbounded boxes for
    # bounds written as (assert (and (>= X a) (<= X b))) beside other assertions)
    theirs = vnnlib.compat.transform(vnnlib.parse_query_string(text))
    ours = build_instance(parse_query_text(text, "q"), {"N": nets["hand"]}).spec.regions()

    def rows(C, d):
        return tuple(sorted(tuple(np.append(c, b)) for c, b in zip(np.reshape(C, (len(d), -1)), d)))

    boxes = {}
    for case in theirs:
        box = tuple(float(v) for pair in case.input_box for v in pair)
        boxes.setdefault(box, set()).update(rows(p.coeff_matrix, p.rhs) for p in case.output_constraints)
    assert len(ours) == 1 and list(boxes) == [tuple(v for pair in zip(ours[0].lo, ours[0].hi) for v in pair)]
    assert boxes.popitem()[1] == {rows(C, d) for C, d in ours[0].disjuncts}


# ------------------------------------------------------------------------------------------ end to end

def write(tmp_path, text, name="q.vnnlib"):
    path = tmp_path / name
    path.write_text(HEADER + text)
    return path




def test_sat_prints_the_assignment_checked_on_the_network(tmp_path, nets, capsys):
    spec = write(tmp_path, HAND_DECL + """
(assert (and (>= X[0,0] -0.2) (<= X[0,0] 0.6) (>= X[0,1] -0.2) (<= X[0,1] 0.4)))
(assert (or (>= Y[0,0] Y[0,2]) (>= Y[0,1] Y[0,2])))
""")
    code, out, err = run(capsys, ["verify", spec, "--network", f"N={nets['hand']}", "--timeout", 60])
    assert code == 0, err
    values = parse_assignment(out)
    assert list(values) == ["X", "Y"] and values["X"][:2] == ("float32", [1, 2])
    x, y = values["X"][2], values["Y"][2]
    assert -0.2 <= x[0] <= 0.6 and -0.2 <= x[1] <= 0.4
    (y_ort,) = ort(nets["hand"], {"x": x.reshape(1, 2)})
    np.testing.assert_allclose(y, y_ort.ravel(), atol=1e-6)
    assert y_ort[0, 0] >= y_ort[0, 2] or y_ort[0, 1] >= y_ort[0, 2]


def test_unsat_and_strict_rows(tmp_path, nets, capsys):
    spec = write(tmp_path, HAND_DECL + """
(assert (and (>= X[0,0] -0.2) (<= X[0,0] 0.4) (>= X[0,1] -0.2) (<= X[0,1] 0.4)))
(assert (or (>= Y[0,0] Y[0,2]) (>= Y[0,1] Y[0,2])))
""")
    code, out, _ = run(capsys, ["verify", spec, "--network", f"N={nets['hand']}", "--timeout", 60])
    assert (code, out) == (0, "unsat\n")
    # y0 = relu(x0) with x0 <= 0.5: y0 >= 0.5 is reached only at x0 = 0.5 exactly, y0 > 0.5 never
    box = "(assert (and (>= X[0,0] 0) (<= X[0,0] 0.5) (>= X[0,1] 0) (<= X[0,1] 1)))\n"
    code, out, _ = run(capsys, ["verify", write(tmp_path, HAND_DECL + box + "(assert (> Y[0,0] Y[0,2]))", "s.vnnlib"),
                                "--network", f"N={nets['hand']}", "--timeout", 60])
    assert out.splitlines()[0] in ("unsat", "unknown")  # never sat: the point y0 = 0.5 misses a strict row
    code, out, _ = run(capsys, ["verify", write(tmp_path, HAND_DECL + box + "(assert (>= Y[0,0] Y[0,2]))", "n.vnnlib"),
                                "--network", f"N={nets['hand']}", "--timeout", 60])
    assert parse_assignment(out)["X"][2][0] == 0.5


def test_linear_constraint_over_several_inputs_is_exact(tmp_path, nets, capsys):
    decl = "(declare-network N (declare-input X float32 [1,3]) (declare-output Y float32 [1,2]))\n"
    box = "".join(f"(assert (and (>= X[0,{i}] -1) (<= X[0,{i}] 1)))\n" for i in range(3))
    # the largest Y0 - Y1 on the box and on the slice x0 + x1 + x2 <= -1.5, by sampling: the query
    # "Y0 - Y1 >= t" on the slice is sat for t a little below the sampled max over the slice
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, size=(20000, 3))
    (ys,) = ort(nets["rand"], {"x": xs})
    margin = ys[:, 0] - ys[:, 1]
    on_slice = xs.sum(1) <= -1.5
    t_sat = float(margin[on_slice].max()) - 1e-3
    t_box = float(margin.max()) + 1.0  # beyond the box's largest value too: unsat
    row = "(assert (<= (+ X[0,0] X[0,1] X[0,2]) -1.5))\n"
    code, out, err = verify(capsys, tmp_path, decl + box + row + f"(assert (>= (- Y[0,0] Y[0,1]) {t_sat}))",
                            {"N": nets["rand"]})
    assert code == 0 and out.startswith("sat"), err
    x = parse_assignment(out)["X"][2]
    assert x.sum() <= -1.5 and np.all(np.abs(x) <= 1)
    (y,) = ort(nets["rand"], {"x": x.reshape(1, 3)})
    assert y[0, 0] - y[0, 1] >= t_sat - 1e-5
    code, out, _ = verify(capsys, tmp_path, decl + box + row + f"(assert (>= (- Y[0,0] Y[0,1]) {t_box}))",
                          {"N": nets["rand"]}, "u.vnnlib")
    assert out == "unsat\n"


def equivalence(tmp_path, name, relation=""):
    decl = ("(declare-network A (declare-input X float32 [1,3]) (declare-output Y float32 [1,2]))\n"
            f"(declare-network B {relation} (declare-input X2 float32 [1,3]) (declare-output Y2 float32 [1,2]))\n")
    same = "".join(f"(assert (and (>= X[0,{i}] -1) (<= X[0,{i}] 1) (== X2[0,{i}] X[0,{i}])))\n" for i in range(3))
    differ = "(assert (or (>= (- Y[0,0] Y2[0,0]) 0.01) (<= (- Y[0,0] Y2[0,0]) -0.01)))\n"
    return write(tmp_path, decl + same + differ, name)


def test_equivalence_of_two_networks_in_one_milp(tmp_path, nets, capsys):
    # the same network twice (equal-to): equivalent
    spec = equivalence(tmp_path, "eq.vnnlib", "(equal-to A)")
    code, out, err = run(capsys, ["verify", spec, "--network", f"A={nets['rand']}", "--timeout", 60])
    assert out == "unsat\n", err
    # a second network whose biases differ: some shared input tells them apart
    spec = equivalence(tmp_path, "iso.vnnlib", "(isomorphic-to A)")
    code, out, err = run(capsys, ["verify", spec, "--network", f"A={nets['rand']}", "--network",
                                  f"B={nets['rand2']}", "--timeout", 60])
    assert out.startswith("sat"), err
    v = parse_assignment(out)
    np.testing.assert_array_equal(v["X"][2], v["X2"][2])
    (ya,) = ort(nets["rand"], {"x": v["X"][2].reshape(1, 3)})
    (yb,) = ort(nets["rand2"], {"x": v["X2"][2].reshape(1, 3)})
    assert abs(ya[0, 0] - yb[0, 0]) >= 0.01 - 1e-5


def test_hidden_nodes_and_several_inputs_and_outputs(tmp_path, nets, capsys):
    # the hidden pre-activation h = x (identity first layer of HAND): H[0,0] >= 0.3 with Y[0,0] <= 0.2
    # is impossible (y0 = relu(h0)); H[0,1] <= -0.1 with Y[0,1] == 0 is possible
    decl = ("(declare-network N (declare-input X float32 [1,2]) (declare-hidden H float32 [1,2] \"h\")"
            " (declare-output Y float32 [1,3]))\n")
    box = "(assert (and (>= X[0,0] -1) (<= X[0,0] 1) (>= X[0,1] -1) (<= X[0,1] 1)))\n"
    code, out, _ = verify(capsys, tmp_path, decl + box + "(assert (>= H[0,0] 0.3))\n(assert (<= Y[0,0] 0.2))",
                          {"N": nets["hand"]})
    assert out == "unsat\n"
    code, out, _ = verify(capsys, tmp_path, decl + box + "(assert (<= H[0,1] -0.1))\n(assert (== Y[0,1] 0))",
                          {"N": nets["hand"]}, "h.vnnlib")
    v = parse_assignment(out)
    assert list(v) == ["X", "H", "Y"] and v["H"][2][1] <= -0.1 and v["Y"][2][1] == 0
    # two ONNX inputs mapped in order (s = a - b), and by name (the declared order swapped)
    multi = ("(declare-network M (declare-input A float32 [1]{}) (declare-input B float32 [1]{})"
             " (declare-output S float32 [1]{}) (declare-output T float32 [1]{}))\n")
    box = "(assert (and (>= A[0] 0) (<= A[0] 1) (>= B[0] 10) (<= B[0] 11)))\n"
    code, out, _ = verify(capsys, tmp_path, multi.format("", "", "", "") + box + "(assert (>= S[0] -8))",
                          {"M": nets["multi"]}, "m.vnnlib")
    assert out == "unsat\n"
    named = multi.format(' "b"', ' "a"', ' "s"', ' "t"')  # A is the ONNX input b now: s = B - A
    code, out, err = verify(capsys, tmp_path, named + box + "(assert (>= S[0] -8))\n(assert (>= T[0] 10.5))",
                            {"M": nets["multi"]}, "n.vnnlib")
    v = parse_assignment(out)
    a, b = v["A"][2][0], v["B"][2][0]
    assert v["S"][2][0] == pytest.approx(b - a) and v["T"][2][0] == pytest.approx(b + 1) and b >= 9.5, err


def test_vnnlib_1_0_through_the_standard_command(tmp_path, nets, capsys):
    spec = tmp_path / "v1.vnnlib"
    spec.write_text("".join(f"(declare-const X_{i} Real)\n" for i in range(2))
                    + "".join(f"(declare-const Y_{j} Real)\n" for j in range(3))
                    + "(assert (>= X_0 -0.2))(assert (<= X_0 0.4))(assert (>= X_1 -0.2))(assert (<= X_1 0.4))\n"
                    + "(assert (or (and (>= Y_0 Y_2)) (and (>= Y_1 Y_2))))\n")
    code, out, _ = run(capsys, ["verify", spec, "--network", f"anything={nets['hand']}", "--timeout", 60])
    assert out == "unsat\n"


def test_comparisons_decided_by_the_box_in_both_versions(tmp_path, capsys):
    # Y = Where(X > t, X, 10) with t = (-1, 5): on X in [0, 1]^2 the first branch for Y[0], the
    # second for Y[1]; the box of the query (1.0 or 2.0) decides the comparison
    net = save(tmp_path / "where.onnx", [helper.make_node("Greater", ["x", "t"], ["c"]),
                                         helper.make_node("Where", ["c", "x", "ten"], ["y"])],
               [tensor("x", [2])], [tensor("y", [2])], [const("t", [-1.0, 5.0]), const("ten", 10.0)], opset=18)
    v1 = tmp_path / "v1.vnnlib"
    v1.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                  "(declare-const Y_1 Real)\n(assert (>= X_0 0))(assert (<= X_0 1))(assert (>= X_1 0))"
                  "(assert (<= X_1 1))\n")
    for tail, verdict in (("(assert (>= Y_0 1.5))", "unsat"), ("(assert (<= Y_1 9.5))", "unsat"),
                          ("(assert (>= Y_0 0.9))", "sat")):
        path = tmp_path / "q1.vnnlib"
        path.write_text(v1.read_text() + tail + "\n")
        code, out, err = run(capsys, ["verify", path, "--network", f"N={net}", "--timeout", 60])
        assert out.splitlines()[0] == verdict, err
    decl = "(declare-network N (declare-input X float32 [2]) (declare-output Y float32 [2]))\n"
    code, out, err = verify(capsys, tmp_path, decl + "(assert (and (>= X[0] 0) (<= X[0] 1) (>= X[1] 0) (<= X[1] 1)))\n"
                            "(assert (== Y[1] 10))", {"N": net})
    assert out.startswith("sat\n"), err
    code, out, err = verify(capsys, tmp_path, decl + "(assert (and (>= X[0] 0) (<= X[0] 1) (>= X[1] 4) (<= X[1] 6)))\n"
                            "(assert (== Y[1] 10))", {"N": net})  # X[1] > 5 is open on [4, 6]: a jump
    assert out == "unknown\n" and "jump" in err


def test_capability_queries(capsys):
    answers = {}
    for flag in ("--onnx-operators", "--onnx-opset-versions", "--vnnlib-versions", "--serialise-assignments",
                 "--hidden-node-theories", "--multiple-network-theories", "--arithmetic-complexity-theories"):
        code, out, err = run(capsys, ["supports", flag])
        assert code == 0 and not err
        answers[flag] = out
    ops = answers["--onnx-operators"].split()
    assert {"Gemm", "Relu", "Conv", "MaxPool", "Constant"} <= set(ops) and "Sigmoid" not in ops
    assert ops == onnx_operators()
    lo, hi = answers["--onnx-opset-versions"].split()
    assert 0 < int(lo) <= int(hi)
    assert answers["--vnnlib-versions"] == "1.0\n2.0\n"
    assert answers["--serialise-assignments"] == "true\n"
    assert "POLY" not in answers["--arithmetic-complexity-theories"]
    compliance = pytest.importorskip("vnntest.core.compliance")  # the suite's own format checks
    assert compliance.validate_opset_versions(answers["--onnx-opset-versions"]) is None
    assert compliance.validate_vnnlib_versions(answers["--vnnlib-versions"]) is None
    assert compliance.validate_serialise_assignments(answers["--serialise-assignments"]) is None


def test_serialised_assignments(tmp_path, nets, capsys):
    spec = write(tmp_path, HAND_DECL + "(assert (and (>= X[0,0] 0.7) (<= X[0,0] 0.9) (>= X[0,1] 0) (<= X[0,1] 0.1)))\n"
                 "(assert (>= Y[0,0] Y[0,2]))")
    folder = tmp_path / "cex"
    code, out, _ = run(capsys, ["verify", spec, "--network", f"N={nets['hand']}", "--timeout", 60,
                                "--serialise-assignments", folder])
    assert out == "sat\n"
    x = numpy_helper.to_array(TensorProto.FromString((folder / "X.pb").read_bytes()))
    y = numpy_helper.to_array(TensorProto.FromString((folder / "Y.pb").read_bytes()))
    assert x.shape == (1, 2) and x.dtype == np.float32 and y.shape == (1, 3) and 0.7 <= x[0, 0] <= 0.9


@pytest.mark.parametrize("args,message", [
    (["verify", "missing.vnnlib", "--network", "N=x.onnx"], "not found"),
    (["verify", "{spec}", "--network", "N"], "expected NAME=FILE"),
    (["verify", "{spec}"], "no --network N="),
    (["verify", "{spec}", "--network", "N={hand}", "--network", "M={hand}"], "no network M"),
    (["verify", "{spec}", "--network", "N={missing}"], "ONNX file not found"),
    (["verify", "{bad}", "--network", "N={hand}"], "unbalanced"),
    (["verify", "{wide}", "--network", "N={hand}"], "declared [1, 5]"),
    (["verify", "{typed}", "--network", "N={hand}"], "declared float64 but the ONNX input"),
    (["verify", "{spec}", "--network", "N={hand}", "--timeout", "0"], "--timeout must be > 0"),
    (["supports", "--nothing"], "error:"),
    (["supports"], "one of the arguments"),
    ([], "expected a command"),
])
def test_bad_input_is_one_line_on_stderr(tmp_path, nets, capsys, args, message):
    spec = write(tmp_path, HAND_DECL + "(assert (and (>= X[0,0] 0) (<= X[0,0] 1) (>= X[0,1] 0) (<= X[0,1] 1)))\n"
                 "(assert (>= Y[0,0] 2))")
    paths = dict(spec=spec, hand=nets["hand"], missing=tmp_path / "no.onnx",
                 bad=write(tmp_path, HAND_DECL + "(assert (<= X[0,0] 1)", "bad.vnnlib"),
                 wide=write(tmp_path, HAND_DECL.replace("[1,2]", "[1,5]") + "(assert (<= X[0,0] 1))", "w.vnnlib"),
                 typed=write(tmp_path, HAND_DECL.replace("X float32", "X float64") + "(assert (<= X[0,0] 1))",
                             "t.vnnlib"))
    code, out, err = run(capsys, [a.format(**paths) for a in args])
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_unsupported_network_is_unknown_not_an_error(tmp_path, capsys):
    net = save(tmp_path / "sig.onnx", [helper.make_node("Sigmoid", ["x"], ["y"])], [tensor("x", [1])],
               [tensor("y", [1])])
    spec = write(tmp_path, "(declare-network N (declare-input X float32 [1]) (declare-output Y float32 [1]))\n"
                 "(assert (and (>= X[0] 0) (<= X[0] 1)))\n(assert (<= Y[0] 0.1))")
    code, out, err = run(capsys, ["verify", spec, "--network", f"N={net}", "--timeout", 60])
    assert (code, out) == (0, "unknown\n") and "Sigmoid" in err and len(err.strip().splitlines()) == 1


def test_the_time_limit_holds_for_the_whole_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    sizes = [30, 80, 80, 80, 2]  # a MILP HiGHS does not finish in a second or two
    nodes, inits, cur = [], [], "x"
    for k in range(len(sizes) - 1):
        inits += [const(f"W{k}", rng.normal(size=(sizes[k + 1], sizes[k])) / np.sqrt(sizes[k])),
                  const(f"b{k}", rng.normal(size=sizes[k + 1]) * 0.1)]
        nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"b{k}"], [f"g{k}"], transB=1))
        cur = f"g{k}"
        if k < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [cur], [f"r{k}"]))
            cur = f"r{k}"
    net = save(tmp_path / "deep.onnx", nodes, [tensor("x", ["N", 30])], [tensor(cur, ["N", 2])], inits)
    box = "".join(f"(assert (and (>= X[0,{i}] -1) (<= X[0,{i}] 1)))\n" for i in range(30))
    text = ("(declare-network N (declare-input X float32 [1,30]) (declare-output Y float32 [1,2]))\n" + box
            + "(assert (>= (- Y[0,0] Y[0,1]) 3.0))")
    t = time.monotonic()
    code, out, err = verify(capsys, tmp_path, text, {"N": net}, timeout=3)
    assert time.monotonic() - t < 3.0 and code == 0
    assert out in ("timed-out\n", "unsat\n") or out.startswith("sat\n"), err
    exe = pathlib.Path(sys.executable).parent / "hamverify-vnnlib"
    if exe.exists():  # the console script, its start-up included, with the watchdog armed
        t = time.monotonic()
        proc = subprocess.run([str(exe), "verify", str(tmp_path / "q.vnnlib"), "--network", f"N={net}", "--timeout",
                               "4"], capture_output=True, text=True, timeout=60)
        assert time.monotonic() - t < 4.5 and proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] in ("timed-out", "unsat", "sat")


def test_console_script_runs(tmp_path, nets):
    exe = pathlib.Path(sys.executable).parent / "hamverify-vnnlib"
    if not exe.exists():
        pytest.skip("hamverify-vnnlib is not installed (pip install -e .)")
    spec = write(tmp_path, HAND_DECL + "(assert (and (>= X[0,0] 0.7) (<= X[0,0] 0.9) (>= X[0,1] 0) (<= X[0,1] 0.1)))\n"
                 "(assert (>= Y[0,0] Y[0,2]))")
    proc = subprocess.run([str(exe), "verify", str(spec), "--network", f"N={nets['hand']}", "--timeout", "60"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("sat\nX float32 [1,2]\n"), proc.stderr


# ------------------------------------------------------------------------------ the conformance suite

SUITE_CASES = ["relu/relu01", "multi_io/multi_io01", "hidden/hidden02", "arithmetic_lin/arithmetic_lin01",
               "arithmetic_lin/arithmetic_lin02", "network_equal/network_equal01", "arithmetic_poly/arithmetic_poly01",
               # MaxPool ceil_mode=1, Where / Cast / Equal on comparisons the input box decides
               "maxpool/maxpool03", "where/where01", "where/where06", "cast/cast03", "cast/cast07", "equal/equal04"]


@pytest.mark.parametrize("case", SUITE_CASES)
def test_conformance_suite_cases(tmp_path, capsys, case):
    pytest.importorskip("onnxscript")
    paths = pytest.importorskip("vnntest.core.paths")
    from vnntest.core.testcase import load_case_module
    source = paths.CASES_DIR / f"{case}.py"
    if not source.is_file():
        pytest.skip(f"the installed vnnlib-satisfactory has no case {case}")
    module = load_case_module(source)
    onnx_path = tmp_path / "net.onnx"
    onnx_path.write_bytes(module.build_onnx_model().SerializeToString())
    text = module.build_vnnlib_spec()
    spec = tmp_path / "q.vnnlib"
    spec.write_text(text if isinstance(text, str) else "\n".join(text))
    q = parse_query_text(spec.read_text(), str(spec))
    nets = [f"{name}={onnx_path}" for name in q.model_networks()]
    code, out, err = run(capsys, ["verify", spec, *[a for n in nets for a in ("--network", n)], "--timeout", 60])
    expected = module.return_expected_output().lower()
    verdict = out.splitlines()[0]
    if q.nonlinear:
        assert verdict == "unknown"
    else:
        assert verdict == expected, err
    if verdict == "sat":  # the reported point satisfies the query on the network
        instance = build_instance(q, {n.split("=")[0]: onnx_path for n in nets})
        v = parse_assignment(out)
        x = np.concatenate([v[var.name][2] for d in q.networks for var in d.inputs])
        assert instance.holds(x, instance.z_of(instance.run_networks(x), instance.reduce(x)))


def test_an_isomorphic_network_may_declare_other_types(tmp_path, capsys):
    """The suite's network_isomorphic01: an isomorphic-to network declared float16 for a float32 model.
    Accepted (the analysis is over the reals): unsat stands; a sat witness, confirmed only in the
    model's float32, becomes unknown with the reason. Without isomorphic-to the mismatch stays an error."""
    net = save(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [1])], [tensor("y", [1])])
    decl = ("(declare-network N1 (declare-input X float32 [1]) (declare-output Y float32 [1]))\n"
            "(declare-network N2 (isomorphic-to N1) (declare-input X2 float16 [1]) (declare-output Y2 float16 [1]))\n"
            "(assert (>= X[0] 0.0))\n(assert (<= X[0] 1.0))\n(assert (>= X2[0] 2.0))\n(assert (<= X2[0] 3.0))\n")
    nets = {"N1": net, "N2": net}
    code, out, err = verify(capsys, tmp_path, decl + "(assert (<= Y[0] 0.5))\n(assert (<= Y2[0] 0.5))\n", nets)
    assert (code, out) == (0, "unsat\n"), err
    code, out, err = verify(capsys, tmp_path, decl + "(assert (<= Y[0] 0.5))\n(assert (>= Y2[0] 2.5))\n", nets,
                            name="s.vnnlib")
    assert out == "unknown\n" and "declared float16" in err, (out, err)
    plain = "(declare-network N (declare-input X float16 [1]) (declare-output Y float16 [1]))\n(assert (>= X[0] 0.0))\n"
    code, out, err = verify(capsys, tmp_path, plain + "(assert (<= X[0] 1.0))\n(assert (<= Y[0] 0.5))\n", {"N": net},
                            name="p.vnnlib")
    assert code != 0 and "declared float16" in err
