"""The VNN-LIB parser (hamverify.vnnlib): boxes, output rows, and/or nesting, linear expressions,
.vnnlib.gz, and one-line errors naming the problem."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from hamverify import HamverifyError
from hamverify.vnnlib import parse_vnnlib, parse_vnnlib_text


def declare(n_in, n_out):
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))


def box(lo, hi):
    return "".join(f"(assert (>= X_{i} {a}))\n(assert (<= X_{i} {b}))\n" for i, (a, b) in enumerate(zip(lo, hi)))


def test_box_and_disjunction_of_single_rows(tmp_path):
    text = ("; a VNN-COMP style robustness property\n" + declare(2, 3) + box([0.1, -1], [0.3, 2e-1])
            + "(assert (or\n  (and (>= Y_1 Y_0))\n  (and (>= Y_2 Y_0))\n))\n")
    path = tmp_path / "p.vnnlib"
    path.write_text(text)
    spec = parse_vnnlib(path)
    assert (spec.n_inputs, spec.n_outputs) == (2, 3)
    np.testing.assert_array_equal(spec.lo, [0.1, -1])
    np.testing.assert_array_equal(spec.hi, [0.3, 0.2])
    (C1, d1), (C2, d2) = spec.disjuncts
    np.testing.assert_array_equal(C1, [[1, -1, 0]])  # Y_0 - Y_1 <= 0
    np.testing.assert_array_equal(C2, [[1, 0, -1]])
    assert d1.tolist() == d2.tolist() == [0.0]
    gz = tmp_path / "p.vnnlib.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    spec_gz = parse_vnnlib(gz)
    assert len(spec_gz.cases) == 2 and np.array_equal(spec_gz.lo, spec.lo)


def test_conjunction_of_rows_linear_terms_and_comparison_kinds():
    text = declare(1, 3) + box([0], [1]) + (
        "(assert (<= (+ Y_0 (* 2 Y_1) (- Y_2)) 1.5))\n"  # Y_0 + 2 Y_1 - Y_2 <= 1.5
        "(assert (> (* Y_1 -3) (/ Y_2 4)))\n"  # -3 Y_1 > Y_2 / 4  ->  3 Y_1 + Y_2/4 <= 0
        "(assert (= Y_2 (- 0.5)))\n"  # two rows
        "(assert (< Y_0 Y_1 1e-1))\n")  # a chain: Y_0 <= Y_1 and Y_1 <= 0.1
    spec = parse_vnnlib_text(text, "t")
    (C, d), = spec.disjuncts
    rows = {tuple(np.round(np.append(c, b), 6)) for c, b in zip(C, d)}
    assert rows == {(1, 2, -1, 1.5), (0, 3, 0.25, 0), (0, 0, 1, -0.5), (0, 0, -1, 0.5), (1, -1, 0, 0),
                    (0, 1, 0, 0.1)}


def test_nested_or_of_ands_and_conjunctions_distribute():
    text = declare(1, 2) + box([0], [1]) + (
        "(assert (or (and (<= Y_0 1) (>= Y_1 2)) (and (<= Y_0 3) (or (>= Y_1 4) (>= Y_1 5)))))\n"
        "(assert (or (<= Y_0 7) (<= Y_1 8)))\n")
    spec = parse_vnnlib_text(text, "t")
    assert len(spec.cases) == 3 * 2
    assert all(c.C.shape[0] in (3, 3) for c in spec.cases)
    first = spec.cases[0]
    assert {tuple(np.append(c, b)) for c, b in zip(first.C, first.d)} == {(1, 0, 1), (0, -1, -2), (1, 0, 7)}


def test_input_disjunction_gives_regions_and_empty_cases_are_dropped():
    text = declare(1, 1) + (
        "(assert (or (and (>= X_0 0) (<= X_0 0.2)) (and (>= X_0 0.8) (<= X_0 1)) (and (>= X_0 2) (<= X_0 1))))\n"
        "(assert (or (>= Y_0 0.5) (<= 3 2)))\n")  # the second disjunct is a false constant comparison
    spec = parse_vnnlib_text(text, "t")
    regions = spec.regions()
    assert [(r.lo.tolist(), r.hi.tolist(), len(r.disjuncts)) for r in regions] == [([0], [0.2], 1), ([0.8], [1], 1)]
    with pytest.raises(HamverifyError, match="2 input boxes"):
        spec.lo
    # an output constraint that is constantly true leaves a case without rows
    spec = parse_vnnlib_text(declare(1, 1) + box([0], [1]) + "(assert (<= 1 2))\n", "t")
    assert spec.disjuncts[0][0].shape == (0, 1)
    # an unsatisfiable output constraint leaves no case: the property cannot be violated
    spec = parse_vnnlib_text(declare(1, 1) + box([0], [1]) + "(assert (<= 3 2))\n", "t")
    assert spec.cases == ()


def test_tightest_bounds_win():
    spec = parse_vnnlib_text(declare(1, 1) + box([0], [1]) + "(assert (<= X_0 0.5))\n(assert (>= Y_0 0))\n", "t")
    assert spec.hi.tolist() == [0.5] and spec.lo.tolist() == [0.0]


@pytest.mark.parametrize("body,needle", [
    ("(assert (>= Y_3 0))", "undeclared variable Y_3"),
    ("(assert (>= X_7 0))", "undeclared variable X_7"),
    ("(assert (>= Z 0))", "unknown symbol 'Z'"),
    ("(assert (>= Y_0 0)", "unbalanced"),
    ("(assert (>= Y_0 0)))", "unbalanced"),
    ("(assert (>= Y_0 X_0))", "mixes inputs X and outputs Y"),
    ("(assert (<= (+ X_0 X_1) 1))", "several inputs"),
    ("(assert (<= (* Y_0 Y_1) 1))", "not linear"),
    ("(assert (not (<= Y_0 1)))", "'not' is not supported"),
    ("(assert (=> (<= Y_0 1) (<= Y_1 1)))", "unsupported operator '=>'"),
    ("(declare-fun f () Real)", "unsupported command 'declare-fun'"),
    ("(assert (<= Y_0 1) (<= Y_1 1))", "expected (assert FORMULA)"),
    ("(assert (<= Y_0))", "needs two or more arguments"),
    ("(assert (<= (/ Y_0 0) 1))", "division by zero"),
    ("(declare-const X_0 Real)", "X_0 declared twice"),
])
def test_malformed_specs_are_one_line_errors(body, needle):
    text = declare(2, 2) + box([0, 0], [1, 1]) + body + "\n"
    with pytest.raises(HamverifyError) as exc:
        parse_vnnlib_text(text, "spec.vnnlib")
    msg = str(exc.value)
    assert "\n" not in msg and needle in msg and msg.startswith("spec.vnnlib")


@pytest.mark.parametrize("text,needle", [
    (declare(2, 1) + "(assert (>= X_0 0))(assert (<= X_0 1))(assert (<= X_1 1))(assert (>= Y_0 0))",
     "X_1 has no lower bound"),
    ("(declare-const X_0 Real)(declare-const X_2 Real)(declare-const Y_0 Real)(assert (>= Y_0 0))",
     "X_1 is not declared"),
    ("(declare-const X_0 Int)(declare-const Y_0 Real)", "must be Real"),
    ("(declare-const W_0 Real)", "neither X_i (input) nor Y_j (output)"),
    ("(declare-const X_0 Real)(assert (>= X_0 0))", "no Y_i variables declared"),
    (declare(1, 1), "no assertions"),
])
def test_declarations_and_bounds_errors(text, needle):
    with pytest.raises(HamverifyError) as exc:
        parse_vnnlib_text(text, "s")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_file_errors(tmp_path):
    with pytest.raises(HamverifyError, match="not found"):
        parse_vnnlib(tmp_path / "missing.vnnlib")
    binary = tmp_path / "b.vnnlib"
    binary.write_bytes(b"\xff\xfe\x00(assert")
    with pytest.raises(HamverifyError, match="not UTF-8"):
        parse_vnnlib(binary)
    broken_gz = tmp_path / "c.vnnlib.gz"
    broken_gz.write_bytes(gzip.compress(b"(declare-const X_0 Real)")[:12])
    with pytest.raises(HamverifyError, match="corrupt gzip"):
        parse_vnnlib(broken_gz)


def test_large_box_parses_quickly():
    import time
    n = 3072
    text = declare(n, 10) + box(np.zeros(n), np.ones(n)) + "(assert (or " + " ".join(
        f"(and (>= Y_{j} Y_0))" for j in range(1, 10)) + "))\n"
    t = time.perf_counter()
    spec = parse_vnnlib_text(text, "big")
    assert time.perf_counter() - t < 5
    assert len(spec.regions()) == 1 and len(spec.disjuncts) == 9
