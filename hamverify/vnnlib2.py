"""VNN-LIB 2.0 queries (issue 17): typed, named networks, indexed tensor variables, several inputs,
outputs, hidden nodes and networks in one query, read into the internal spec that
:func:`hamverify.vnncomp.decide` consumes for VNN-LIB 1.0 (input boxes, rows ``C z <= d``,
disjunctions), so that one cascade serves both versions.

Own parser, not the PyPI package ``vnnlib`` (the standard's parser, bindings to its C++ library).
Both were tried on the 178 queries of the conformance suite ``vnnlib-satisfactory``: the package
parses them into a type-checked syntax tree, but its one transformation to boxes and polytopes
(``vnnlib.compat.transform``) accepts only one network with one input and one output, bounds of
single inputs and constraints over outputs alone, i.e. what the 1.0 parser already reads; it refuses
18 of the queries (several networks, inputs or outputs, hidden nodes, constraints over several
inputs) and rejects one the suite deems valid (an ``isomorphic-to`` network declared with another
element type, which this module accepts: see ``Instance.type_relaxed``).  Of the rest, it gives the same boxes and polytopes as this module for 117, and
unbounded boxes for 2 (``constant03``, ``mul04``: each input bounded by its own ``(assert (and ...))``
line), i.e. wrong ones.  Everything beyond 1.0 would have meant walking its tree ourselves anyway,
behind a binary-only native dependency (manylinux / CPython-specific wheels, version 1.0.2).  The grammar is small (the
standard's LBNF), and this module reads it with line numbers and one-line errors, as
:mod:`hamverify.vnnlib` does for 1.0.

Read (``parse_query``): ``(vnnlib-version <2.0>)``; ``(declare-network NAME [(equal-to M)]
[(isomorphic-to M)] (declare-input V TYPE [d0,d1,...] ["onnx-name"]) ... (declare-hidden V TYPE
SHAPE "onnx-tensor") ... (declare-output V TYPE SHAPE ["onnx-name"]) ...)``; ``(assert F)`` with
``and`` / ``or`` over ``<= >= < > == != =`` of arithmetic over constants and elements ``V[i,j]`` (a
scalar ``V`` of shape ``[]`` without brackets): ``+``, ``-`` (negation and left-associative
subtraction), ``*``, and ``/`` by a constant.  Elements are flattened row-major.  A product of two
variables is parsed but outside the linear fragment: :attr:`Query.nonlinear` holds the reason and
the answer is ``unknown``.  Version detection (:func:`vnnlib_version`): a file with
``vnnlib-version`` or ``declare-network`` is 2.0, any other 1.0.

Meaning, as in 1.0: the query is ``sat`` iff some assignment satisfies every assertion.  The
conjunction is brought to disjunctive normal form; each conjunction (a *case*) is rows
``sum a_v v + c <= 0`` (``< 0`` when strict; ``!=`` is ``<`` or ``>``).

Compiled (:func:`build_instance`) against the ONNX models of the ``--network`` options into one
IR network and a :class:`~hamverify.vnnlib.VnnlibSpec` over it:

* its input is every network's declared inputs, concatenated in declaration order (each network a
  separate copy, ``equal-to`` ones with the ONNX model of the network they equal); declared inputs
  map to the ONNX graph's inputs in order, or by ONNX name when every one gives one, outputs
  likewise; a graph with several inputs is read through one flat input (Gather + Reshape);
* its output ``z`` is one *component* per referenced output or hidden tensor (the graph cut at that
  tensor and imported with :func:`hamverify.onnx_io.import_onnx`, so each is exact), plus a copy of
  the input elements that occur in any row other than a bound of one input; the components run
  side by side (block diagonal), a shorter one carried through the remaining ReLU layers as
  ``relu(v - s) + s`` with ``s`` a sound lower bound of ``v`` over the inputs' bounding box (so the
  ReLU is stably active: exact, and the MILP spends no binary on it);
* each component is imported for the inputs' bounding box over all cases, so that comparisons in
  the graph (Greater, Equal, Cast to bool or int, Where on them) that interval bounds over it
  decide become constants: exact on that box, which is all the solver reads;
* per case, the bounds of single inputs give the box (strict bounds read as non-strict); every
  other row, over any mix of inputs, hidden nodes and outputs of any networks, is a row of ``C z <=
  d``.  So linear constraints over several inputs are exact everywhere: in the bounds (symbolic
  bounds are linear in the input copy), the attack and the MILP;
* inputs equal in every case (``(== X2[i] X[i])``, the equivalence of two networks) become one
  column of the solver's input ``u`` that both networks read (an equality row could never be
  violated by a margin, which the MILP's "``t < 0``" test for a counterexample needs);
* an input bounded only through other inputs' rows gets the box that interval propagation through
  those rows implies (the rows stay exact in ``C``); an input without any bound is searched in
  ``[-UNBOUNDED_BOX, UNBOUNDED_BOX]``, where a counterexample is one, but ``unsat`` only says that
  the box holds none, so it is answered ``unknown``.

Soundness: the bounds treat strict rows as non-strict (a superset), and a counterexample counts
only when, besides vnncomp's checks (float32 values inside the box, the rows on the float64 IR and
on onnxruntime within ``ORT_ATOL``), every row of some case holds on the IR with its strictness.
Element types: a declared ONNX element type must match the model's (the standard requires an error
otherwise); ``Real`` is the standard's explicit permission to analyse in real arithmetic, and typed
queries are analysed the same way (as VNN-COMP does), a ``sat`` being confirmed by onnxruntime in
the model's own types.  ``supports --onnx-element-types`` reports ``real`` accordingly.
"""
from __future__ import annotations

import itertools
import re
import time
import types
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import HamverifyError
from .vnnlib import _NUMBER, MAX_CASES, Case, VnnlibSpec, _add, _read_text, _scale

VERSIONS = ("1.0", "2.0")
# The element types of ONNX's IR.md (the names VNN-LIB uses), and VNN-LIB's own "Real".
ELEMENT_TYPES = {
    "float16", "float32", "float64", "bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2",
    "float8e5m2fnuz", "float4e2m1", "int4", "uint4", "int8", "int16", "int32", "int64", "uint8", "uint16",
    "uint32", "uint64", "bool", "string", "complex64", "complex128", "real"}
# TensorProto.DataType -> that name
_ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
               9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64",
               15: "complex128", 16: "bfloat16"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TOKEN = re.compile(r'\s+|;[^\n]*|"[^"\n]*"|[()\[\],]|[^\s()\[\],;"]+')
_VERSION = re.compile(r"^<(\d+)\.(\d+)>$")
_DETECT = re.compile(r"\(\s*(vnnlib-version|declare-network)[\s()]")
SHIFT_MARGIN = 1e-6  # relative slack below a carried value's interval lower bound
UNBOUNDED_BOX = 100.0  # an input without bounds is searched in [-100, 100] (sat only; never unsat)


# ------------------------------------------------------------------------------------------ the query

@dataclass(frozen=True)
class Variable:
    """A declared tensor: ``kind`` input | hidden | output of network ``network``."""

    name: str
    kind: str
    dtype: str  # as declared, "real" for Real
    shape: tuple[int, ...]
    onnx_name: str | None
    network: str
    line: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def label(self, flat: int) -> str:
        if not self.shape:
            return self.name
        return f"{self.name}[{','.join(str(int(i)) for i in np.unravel_index(flat, self.shape))}]"


@dataclass(frozen=True)
class NetworkDecl:
    name: str
    inputs: tuple[Variable, ...]
    hidden: tuple[Variable, ...]
    outputs: tuple[Variable, ...]
    equal_to: str | None
    isomorphic_to: str | None
    line: int

    @property
    def variables(self) -> tuple[Variable, ...]:
        return self.inputs + self.hidden + self.outputs


@dataclass(frozen=True)
class Row:
    """``sum coef * v + const <= 0`` (``< 0`` when ``strict``); ``coeffs``: ((name, flat), coef)."""

    coeffs: tuple[tuple[tuple[str, int], float], ...]
    const: float
    strict: bool = False

    def value(self, values: dict) -> float:
        return float(sum(c * values[k] for k, c in self.coeffs) + self.const)

    def holds(self, values: dict) -> bool:
        v = self.value(values)
        return v < 0 if self.strict else v <= 0


@dataclass(frozen=True)
class Query:
    """A parsed VNN-LIB 2.0 query: violated (``sat``) iff every row of some case holds."""

    version: str
    networks: tuple[NetworkDecl, ...]
    variables: dict  # name -> Variable, in declaration order
    cases: tuple[tuple[Row, ...], ...]
    nonlinear: str = ""  # why the query is outside the linear fragment ("" when it is not)
    source: str = ""

    def network(self, name: str) -> NetworkDecl:
        return next(n for n in self.networks if n.name == name)

    def root(self, name: str) -> str:
        """The network whose ONNX model ``name`` uses (following ``equal-to``)."""
        seen = set()
        while True:
            decl = self.network(name)
            if decl.equal_to is None:
                return name
            seen.add(name)
            name = decl.equal_to
            if name in seen:  # pragma: no cover - refused by the parser
                raise HamverifyError(f"{self.source}: equal-to cycle through {name}")

    def model_networks(self) -> list[str]:
        """The networks that need a ``--network NAME=FILE`` (those without ``equal-to``)."""
        return [n.name for n in self.networks if n.equal_to is None]


def vnnlib_version(text: str) -> str:
    """"2.0" for a file with ``vnnlib-version`` or ``declare-network``, else "1.0"."""
    return "2.0" if _DETECT.search(re.sub(r";[^\n]*", "", text)) else "1.0"


# ------------------------------------------------------------------------------------------ reading

@dataclass(frozen=True)
class _Atom:
    text: str
    line: int
    quoted: bool = False


@dataclass(frozen=True)
class _List:
    line: int
    items: tuple


@dataclass(frozen=True)
class _Index:  # the contents of [...]: a shape or an element's indices
    line: int
    values: tuple[str, ...]


class _NonLinear(Exception):
    pass


class _Reader:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source

    def fail(self, line: int | None, message: str):
        raise HamverifyError(f"{self.source}:{line}: {message}" if line else f"{self.source}: {message}")

    def forms(self) -> list:
        stack: list[tuple[int, list]] = []
        top: list = []
        bracket: tuple[int, list] | None = None
        line, pos = 1, 0
        while pos < len(self.text):
            m = _TOKEN.match(self.text, pos)
            if m is None:
                self.fail(line, f"cannot read {self.text[pos:pos + 20]!r} (an unterminated string?)")
            tok, pos = m.group(0), m.end()
            here = line
            line += tok.count("\n")
            if tok[0].isspace() or tok[0] == ";":
                continue
            if bracket is not None:
                if tok == "]":
                    values = [v for v in bracket[1] if v != ","]
                    if bracket[1] and (bracket[1][0] == "," or bracket[1][-1] == ","
                                       or any(a == b == "," or (a != "," and b != ",")
                                              for a, b in zip(bracket[1], bracket[1][1:]))):
                        self.fail(here, f"malformed [{' '.join(bracket[1])}] (numbers separated by commas)")
                    (stack[-1][1] if stack else top).append(_Index(bracket[0], tuple(values)))
                    bracket = None
                elif tok in "()[" or tok.startswith('"'):
                    self.fail(here, f"unexpected {tok!r} inside [...]")
                else:
                    bracket[1].append(tok)
                continue
            if tok == "(":
                stack.append((here, []))
            elif tok == ")":
                if not stack:
                    self.fail(here, "unbalanced ')'")
                start, items = stack.pop()
                (stack[-1][1] if stack else top).append(_List(start, tuple(items)))
            elif tok == "[":
                bracket = (here, [])
            elif tok in ("]", ","):
                self.fail(here, f"unexpected {tok!r}")
            elif tok.startswith('"'):
                (stack[-1][1] if stack else top).append(_Atom(tok[1:-1], here, quoted=True))
            else:
                (stack[-1][1] if stack else top).append(_Atom(tok, here))
        if bracket is not None:
            self.fail(bracket[0], "unbalanced '[' (missing ']')")
        if stack:
            self.fail(stack[-1][0], "unbalanced '(' (missing ')')")
        return top


class _QueryParser:
    def __init__(self, text: str, source: str):
        self.r = _Reader(text, source)
        self.source = source
        self.fail = self.r.fail
        self.variables: dict[str, Variable] = {}
        self.networks: list[NetworkDecl] = []

    # -- declarations ------------------------------------------------------------------------
    def name(self, item, what: str) -> str:
        if not isinstance(item, _Atom) or item.quoted or not _NAME.match(item.text):
            got = item.text if isinstance(item, _Atom) else "(...)" if isinstance(item, _List) else "[...]"
            self.fail(getattr(item, "line", None), f"expected {what} (a letter, then letters, digits or _), "
                                                   f"got {got!r}")
        return item.text

    def shape(self, item, line: int) -> tuple[int, ...]:
        if not isinstance(item, _Index):
            self.fail(line, "expected a shape such as [1,784] (or [] for a scalar)")
        dims = []
        for v in item.values:
            if not re.fullmatch(r"\d+", v) or int(v) == 0:
                self.fail(item.line, f"shape entry {v!r} is not a positive integer")
            dims.append(int(v))
        return tuple(dims)

    def declare_var(self, form: _List, kind: str, network: str) -> Variable:
        items = form.items
        head = items[0].text
        need_name = kind == "hidden"
        if len(items) not in ((5,) if need_name else (4, 5)):
            self.fail(form.line, f"expected ({head} NAME TYPE [SHAPE]" + (' "onnx-name")' if need_name
                                                                          else ' ["onnx-name"])'))
        name = self.name(items[1], "a variable name")
        if not isinstance(items[2], _Atom) or items[2].quoted:
            self.fail(form.line, f"{name}: expected an element type")
        dtype = items[2].text.lower() if items[2].text.lower() == "real" else items[2].text
        if dtype not in ELEMENT_TYPES:
            self.fail(items[2].line, f"{name}: unknown element type {items[2].text!r} (e.g. float32, float64, "
                                     f"int64, Real)")
        shape = self.shape(items[3], form.line)
        onnx_name = None
        if len(items) == 5:
            if not (isinstance(items[4], _Atom) and items[4].quoted):
                self.fail(form.line, f"{name}: the ONNX name must be a quoted string")
            onnx_name = items[4].text
        if name in self.variables:
            self.fail(form.line, f"variable {name} is declared twice (line {self.variables[name].line})")
        var = Variable(name, kind, dtype, shape, onnx_name, network, form.line)
        self.variables[name] = var
        return var

    def declare_network(self, form: _List) -> NetworkDecl:
        items = form.items
        if len(items) < 2:
            self.fail(form.line, "expected (declare-network NAME (declare-input ...) ... (declare-output ...))")
        name = self.name(items[1], "a network name")
        if any(n.name == name for n in self.networks):
            self.fail(form.line, f"network {name} is declared twice")
        equal = iso = None
        groups = {"input": [], "hidden": [], "output": []}
        order = {"input": 0, "hidden": 1, "output": 2}
        last = -1
        for item in items[2:]:
            if not (isinstance(item, _List) and item.items and isinstance(item.items[0], _Atom)):
                self.fail(getattr(item, "line", form.line), f"network {name}: expected (declare-input ...), "
                                                            f"(declare-hidden ...), (declare-output ...)")
            head = item.items[0].text
            if head in ("equal-to", "isomorphic-to"):
                if last >= 0 or len(item.items) != 2:
                    self.fail(item.line, f"network {name}: ({head} NETWORK) must come first, with one name")
                other = self.name(item.items[1], "a network name")
                if not any(n.name == other for n in self.networks):
                    self.fail(item.line, f"network {name}: {head} {other}, which is not declared before it")
                if head == "equal-to":
                    equal = other
                else:
                    iso = other
                continue
            kind = {"declare-input": "input", "declare-hidden": "hidden", "declare-output": "output"}.get(head)
            if kind is None:
                self.fail(item.line, f"network {name}: unexpected ({head} ...)")
            if order[kind] < last:
                self.fail(item.line, f"network {name}: declare inputs, then hidden nodes, then outputs")
            last = order[kind]
            groups[kind].append(self.declare_var(item, kind, name))
        if not groups["input"] or not groups["output"]:
            self.fail(form.line, f"network {name} must declare at least one input and one output")
        decl = NetworkDecl(name, tuple(groups["input"]), tuple(groups["hidden"]), tuple(groups["output"]),
                           equal, iso, form.line)
        if equal is not None:
            other = next(n for n in self.networks if n.name == equal)
            for kind in ("inputs", "hidden", "outputs"):
                mine, theirs = getattr(decl, kind), getattr(other, kind)
                if kind == "hidden":
                    continue  # hidden nodes are declared per network
                if [v.shape for v in mine] != [v.shape for v in theirs]:
                    self.fail(form.line, f"network {name} is equal-to {equal} but its {kind} have shapes "
                                         f"{[list(v.shape) for v in mine]}, not {[list(v.shape) for v in theirs]}")
        return decl

    # -- expressions -------------------------------------------------------------------------
    def element(self, atom: _Atom, index: _Index | None):
        var = self.variables.get(atom.text)
        if var is None:
            self.fail(atom.line, f"undeclared variable {atom.text}")
        idx = () if index is None else index.values
        if len(idx) != len(var.shape):
            self.fail(atom.line, f"{var.name} has shape {list(var.shape)}: it takes {len(var.shape)} "
                                 f"ind{'ex' if len(var.shape) == 1 else 'ices'}, got {len(idx)}")
        flat = 0
        for v, n in zip(idx, var.shape):
            if not re.fullmatch(r"\d+", v) or int(v) >= n:
                self.fail(atom.line, f"index {v} of {var.name} is outside [0, {n})")
            flat = flat * n + int(v)
        return {(var.name, flat): 1.0}, 0.0

    def terms(self, items) -> list:
        """Arguments with ``NAME [i,j]`` pairs joined; each becomes a linear form."""
        out, i = [], 0
        while i < len(items):
            item = items[i]
            if isinstance(item, _Atom) and not item.quoted and i + 1 < len(items) and isinstance(items[i + 1], _Index):
                if _NUMBER.match(item.text):
                    self.fail(item.line, f"a number cannot be indexed: {item.text}[...]")
                out.append(self.element(item, items[i + 1]))
                i += 2
                continue
            if isinstance(item, _Index):
                self.fail(item.line, "[...] without a variable before it")
            out.append(self.linear(item))
            i += 1
        return out

    def linear(self, expr):
        if isinstance(expr, _Atom):
            if expr.quoted:
                self.fail(expr.line, f"unexpected string \"{expr.text}\" in an expression")
            if _NUMBER.match(expr.text):
                return {}, float(expr.text)
            if _NAME.match(expr.text) and expr.text in self.variables:
                return self.element(expr, None)
            self.fail(expr.line, f"unknown symbol {expr.text!r} in an expression")
        line, items = expr.line, expr.items
        if not items or not isinstance(items[0], _Atom):
            self.fail(line, "expected an expression (OP ARGS...)")
        op, args = items[0].text, self.terms(items[1:])
        if not args:
            self.fail(line, f"({op}) without arguments")
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
                    raise _NonLinear(f"{self.source}:{line}: a product of variables (polynomial arithmetic is outside "
                                     f"the linear fragment)")
                result = _scale(a, result[1]) if not result[0] else _scale(result, a[1])
            return result
        if op == "/":
            if len(args) != 2 or args[1][0]:
                raise _NonLinear(f"{self.source}:{line}: a division by a variable (outside the linear fragment)")
            if args[1][1] == 0:
                self.fail(line, "division by zero")
            return _scale(args[0], 1.0 / args[1][1])
        self.fail(line, f"unsupported operator {op!r} in an expression")

    def row(self, lin, strict: bool) -> Row:
        coeffs, const = lin
        return Row(tuple(sorted(coeffs.items())), float(const), strict)

    def formula(self, expr) -> list[list[Row]]:
        """Disjunctive normal form: a list of conjunctions, each a list of rows."""
        if isinstance(expr, _Atom) and not expr.quoted and expr.text in ("true", "false"):
            return [[]] if expr.text == "true" else []
        if not isinstance(expr, _List) or not expr.items or not isinstance(expr.items[0], _Atom):
            self.fail(getattr(expr, "line", None), "expected a formula (OP ARGS...)")
        line, op, args = expr.line, expr.items[0].text, expr.items[1:]
        if op == "and":
            result = [[]]
            for a in args:
                result = _conjoin(result, self.formula(a), lambda m: self.fail(line, m))
            return result
        if op == "or":
            result = []
            for a in args:
                result += self.formula(a)
                if len(result) > MAX_CASES:
                    self.fail(line, f"the disjunctive normal form has more than {MAX_CASES} cases")
            return result
        if op in ("<=", ">=", "<", ">", "==", "=", "!="):
            terms = self.terms(args)
            if len(terms) < 2 or (op == "!=" and len(terms) != 2):
                self.fail(line, f"({op} ...) needs {'two' if op == '!=' else 'two or more'} arguments")
            rows = []
            for a, b in zip(terms, terms[1:]):
                diff = _add([a, _scale(b, -1.0)])  # a - b
                if op == "!=":
                    return [[self.row(diff, True)], [self.row(_scale(diff, -1.0), True)]]
                if op in ("<=", "<", "==", "="):
                    rows.append(self.row(diff, op == "<"))
                if op in (">=", ">", "==", "="):
                    rows.append(self.row(_scale(diff, -1.0), op == ">"))
            return [rows]
        if op == "not":
            self.fail(line, "'not' is not part of VNN-LIB (write the negated comparison instead)")
        self.fail(line, f"unsupported operator {op!r} in a formula")

    # -- the query ---------------------------------------------------------------------------
    def parse(self) -> Query:
        version = None
        asserts = []
        for form in self.r.forms():
            if not isinstance(form, _List) or not form.items or not isinstance(form.items[0], _Atom):
                self.fail(getattr(form, "line", None), "expected a command such as (declare-network ...) or "
                                                       "(assert ...)")
            cmd = form.items[0].text
            if cmd == "vnnlib-version":
                if version is not None or self.networks or asserts:
                    self.fail(form.line, "(vnnlib-version ...) must come first, once")
                tok = form.items[1] if len(form.items) == 2 else None
                m = _VERSION.match(tok.text) if isinstance(tok, _Atom) else None
                if m is None:
                    self.fail(form.line, "expected (vnnlib-version <2.0>)")
                version = f"{int(m.group(1))}.{int(m.group(2))}"
                if version != "2.0":
                    self.fail(form.line, f"VNN-LIB version {version} is not supported (1.0 and 2.0 are)")
            elif cmd == "declare-network":
                if asserts:
                    self.fail(form.line, "networks must be declared before the assertions")
                self.networks.append(self.declare_network(form))
            elif cmd == "assert":
                if len(form.items) != 2:
                    self.fail(form.line, "expected (assert FORMULA)")
                asserts.append(form.items[1])
            elif cmd in ("declare-const", "declare-fun"):
                self.fail(form.line, f"({cmd} ...) is VNN-LIB 1.0 syntax; a 2.0 query declares networks")
            else:
                self.fail(form.line, f"unsupported command {cmd!r}")
        if not self.networks:
            self.fail(None, "no (declare-network ...)")
        if not asserts:
            self.fail(None, "no assertions")
        nonlinear = ""
        forms = []
        for a in asserts:  # every assertion is checked (names, indices), even after a non-linear one
            try:
                forms.append(self.formula(a))
            except _NonLinear as exc:
                nonlinear = nonlinear or str(exc)
        cases: list[list[Row]] = [[]]
        if not nonlinear:
            for f in forms:
                cases = _conjoin(cases, f, lambda m: self.fail(None, m))
        return Query(version or "2.0", tuple(self.networks), dict(self.variables),
                     tuple(tuple(c) for c in cases) if not nonlinear else (), nonlinear, self.source)


def _conjoin(left: list[list], right: list[list], fail) -> list[list]:
    """DNF of (OR left) AND (OR right).  The common case of one conjunction on the right extends the
    left ones in place (every conjunction list here is built fresh, none is shared between cases),
    so that thousands of bound assertions cost linear time."""
    if len(right) == 1:
        for conj in left:
            conj.extend(right[0])
        return left
    if len(left) * len(right) > MAX_CASES:
        fail(f"the disjunctive normal form has more than {MAX_CASES} cases")
    return [a + b for a, b in itertools.product(left, right)]


def parse_query_text(text: str, source: str = "<vnnlib>") -> Query:
    return _QueryParser(text, source).parse()


def parse_query(path) -> Query:
    """Parse a VNN-LIB 2.0 file (plain or ``.gz``); every problem is a one-line HamverifyError."""
    text, source = _read_text(path)
    return parse_query_text(text, source)


# ------------------------------------------------------------------------------------- the ONNX side

class Undecidable(HamverifyError):
    """The query is well-formed but outside what this verifier decides (an op the importer cannot
    represent, a non-piecewise-linear network, ...): the answer is ``unknown``, not an error."""


def _pb2():
    from . import onnx_proto
    return onnx_proto.pb2()


def _graph_inputs(graph) -> list:
    inits = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _value_dims(vi) -> list[int | None] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]


def _feed_dims(vi, declared: Variable, label: str) -> tuple[int, ...]:
    """The shape to feed an ONNX input with (a symbolic or leading batch dimension fixed to 1)."""
    dims = _value_dims(vi)
    if dims is None:
        return declared.shape or (1,)
    if dims and dims[0] is None and len(dims) >= 2:
        dims = [1] + dims[1:]
    if any(d is None for d in dims):
        raise HamverifyError(f"{label}: input {vi.name!r} has symbolic dimensions {dims}")
    if int(np.prod(dims, dtype=np.int64)) != declared.size:
        raise HamverifyError(f"{label}: input {vi.name!r} has shape {dims} ({int(np.prod(dims))} elements); "
                             f"{declared.name} is declared {list(declared.shape)} ({declared.size})")
    return tuple(int(d) for d in dims)


def _type_mismatch(var: Variable, vi, label: str) -> str | None:
    elem = vi.type.tensor_type.elem_type
    onnx_type = _ONNX_TYPES.get(elem, f"type {elem}")
    if var.dtype != "real" and elem and onnx_type != var.dtype:
        return f"{label}: {var.name} is declared {var.dtype} but the ONNX {var.kind} {vi.name!r} is {onnx_type}"
    return None


def _check_type(var: Variable, vi, label: str):
    why = _type_mismatch(var, vi, label)
    if why:
        raise HamverifyError(f"{why} (declare it Real to allow any type)")


def _cut_graph(proto, inputs: list[tuple[str, tuple[int, ...]]], target: str):
    """A copy of ``proto`` with one flat input (when the graph has several) and one output, the
    tensor ``target``; nodes that ``target`` does not depend on are dropped."""
    pb = _pb2()
    model = pb.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    needed, keep = {target}, []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    head = []
    if len(inputs) > 1:
        flat = "__hamverify_x"
        elem = _graph_inputs(g)[0].type.tensor_type.elem_type or 1
        off = 0
        for k, (name, dims) in enumerate(inputs):
            n = int(np.prod(dims, dtype=np.int64))
            idx = pb.TensorProto(name=f"__hamverify_idx{k}", data_type=7, dims=[n],
                                 raw_data=np.arange(off, off + n, dtype="<i8").tobytes())
            shape = pb.TensorProto(name=f"__hamverify_shape{k}", data_type=7, dims=[len(dims)],
                                   raw_data=np.asarray(dims, dtype="<i8").tobytes())
            g.initializer.extend([idx, shape])
            head.append(pb.NodeProto(op_type="Gather", input=[flat, idx.name], output=[f"__hamverify_part{k}"],
                                     name=f"__hamverify_gather{k}"))
            head.append(pb.NodeProto(op_type="Reshape", input=[f"__hamverify_part{k}", shape.name], output=[name],
                                     name=f"__hamverify_reshape{k}"))
            off += n
        names = {name for name, _ in inputs}
        kept = [vi for vi in g.input if vi.name not in names]
        del g.input[:]
        vi = pb.ValueInfoProto(name=flat)
        vi.type.tensor_type.elem_type = elem
        vi.type.tensor_type.shape.dim.add().dim_value = off
        g.input.extend([vi] + kept)
    out = pb.ValueInfoProto(name="__hamverify_out")
    del g.node[:]
    g.node.extend(head + keep + [pb.NodeProto(op_type="Identity", input=[target], output=[out.name],
                                              name="__hamverify_identity")])
    del g.output[:]
    g.output.append(out)
    return model


@dataclass
class _Model:
    """One ONNX model (a network declaration without ``equal-to``) and its declared interface."""

    name: str
    path: str
    proto: object
    inputs: list  # graph input ValueInfos, in declared order
    feed: list  # (onnx name, feed dims, numpy dtype), in declared order
    outputs: dict  # declared output name (of the root declaration, by position) -> onnx tensor name
    output_infos: list = None  # graph output ValueInfos, in declared order
    session: object = None
    ort_proto: object = None


@dataclass
class _Component:
    """One block of ``z``: a network tensor (``var`` of network instance ``decl``) or the input copy."""

    net: object  # hamverify.network.Network
    cols: np.ndarray  # its input columns in the combined input
    var: Variable | None = None
    decl: str | None = None
    tensor: str | None = None  # ONNX tensor name (network components)
    keys: tuple = ()  # the input copy: ((name, flat), ...)


def _aliases(cases, xpos: dict, kind) -> set[tuple[int, int]]:
    """Pairs of input positions (i, j) whose equality ``x_i == x_j`` (both rows ``a (x_i - x_j) <= 0``
    and its converse) is part of every case."""
    common = None
    for case in cases:
        le = set()
        for row in case:
            if row.strict or row.const != 0 or len(row.coeffs) != 2:
                continue
            (k1, a1), (k2, a2) = row.coeffs
            if kind(k1) != "input" or kind(k2) != "input" or a1 != -a2:
                continue
            i, j = xpos[k1], xpos[k2]
            le.add((i, j) if a1 > 0 else (j, i))  # x_i <= x_j
        eq = {(min(i, j), max(i, j)) for i, j in le if (j, i) in le}
        common = eq if common is None else common & eq
    return common or set()


def _propagate(lo: np.ndarray, hi: np.ndarray, rows: list, rounds: int = 20) -> None:
    """Tighten the box ``[lo, hi]`` in place by interval propagation through input rows
    ``sum a_i x_i + c <= 0`` (each ``[(i, a_i), ..., c]``): an input bounded only through others
    (e.g. ``X2 == X``) gets the bound they imply, loosened by ``SHIFT_MARGIN`` relative slack so
    that rounding never cuts off a feasible point (the rows themselves stay exact in ``C``)."""
    for _ in range(rounds):
        changed = False
        for row in rows:
            *terms, c = row
            mins = [a * (lo[i] if a > 0 else hi[i]) for i, a in terms]  # the least each term can be
            infinite = [k for k, m in enumerate(mins) if not np.isfinite(m)]
            finite_sum = sum(m for m in mins if np.isfinite(m))
            for k, (i, a) in enumerate(terms):
                if len(infinite) > 1 or (infinite and infinite[0] != k):
                    continue
                rest = finite_sum - (mins[k] if np.isfinite(mins[k]) else 0.0)
                bound = (-c - rest) / a
                slack = SHIFT_MARGIN * (1.0 + abs(bound))
                if a > 0 and _tighter(hi[i], bound + slack, -1.0):
                    hi[i], changed = bound + slack, True
                elif a < 0 and _tighter(lo[i], bound - slack, 1.0):
                    lo[i], changed = bound - slack, True
        if not changed:
            return


def _tighter(old: float, new: float, sign: float) -> bool:
    """``new`` improves on the bound ``old`` (sign +1: a lower bound, -1: an upper) by more than
    rounding noise (so that the propagation ends)."""
    if not np.isfinite(new):
        return False
    if not np.isfinite(old):
        return True
    return sign * (new - old) > 1e-9 * (1.0 + abs(old))


def _identity_net(n: int):
    from .network import Affine, Network
    return Network((Affine(sp.identity(n, format="csr"), np.zeros(n)),), (n,))


def parallel(parts: list[tuple[object, np.ndarray]], n_in: int, lo: np.ndarray, hi: np.ndarray):
    """One IR network computing every part side by side on the combined input (part k reads the
    input columns ``cols_k``); its output is the parts' outputs, concatenated.  A part with fewer
    affine maps than the deepest one has its output ``v`` carried through the remaining ReLU
    layers as ``relu(v - s) + s``, ``s`` below the interval lower bound of ``v`` on the box
    ``[lo, hi]``: stably active there, so exact for every input of the box."""
    from .bounds.interval import interval_bounds, interval_output_bounds
    from .network import Affine, Network
    if len(parts) == 1 and np.array_equal(parts[0][1], np.arange(n_in)):
        return parts[0][0]
    depth = max(len(net.affines) for net, _ in parts)
    shifts = []
    for net, cols in parts:
        if len(net.affines) < depth:
            out = interval_output_bounds(net, lo[cols], hi[cols], interval_bounds(net, lo[cols], hi[cols]))
            low = out.lower - SHIFT_MARGIN * (1.0 + np.abs(out.lower))
            if not np.all(np.isfinite(low)):
                raise Undecidable("a carried value has no finite lower bound on the box")
            shifts.append(np.minimum(low, 0.0))
        else:
            shifts.append(None)
    layers = []
    for k in range(depth):
        blocks, biases = [], []
        for (net, cols), s in zip(parts, shifts):
            L = len(net.affines)
            if k < L:
                aff = net.affines[k]
                W = sp.csr_matrix(aff.W)
                b = np.asarray(aff.b, dtype=np.float64).copy()
                if k == 0:
                    select = sp.csr_matrix((np.ones(len(cols)), (np.arange(len(cols)), cols)), shape=(len(cols), n_in))
                    W = (W @ select).tocsr()
                if k == L - 1 and s is not None:
                    b = b - s
            else:
                m = net.num_classes
                W = sp.identity(m, format="csr")
                b = s.copy() if k == depth - 1 else np.zeros(m)
            blocks.append(W)
            biases.append(b)
        W = sp.vstack(blocks, format="csr") if k == 0 else sp.block_diag(blocks, format="csr")
        W.eliminate_zeros()
        dense = W.nnz > 0.3 * W.shape[0] * W.shape[1]
        layers.append(Affine(W.toarray() if dense else W, np.concatenate(biases)))
    return Network(tuple(layers), (n_in,))


class Instance:
    """A query compiled against its ONNX models: the combined IR network ``net``, the spec over it
    (:class:`~hamverify.vnnlib.VnnlibSpec`, inputs = every network's declared inputs, outputs =
    ``z``) and what is needed to validate and report a counterexample."""

    def __init__(self, query: Query, network_files: dict):
        from .onnx_io import load_onnx_proto
        self.query = query
        src = query.source
        need = query.model_networks()
        given = dict(network_files)
        missing = [n for n in need if n not in given]
        extra = [n for n in given if n not in need]
        if missing:
            raise HamverifyError(f"{src}: no --network {missing[0]}=FILE.onnx (the query declares "
                                 f"{', '.join(need)})")
        if extra:
            equal = [n.name for n in query.networks if n.equal_to is not None]
            why = f"{extra[0]} is equal-to another network" if extra[0] in equal else f"no network {extra[0]}"
            raise HamverifyError(f"{src}: --network {extra[0]}: {why} (the query needs {', '.join(need)})")
        # -- the models and their interfaces --
        self.models: dict[str, _Model] = {}
        self.type_relaxed: list[str] = []  # isomorphic-to declarations whose types differ from the model's
        for name in need:
            decl = query.network(name)
            proto, label = load_onnx_proto(given[name])
            g = proto.graph
            ins, outs = _graph_inputs(g), list(g.output)
            self.models[name] = _Model(name, label, proto, [], [], {})
            model = self.models[name]
            for kind, declared, actual in (("input", decl.inputs, ins), ("output", decl.outputs, outs)):
                named = [v.onnx_name for v in declared if v.onnx_name is not None]
                if named and len(named) != len(declared):
                    raise HamverifyError(f"{src}: network {name}: give an ONNX name to every {kind} or to none")
                if named:
                    by_name = {vi.name: vi for vi in actual}
                    absent = [n for n in named if n not in by_name]
                    if absent:
                        raise HamverifyError(f"{label}: no graph {kind} named {absent[0]!r} (it has "
                                             f"{', '.join(repr(vi.name) for vi in actual)})")
                    chosen = [by_name[n] for n in named]
                elif len(actual) != len(declared):
                    raise HamverifyError(f"{src}: network {name} declares {len(declared)} {kind}(s); {label} has "
                                         f"{len(actual)}")
                else:
                    chosen = actual
                for var, vi in zip(declared, chosen):
                    if decl.isomorphic_to is None:
                        _check_type(var, vi, label)
                    elif _type_mismatch(var, vi, label):
                        # An isomorphic-to network may declare other element types than its model (the
                        # standard: same structure; the suite's network_isomorphic01). The analysis is over
                        # the reals, so unsat holds for any type; a sat witness could only be confirmed in
                        # the model's types, not the declared ones: it becomes unknown (decide()).
                        self.type_relaxed.append(_type_mismatch(var, vi, label))
                if kind == "input":
                    model.inputs = chosen
                    model.feed = [(vi.name, _feed_dims(vi, var, label), _numpy_type(vi, label))
                                  for var, vi in zip(declared, chosen)]
                else:
                    model.output_infos = chosen
                    model.outputs = {var.name: vi.name for var, vi in zip(declared, chosen)}
        for decl in query.networks:  # an equal-to network's declared types against its model's
            if decl.equal_to is not None:
                model = self.models[query.root(decl.name)]
                for var, vi in zip(decl.inputs + decl.outputs, model.inputs + model.output_infos):
                    _check_type(var, vi, model.path)
        # -- every network's inputs in declaration order (x); inputs equal in every case share a column
        # of the solver's input u (the equivalence of two networks: X2[i] == X[i]) --
        self.xpos: dict[tuple[str, int], int] = {}
        self.full_cols: dict[str, np.ndarray] = {}  # network -> its positions in x
        off = 0
        for decl in query.networks:
            start = off
            for var in decl.inputs:
                for f in range(var.size):
                    self.xpos[(var.name, f)] = off + f
                off += var.size
            self.full_cols[decl.name] = np.arange(start, off)
        self.n_x = off
        variables = query.variables

        def kind(key) -> str:
            return variables[key[0]].kind

        parent = list(range(self.n_x))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, j in sorted(_aliases(query.cases, self.xpos, kind)):
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
        reps = sorted({find(i) for i in range(self.n_x)})
        column = {r: k for k, r in enumerate(reps)}
        self.ucol = np.array([column[find(i)] for i in range(self.n_x)], dtype=np.int64)  # x position -> u
        self.first = np.array(reps, dtype=np.int64)  # u column -> an x position holding it
        self.n_in = len(reps)
        self.input_cols = {name: self.ucol[cols] for name, cols in self.full_cols.items()}

        def split(row: Row):
            """(u column -> coefficient, other variable element -> coefficient), aliases merged."""
            ucoef: dict[int, float] = {}
            other = {}
            for key, a in row.coeffs:
                if kind(key) == "input":
                    c = int(self.ucol[self.xpos[key]])
                    ucoef[c] = ucoef.get(c, 0.0) + a
                else:
                    other[key] = a
            return {c: a for c, a in ucoef.items() if a != 0.0}, other

        # -- per case: the box (bounds of single inputs) and the other rows; which tensors and input
        # columns those rows use --
        per_case = []
        used_vars: set[str] = set()
        copied: set[int] = set()
        for case in query.cases:
            lo, hi = np.full(self.n_in, -np.inf), np.full(self.n_in, np.inf)
            rows, false = [], False
            for row in case:
                ucoef, other = split(row)
                if not ucoef and not other:  # a constant comparison (or an alias row, now 0 <= 0)
                    false = false or row.const > 0 or (row.strict and row.const >= 0)
                    continue
                if not other and len(ucoef) == 1:
                    ((i, a),) = ucoef.items()
                    bound = -row.const / a
                    if a > 0:
                        hi[i] = min(hi[i], bound)
                    else:
                        lo[i] = max(lo[i], bound)
                    continue
                rows.append((ucoef, other, row.const))
            if false:
                continue
            for ucoef, other, _ in rows:
                copied.update(ucoef)
                used_vars.update(k[0] for k in other)
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                _propagate(lo, hi, [[*ucoef.items(), const] for ucoef, other, const in rows if not other])
            per_case.append((case, rows, lo, hi))
        self.unbounded = ""  # an input without a bound (then only sat answers count)
        for _, _, lo, hi in per_case:
            free = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
            if free.size and not self.unbounded:
                key = next(k for k, i in self.xpos.items() if i == self.first[free[0]])
                self.unbounded = f"input {variables[key[0]].label(key[1])} is unbounded"
            # the search box for such inputs: a counterexample found there is one, unsat is not a proof
            only_lo, only_hi = np.isfinite(lo) & ~np.isfinite(hi), ~np.isfinite(lo) & np.isfinite(hi)
            hi[only_lo], lo[only_hi] = lo[only_lo] + 2 * UNBOUNDED_BOX, hi[only_hi] - 2 * UNBOUNDED_BOX
            neither = ~np.isfinite(lo) & ~np.isfinite(hi)
            lo[neither], hi[neither] = -UNBOUNDED_BOX, UNBOUNDED_BOX
        live = [t for t in per_case if not np.any(t[2] > t[3])]
        self.live_cases = [case for case, _, _, _ in live]
        if live:
            box_lo = np.min([lo for _, _, lo, _ in live], axis=0)
            box_hi = np.max([hi for _, _, _, hi in live], axis=0)
        else:
            box_lo = box_hi = np.zeros(self.n_in)
        # -- the components of z --
        self.components: list[_Component] = []
        cache: dict = {}
        for decl in query.networks:
            root = query.root(decl.name)
            model = self.models[root]
            root_decl = query.network(root)
            for var in decl.hidden + decl.outputs:
                if var.name not in used_vars:
                    continue
                if var.kind == "output":
                    tensor = model.outputs[root_decl.outputs[decl.outputs.index(var)].name]
                else:
                    tensor = var.onnx_name
                # the inputs' bounding box, for the comparisons it decides (then the import holds on
                # that box only: one per box)
                box = (box_lo[self.input_cols[decl.name]], box_hi[self.input_cols[decl.name]])
                key = (root, tensor, box[0].tobytes(), box[1].tobytes())
                if key not in cache:
                    cache[key] = self._import(model, tensor, var, box)
                net = cache[key]
                if net.num_classes != var.size:
                    raise HamverifyError(f"{model.path}: tensor {tensor!r} has {net.num_classes} elements; "
                                         f"{var.name} is declared {list(var.shape)} ({var.size})")
                self.components.append(_Component(net, self.input_cols[decl.name], var, decl.name, tensor))
        copy_cols = sorted(copied)
        if not self.components and not copy_cols and self.n_in:
            copy_cols = [0]  # no rows over the networks at all: z is one input copy
        if copy_cols:
            self.components.append(_Component(_identity_net(len(copy_cols)), np.array(copy_cols, dtype=np.int64),
                                              keys=tuple(("#u", c) for c in copy_cols)))
        self.zpos: dict[tuple[str, int], int] = {}
        off = 0
        for comp in self.components:
            keys = [(comp.var.name, f) for f in range(comp.var.size)] if comp.var is not None else comp.keys
            for f, k in enumerate(keys):
                self.zpos[k] = off + f
            off += comp.net.num_classes
        self.n_z = off
        self.net = parallel([(c.net, c.cols) for c in self.components], self.n_in, box_lo, box_hi)
        # -- the cases over z --
        cases = []
        for _, rows, lo, hi in live:
            C = np.zeros((len(rows), self.n_z))
            d = np.zeros(len(rows))
            for r, (ucoef, other, const) in enumerate(rows):
                for c, a in ucoef.items():
                    C[r, self.zpos[("#u", c)]] += a
                for key, a in other.items():
                    C[r, self.zpos[key]] += a
                d[r] = -const
            cases.append(Case(lo, hi, C, d))
        self.spec = VnnlibSpec(self.n_in, self.n_z, tuple(cases), src)

    def _import(self, model: _Model, tensor: str, var: Variable, box=None):
        from .onnx_io import NonLinearModel, import_onnx
        g = model.proto.graph
        produced = {o for node in g.node for o in node.output} | {vi.name for vi in model.inputs}
        if tensor not in produced:
            raise HamverifyError(f"{model.path}: no tensor named {tensor!r} for {var.name} (a hidden node names "
                                 f"a node output of the graph)")
        single = (len(model.inputs) == 1 and len(g.output) == 1 and g.output[0].name == tensor)
        proto = model.proto if single else _cut_graph(model.proto, [(n, d) for n, d, _ in model.feed], tensor)
        try:
            return import_onnx(proto, label=model.path if single else f"{model.path} (tensor {tensor!r})",
                               box=box).net
        except NonLinearModel as exc:
            raise Undecidable(str(exc)) from None
        except HamverifyError as exc:  # the importer cannot represent this graph: not a user error
            raise Undecidable(str(exc)) from None

    # -- onnxruntime ---------------------------------------------------------------------------
    def _session(self, model: _Model, names: list[str]):
        from .onnx_io import onnx_session
        if model.session is None:
            pb = _pb2()
            proto = pb.ModelProto()
            proto.CopyFrom(model.proto)
            have = {o.name for o in proto.graph.output}
            wanted = [v.onnx_name for d in self.query.networks if self.query.root(d.name) == model.name
                      for v in d.hidden]
            for name in dict.fromkeys(wanted):
                if name not in have:
                    proto.graph.output.append(pb.ValueInfoProto(name=name))
            model.ort_proto = proto
            model.session = onnx_session(proto)
        return model.session

    def expand(self, u: np.ndarray) -> np.ndarray:
        """The solver's input ``u`` (one column per class of equal inputs) -> every declared input ``x``."""
        return np.asarray(u, dtype=np.float64).ravel()[self.ucol]

    def reduce(self, x: np.ndarray) -> np.ndarray:
        """Every declared input ``x`` -> the solver's input ``u`` (aliased inputs read once)."""
        return np.asarray(x, dtype=np.float64).ravel()[self.first]

    def run_networks(self, x: np.ndarray) -> dict:
        """onnxruntime's value of every declared variable at the declared inputs ``x`` (all networks',
        concatenated): name -> array of the declared shape (inputs as given)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        values = {}
        for decl in self.query.networks:
            root = self.query.root(decl.name)
            model = self.models[root]
            root_decl = self.query.network(root)
            feeds, off = {}, int(self.full_cols[decl.name][0])
            for var, (name, dims, dtype) in zip(decl.inputs, model.feed):
                part = x[off:off + var.size]
                values[var.name] = part.reshape(var.shape)
                feeds[name] = part.astype(dtype).reshape(dims)
                off += var.size
            names = [v.onnx_name for v in decl.hidden]
            names += [model.outputs[root_decl.outputs[i].name] for i in range(len(decl.outputs))]
            session = self._session(model, names)
            try:
                outs = session.run(names, feeds)
            except Exception as exc:
                raise HamverifyError(f"{model.path}: onnxruntime cannot run the network "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
            for var, out in zip(decl.hidden + decl.outputs, outs):
                out = np.asarray(out)
                if out.size != var.size:
                    raise HamverifyError(f"{model.path}: {var.name} is declared {list(var.shape)} but onnxruntime "
                                         f"gives shape {list(out.shape)}")
                values[var.name] = out.reshape(var.shape)
        return values

    def z_of(self, values: dict, u: np.ndarray) -> np.ndarray:
        """``z`` assembled from per-variable values (the input copy from the solver's input ``u``)."""
        parts = []
        for comp in self.components:
            if comp.var is not None:
                parts.append(np.asarray(values[comp.var.name], dtype=np.float64).ravel())
            else:
                parts.append(np.asarray(u, dtype=np.float64).ravel()[comp.cols])
        return np.concatenate(parts) if parts else np.zeros(0)

    def holds(self, x: np.ndarray, z: np.ndarray) -> bool:
        """Every row of some case holds, strictness included, for the declared inputs ``x`` and ``z``."""
        x = np.asarray(x, dtype=np.float64).ravel()
        values = {k: x[i] for k, i in self.xpos.items()}  # inputs: their own values, not the copies
        for k, i in self.zpos.items():
            values.setdefault(k, z[i])
        return any(all(row.holds(values) for row in case) for case in self.live_cases)

    # -- deciding ----------------------------------------------------------------------------
    def checker(self):
        from .vnncomp import Checker

        instance = self

        class QueryChecker(Checker):
            def ort(self, u):
                return instance.z_of(instance.run_networks(instance.expand(u)), u)

            def validate(self, x, lo, hi, C, d):
                found = super().validate(x, lo, hi, C, d)
                if found is None:
                    return None
                p, _ = found
                return found if instance.holds(instance.expand(p), self.net.forward(p)[0]) else None

        imported = types.SimpleNamespace(net=self.net, source=self.query.source, input_dims=(self.n_in,))
        return QueryChecker(imported, None)

    def decide(self, deadline: float, **kw):
        """:func:`hamverify.vnncomp.decide` on the compiled spec (an InstanceResult).  With an
        unbounded input the box is only a search region: ``unsat`` there becomes ``unknown``."""
        from .vnncomp import decide
        checker = self.checker()
        res = decide(checker.imported, None, self.spec, deadline, checker=checker, **kw)
        if res.result == "sat" and self.type_relaxed:
            res.result, res.decided_by, res.x, res.y = "unknown", "", None, None
            res.reason = (f"a counterexample in the models' types, not confirmed in the declared ones "
                          f"({self.type_relaxed[0]})")
        if res.result == "unsat" and self.unbounded:
            res.result, res.decided_by = "unknown", ""
            res.reason = (f"{self.unbounded}: no counterexample with such inputs in [-{UNBOUNDED_BOX:g}, "
                          f"{UNBOUNDED_BOX:g}], which proves nothing beyond it")
        return res

    def assignment(self, u: np.ndarray) -> list[tuple[Variable, np.ndarray]]:
        """Every declared variable in declaration order with its value at the solver's input ``u``
        (a counterexample's ``x``; hidden nodes and outputs as onnxruntime computes them)."""
        values = self.run_networks(self.expand(u))
        return [(v, values[v.name]) for v in self.query.variables.values()]


def _numpy_type(vi, label: str):
    elem = vi.type.tensor_type.elem_type
    types_ = {1: np.float32, 11: np.float64, 10: np.float16}
    if elem not in types_:
        raise Undecidable(f"{label}: input {vi.name!r} is {_ONNX_TYPES.get(elem, elem)} (float inputs only)")
    return types_[elem]


def build_instance(query: Query, network_files: dict) -> Instance:
    """Compile a linear query against ``{network name: ONNX path}``; HamverifyError for inputs that do
    not fit (missing or extra networks, shapes, types), :class:`Undecidable` for a model outside
    the piecewise-linear fragment."""
    if query.nonlinear:
        raise Undecidable(query.nonlinear)
    return Instance(query, network_files)


def solve_query(query: Query, network_files: dict, timeout: float, t0: float | None = None, **kw):
    """(InstanceResult, the instance) for a parsed query; ``unknown`` results carry their reason."""
    from .vnncomp import InstanceResult
    t0 = time.monotonic() if t0 is None else t0
    try:
        instance = build_instance(query, network_files)
    except Undecidable as exc:
        return InstanceResult("unknown", time.monotonic() - t0, reason=str(exc)), None
    return instance.decide(t0 + float(timeout), t0=t0, **kw), instance


__all__ = ["ELEMENT_TYPES", "Instance", "NetworkDecl", "Query", "Row", "Undecidable", "VERSIONS", "Variable",
           "build_instance", "parallel", "parse_query", "parse_query_text", "solve_query", "vnnlib_version"]
