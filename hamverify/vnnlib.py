"""VNN-LIB property files (the VNN-COMP subset of SMT-LIB), plain or ``.vnnlib.gz``.

Supported: ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)`` (inputs and outputs, indices
0..n-1, flattened in the ONNX tensor's row-major order), and ``(assert F)`` where ``F`` is built from
``and`` / ``or`` (nested freely) over comparisons ``<= >= < > =`` of linear expressions
(numbers, variables, ``+``, ``-``, ``*`` by a constant, ``/`` by a constant).  Strict comparisons
are read as non-strict, as VNN-COMP does (so *unsat* for the non-strict set implies it for the
strict one; a reported counterexample is validated on the network anyway).

Meaning: the property is *violated* iff some input satisfies every assertion.  The conjunction of
all assertions is brought to disjunctive normal form; in each conjunction (a :class:`Case`) the
comparisons over a single input are bounds of the input box (each input needs both a lower and an
upper bound), those over outputs are rows ``C y <= d``.  A comparison that mixes inputs and
outputs, or several inputs, is refused.  Cases with an empty box or a false constant comparison
are dropped: a spec without cases cannot be violated.
"""
from __future__ import annotations

import gzip
import itertools
import pathlib
import re
from dataclasses import dataclass

import numpy as np

from . import HamverifyError

MAX_CASES = 100_000  # disjunctive normal form larger than this is refused, not expanded
_VAR = re.compile(r"^([XY])_(\d+)$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_IGNORED = {"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"}


@dataclass(frozen=True)
class Case:
    """One disjunct: the input box ``lo <= x <= hi`` and output rows ``C @ y <= d``."""

    lo: np.ndarray
    hi: np.ndarray
    C: np.ndarray  # (rows, n_outputs)
    d: np.ndarray  # (rows,)


@dataclass(frozen=True)
class Region:
    """Cases that share one input box: violated iff some x in the box satisfies some disjunct."""

    lo: np.ndarray
    hi: np.ndarray
    disjuncts: tuple[tuple[np.ndarray, np.ndarray], ...]  # (C, d) per disjunct


@dataclass(frozen=True)
class VnnlibSpec:
    n_inputs: int
    n_outputs: int
    cases: tuple[Case, ...]
    source: str = ""

    def regions(self) -> list[Region]:
        """The cases grouped by input box, in order of first appearance."""
        groups: dict[bytes, list[Case]] = {}
        for case in self.cases:
            groups.setdefault(case.lo.tobytes() + case.hi.tobytes(), []).append(case)
        return [Region(g[0].lo, g[0].hi, tuple((c.C, c.d) for c in g)) for g in groups.values()]

    @property
    def lo(self) -> np.ndarray:
        return self._single().lo

    @property
    def hi(self) -> np.ndarray:
        return self._single().hi

    @property
    def disjuncts(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """``((C, d), ...)`` of a spec with one input box."""
        return self._single().disjuncts

    def _single(self) -> Region:
        regions = self.regions()
        if len(regions) != 1:
            raise HamverifyError(f"{self.source}: the spec has {len(regions)} input boxes; use regions()")
        return regions[0]


# --------------------------------------------------------------------------------------- s-expressions

@dataclass(frozen=True)
class _Atom:
    text: str
    line: int


class _Parser:
    def __init__(self, text: str, source: str):
        self.source = source
        self.text = text

    def fail(self, line: int | None, message: str):
        where = f"{self.source}:{line}" if line else self.source
        raise HamverifyError(f"{where}: {message}")

    def sexprs(self) -> list:
        """Top-level s-expressions; lists are (line, [items]) and atoms _Atom."""
        stack: list[tuple[int, list]] = []
        top: list = []
        line = 1
        token = re.compile(r"\s+|;[^\n]*|\(|\)|\|[^|]*\||[^\s();]+")
        pos = 0
        while pos < len(self.text):
            m = token.match(self.text, pos)
            if m is None:  # pragma: no cover - the pattern matches any character
                self.fail(line, f"cannot read {self.text[pos:pos + 20]!r}")
            tok = m.group(0)
            pos = m.end()
            if tok[0].isspace() or tok[0] == ";":
                line += tok.count("\n")
                continue
            if tok == "(":
                stack.append((line, []))
            elif tok == ")":
                if not stack:
                    self.fail(line, "unbalanced ')'")
                item = stack.pop()
                (stack[-1][1] if stack else top).append(item)
            else:
                (stack[-1][1] if stack else top).append(_Atom(tok, line))
            line += tok.count("\n")
        if stack:
            self.fail(stack[-1][0], "unbalanced '(' (missing ')')")
        return top


def _read_text(path) -> tuple[str, str]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise HamverifyError(f"VNN-LIB file not found: {path}")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise HamverifyError(f"{path}: corrupt gzip file ({type(exc).__name__})") from None
    try:
        return data.decode("utf-8"), str(path)
    except UnicodeDecodeError:
        raise HamverifyError(f"{path}: not a text file (not UTF-8)") from None


# A linear expression: (coefficients {("X"|"Y", index): value}, constant)
_Lin = tuple[dict, float]


class _Spec:
    def __init__(self, parser: _Parser):
        self.p = parser
        self.declared: dict[tuple[str, int], int] = {}

    def declare(self, line: int, items: list):
        if len(items) != 3 or not all(isinstance(i, _Atom) for i in items):
            self.p.fail(line, "expected (declare-const NAME Real)")
        name, typ = items[1].text, items[2].text
        m = _VAR.match(name)
        if not m:
            self.p.fail(line, f"variable {name!r} is neither X_i (input) nor Y_j (output)")
        if typ != "Real":
            self.p.fail(line, f"variable {name} must be Real, got {typ}")
        key = (m.group(1), int(m.group(2)))
        if key in self.declared:
            self.p.fail(line, f"{name} declared twice")
        self.declared[key] = line

    def sizes(self) -> tuple[int, int]:
        out = []
        for kind in "XY":
            idx = sorted(i for k, i in self.declared if k == kind)
            if not idx:
                self.p.fail(None, f"no {kind}_i variables declared")
            if idx != list(range(len(idx))):
                gap = next(i for i in range(len(idx) + 1) if i not in set(idx))
                self.p.fail(None, f"{kind}_{gap} is not declared, but {kind}_{idx[-1]} is")
            out.append(len(idx))
        return out[0], out[1]

    # -- expressions -----------------------------------------------------------------------
    def number(self, atom: _Atom) -> float | None:
        return float(atom.text) if _NUMBER.match(atom.text) else None

    def linear(self, expr) -> _Lin:
        if isinstance(expr, _Atom):
            value = self.number(expr)
            if value is not None:
                return {}, value
            m = _VAR.match(expr.text)
            if m is None:
                self.p.fail(expr.line, f"unknown symbol {expr.text!r} in an expression")
            key = (m.group(1), int(m.group(2)))
            if key not in self.declared:
                self.p.fail(expr.line, f"undeclared variable {expr.text}")
            return {key: 1.0}, 0.0
        line, items = expr
        if not items or not isinstance(items[0], _Atom):
            self.p.fail(line, "expected an expression (OP ARGS...)")
        op, args = items[0].text, [self.linear(a) for a in items[1:]]
        if not args:
            self.p.fail(line, f"({op}) without arguments")
        if op == "+":
            return _add(args)
        if op == "-":
            if len(args) == 1:
                return _scale(args[0], -1.0)
            return _add([args[0]] + [_scale(a, -1.0) for a in args[1:]])
        if op == "*":
            result = args[0]
            for a in args[1:]:
                if result[0] and a[0]:
                    self.p.fail(line, "product of two variables (not linear)")
                result = _scale(a, result[1]) if not result[0] else _scale(result, a[1])
            return result
        if op == "/":
            if len(args) != 2 or args[1][0]:
                self.p.fail(line, "(/ a b) needs a constant b")
            if args[1][1] == 0:
                self.p.fail(line, "division by zero")
            return _scale(args[0], 1.0 / args[1][1])
        self.p.fail(line, f"unsupported operator {op!r} in an expression")

    # -- formulas: DNF as a list of conjunctions, each a list of rows (coeffs, const) <= 0 ----
    def formula(self, expr) -> list[list]:
        if isinstance(expr, _Atom):
            if expr.text == "true":
                return [[]]
            if expr.text == "false":
                return []
            self.p.fail(expr.line, f"expected a formula, got {expr.text!r}")
        line, items = expr
        if not items or not isinstance(items[0], _Atom):
            self.p.fail(line, "expected a formula (OP ARGS...)")
        op = items[0].text
        args = items[1:]
        if op == "and":
            result = [[]]
            for a in args:
                result = _conjoin(result, self.formula(a), lambda m: self.p.fail(line, m))
            return result
        if op == "or":
            result = []
            for a in args:
                result += self.formula(a)
                if len(result) > MAX_CASES:
                    self.p.fail(line, f"the disjunctive normal form has more than {MAX_CASES} cases")
            return result
        if op in ("<=", ">=", "<", ">", "="):
            if len(args) < 2:
                self.p.fail(line, f"({op} ...) needs two or more arguments")
            terms = [self.linear(a) for a in args]
            rows = []
            for a, b in zip(terms, terms[1:]):
                diff = _add([a, _scale(b, -1.0)])  # a - b
                if op in ("<=", "<", "="):
                    rows.append(diff)
                if op in (">=", ">", "="):
                    rows.append(_scale(diff, -1.0))
            return [rows]
        if op == "not":
            self.p.fail(line, "'not' is not supported (write the negated comparison instead)")
        self.p.fail(line, f"unsupported operator {op!r} in a formula")


def _conjoin(left: list[list], right: list[list], fail) -> list[list]:
    """DNF of (OR left) AND (OR right); the common single-conjunction case extends in place."""
    if len(right) == 1:
        for conj in left:
            conj.extend(right[0])
        return left
    if len(left) * len(right) > MAX_CASES:
        fail(f"the disjunctive normal form has more than {MAX_CASES} cases")
    return [a + b for a, b in itertools.product(left, right)]


def _add(terms: list[_Lin]) -> _Lin:
    coeffs: dict = {}
    const = 0.0
    for c, k in terms:
        for var, v in c.items():
            coeffs[var] = coeffs.get(var, 0.0) + v
        const += k
    return {var: v for var, v in coeffs.items() if v != 0.0}, const


def _scale(term: _Lin, s: float) -> _Lin:
    return ({var: v * s for var, v in term[0].items() if v * s != 0.0}, term[1] * s)


def _case(conj: list, n_in: int, n_out: int, fail) -> Case | None:
    lo, hi = np.full(n_in, -np.inf), np.full(n_in, np.inf)
    C_rows, d = [], []
    for coeffs, const in conj:
        kinds = {k for k, _ in coeffs}
        if not coeffs:
            if const > 0:
                return None  # a false constant comparison: this case is empty
            continue
        if kinds == {"X"}:
            if len(coeffs) != 1:
                fail(None, "a constraint over several inputs (only bounds of single inputs X_i are supported)")
            ((_, i), a), = coeffs.items()
            bound = -const / a  # a x + const <= 0
            if a > 0:
                hi[i] = min(hi[i], bound)
            else:
                lo[i] = max(lo[i], bound)
        elif kinds == {"Y"}:
            row = np.zeros(n_out)
            for (_, j), v in coeffs.items():
                row[j] = v
            C_rows.append(row)
            d.append(-const)
        else:
            fail(None, "a constraint mixes inputs X and outputs Y (not supported)")
    for name, arr in (("lower", lo), ("upper", hi)):
        missing = np.flatnonzero(~np.isfinite(arr))
        if missing.size:
            fail(None, f"X_{missing[0]} has no {name} bound")
    if np.any(lo > hi):
        return None
    C = np.array(C_rows, dtype=np.float64).reshape(len(C_rows), n_out)
    return Case(lo, hi, C, np.array(d, dtype=np.float64))


def parse_vnnlib_text(text: str, source: str = "<vnnlib>") -> VnnlibSpec:
    parser = _Parser(text, source)
    spec = _Spec(parser)
    asserts = []
    for form in parser.sexprs():
        if isinstance(form, _Atom):
            parser.fail(form.line, f"unexpected {form.text!r} at the top level")
        line, items = form
        if not items or not isinstance(items[0], _Atom):
            parser.fail(line, "expected a command such as (declare-const ...) or (assert ...)")
        cmd = items[0].text
        if cmd == "declare-const":
            spec.declare(line, items)
        elif cmd == "assert":
            if len(items) != 2:
                parser.fail(line, "expected (assert FORMULA)")
            asserts.append(items[1])
        elif cmd not in _IGNORED:
            parser.fail(line, f"unsupported command {cmd!r}")
    n_in, n_out = spec.sizes()
    if not asserts:
        parser.fail(None, "no assertions")
    conjunctions = [[]]
    for a in asserts:
        conjunctions = _conjoin(conjunctions, spec.formula(a), lambda m: parser.fail(None, m))
    cases = [_case(conj, n_in, n_out, parser.fail) for conj in conjunctions]
    return VnnlibSpec(n_in, n_out, tuple(c for c in cases if c is not None), source)


def parse_vnnlib(path) -> VnnlibSpec:
    """Parse a ``.vnnlib`` or ``.vnnlib.gz`` file; every problem is a one-line HamverifyError."""
    text, source = _read_text(path)
    return parse_vnnlib_text(text, source)
