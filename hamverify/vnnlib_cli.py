"""``hamverify-vnnlib``: the solver command line of the VNN-LIB 2.0 standard (its chapter "Solver
Command-line Interface"), beside ``hamverify vnnlib`` (VNN-COMP's instance batches).

::

    hamverify-vnnlib verify SPEC --network NAME=NET.onnx [--network ...] [--timeout T]
                                 [--serialise-assignments DIR]
    hamverify-vnnlib supports --onnx-operators | --onnx-opset-versions | --vnnlib-versions
                              | --serialise-assignments | ...   (one capability)
    hamverify-vnnlib --name | --version

``verify`` prints the verdict first on stdout, on a line of its own: ``sat``, ``unsat``,
``unknown`` or ``timed-out`` (the standard's four; the reason of an ``unknown`` goes to stderr).
For ``sat`` the counterexample follows in the standard's command-line assignment format: per
declared variable, in declaration order, a line ``NAME TYPE [d0,d1]`` and then its elements in
row-major order, one per line (inputs as checked, hidden nodes and outputs as onnxruntime computes
them there); with ``--serialise-assignments DIR`` each variable is written to ``DIR/NAME.pb``
instead (a serialised ONNX TensorProto).  A VNN-LIB 1.0 file (no ``vnnlib-version`` /
``declare-network``) is read with the 1.0 parser, its one ``--network`` of any name, and a ``sat``
prints VNN-COMP's ``((X_0 v) ...)`` assignment.

The whole command keeps to ``--timeout`` (default 300 s) counted from its start: the cascade gets
``TIMEOUT_SHARE`` of it less ``TIMEOUT_RESERVE`` seconds (start-up and printing), and a watchdog
prints ``timed-out`` and exits should a solver call overrun.  Bad input (a missing file, a syntax
error, a network not given or not declared, a declared shape or element type the model does not
have) is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import threading
import time

from . import HamverifyError, __version__
from .vnnlib2 import VERSIONS as VNNLIB_VERSIONS  # "1.0", "2.0"

PROG = "hamverify-vnnlib"
NAME = "hamverify"
TIMEOUT_SHARE = 0.9
TIMEOUT_RESERVE = 1.0  # seconds kept back from the cascade for start-up and printing
WATCHDOG_SLACK = 0.3  # seconds before --timeout at which the watchdog answers timed-out
OPSET_VERSIONS = (9, 21)
# What the capability queries answer besides the operators (see the standard's theories).
THEORIES = {
    "hidden-node-theories": ["NH", "H"],
    "multiple-input-output-theories": ["SIO", "MIO"],
    "multiple-network-theories": ["SNET", "MNET", "MENET", "MINET"],
    "multiple-node-comparison-theories": ["SNC", "MNC"],
    "arithmetic-complexity-theories": ["BND", "OUTC", "LIN"],  # not POLY: products answer unknown
    # real arithmetic (float32 counterexamples are confirmed by onnxruntime; unsat is over the reals)
    "onnx-element-types": ["real"],
}
BOOLEANS = {
    "serialise-assignments": "true",
    "unsat-proofs": "false",
    "optimised-disjunctive-reasoning": "false",  # disjunctive normal form (one MILP per input box)
}


def onnx_operators() -> list[str]:
    """The ONNX operators a network may use: the importer's data-path ops, plus Constant and
    ConstantOfShape (their values never depend on the input: folded).  Any op whose inputs are all
    constants is folded too, but is not listed."""
    from .onnx_io import SUPPORTED_OPS
    return sorted(set(SUPPORTED_OPS) | {"Constant", "ConstantOfShape"})


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        raise _Usage(message)


class _Usage(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="VNN-LIB 2.0 solver interface of hamverify (exact ReLU verification).")
    p.add_argument("--name", action="store_true", help="print the solver's name")
    p.add_argument("--version", action="store_true", help="print the solver's version")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    v = sub.add_parser("verify", help="decide a VNN-LIB query")
    v.add_argument("spec", help="the .vnnlib query (2.0, or 1.0; plain or .gz)")
    v.add_argument("--network", action="append", default=[], metavar="NAME=FILE",
                   help="the ONNX model of a declared network (once per network without equal-to)")
    v.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole command (default 300)")
    v.add_argument("--serialise-assignments", metavar="DIR", default=None,
                   help="write a sat assignment as DIR/NAME.pb (ONNX TensorProto) instead of printing it")
    v.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    s = sub.add_parser("supports", help="report a capability")
    g = s.add_mutually_exclusive_group(required=True)
    for flag in ["onnx-operators", "onnx-opset-versions", "vnnlib-versions", *THEORIES, *BOOLEANS]:
        g.add_argument(f"--{flag}", dest="capability", action="store_const", const=flag)
    return p


def supports(capability: str) -> str:
    if capability == "onnx-operators":
        return "\n".join(onnx_operators())
    if capability == "onnx-opset-versions":
        return "\n".join(str(v) for v in OPSET_VERSIONS)
    if capability == "vnnlib-versions":
        return "\n".join(VNNLIB_VERSIONS)
    if capability in THEORIES:
        return "\n".join(THEORIES[capability])
    return BOOLEANS[capability]


def _networks(options: list[str]) -> dict[str, str]:
    out = {}
    for opt in options:
        name, sep, path = opt.partition("=")
        if not sep or not name or not path:
            raise HamverifyError(f"--network {opt!r}: expected NAME=FILE.onnx")
        if name in out:
            raise HamverifyError(f"--network {name} is given twice")
        out[name] = path
    return out


def _number(v, dtype: str) -> str:
    import numpy as np
    if dtype.startswith(("int", "uint")):
        return str(int(v))
    if dtype == "bool":
        return "true" if bool(v) else "false"
    return repr(float(np.float64(v)))


def assignment_text(assignment) -> str:
    """The standard's command-line assignment format."""
    lines = []
    for var, value in assignment:
        lines.append(f"{var.name} {'Real' if var.dtype == 'real' else var.dtype} [{','.join(map(str, var.shape))}]")
        lines += [_number(v, var.dtype) for v in value.ravel()]
    return "\n".join(lines)


def serialise(assignment, folder) -> None:
    """``folder/NAME.pb`` per variable: a serialised ONNX TensorProto of the declared type and shape."""
    import numpy as np
    from onnx import numpy_helper
    folder = pathlib.Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for var, value in assignment:
            dtype = {"real": np.float64, "bool": np.bool_}.get(var.dtype, var.dtype)
            try:
                arr = np.asarray(value).astype(dtype).reshape(var.shape)
            except TypeError:
                arr = np.asarray(value, dtype=np.float64).reshape(var.shape)
            (folder / f"{var.name}.pb").write_bytes(numpy_helper.from_array(arr, var.name).SerializeToString())
    except OSError as exc:
        raise HamverifyError(f"--serialise-assignments {folder}: {exc.strerror or exc}") from None


class _Output:
    """Prints the verdict once: either the command or the watchdog, whichever is first.  The
    watchdog ends the process (``os._exit``), so it runs only in the console script, never when
    :func:`main` is called in-process (``hard_exit`` False)."""

    def __init__(self, hard_exit: bool):
        self.lock = threading.Lock()
        self.done = False
        self.hard_exit = hard_exit

    def emit(self, text: str) -> bool:
        with self.lock:
            if self.done:
                return False
            self.done = True
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
            return True

    def watchdog(self, at: float):
        def fire():
            if self.emit("timed-out"):
                sys.stderr.write(f"{PROG}: the time limit ran out\n")
                sys.stderr.flush()
                os._exit(0)
        timer = threading.Timer(max(at - time.monotonic(), 0.0), fire)
        timer.daemon = True
        if self.hard_exit:
            timer.start()
        return timer


def verify(args, t0: float, out: _Output) -> int:
    if not args.timeout > 0:
        raise HamverifyError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    networks = _networks(args.network)
    timer = out.watchdog(t0 + args.timeout - WATCHDOG_SLACK)
    try:
        return _verify(args, networks, t0, out)
    finally:
        timer.cancel()


def _verify(args, networks: dict, t0: float, out: _Output) -> int:
    from .vnnlib import _read_text, parse_vnnlib_text
    from .vnnlib2 import parse_query_text, solve_query, vnnlib_version
    budget = max(TIMEOUT_SHARE * args.timeout - TIMEOUT_RESERVE, min(0.5, args.timeout / 2))
    text, source = _read_text(args.spec)
    if vnnlib_version(text) == "1.0":
        spec = parse_vnnlib_text(text, source)
        if len(networks) != 1:
            raise HamverifyError(f"{source}: a VNN-LIB 1.0 query takes exactly one --network, got {len(networks)}")
        res = _solve_v1(next(iter(networks.values())), spec, t0, budget, args.seed)
        instance = None
    else:
        query = parse_query_text(text, source)
        res, instance = solve_query(query, networks, budget, t0=t0, seed=args.seed)
    if res.result == "sat":
        if instance is None:
            body = res.vnncomp_text()
        else:
            assignment = instance.assignment(res.x)
            if args.serialise_assignments:
                serialise(assignment, args.serialise_assignments)
                body = "sat"
            else:
                body = "sat\n" + assignment_text(assignment)
        out.emit(body)
        return 0
    verdict = {"timeout": "timed-out"}.get(res.result, res.result)
    if out.emit(verdict) and res.reason:
        sys.stderr.write(f"{PROG}: {verdict}: {' '.join(res.reason.split())}\n")
    return 0


def _solve_v1(onnx_path, spec, t0: float, budget: float, seed: int):
    import numpy as np

    from .onnx_io import NonLinearModel, import_onnx, load_onnx_proto
    from .vnncomp import InstanceResult, decide
    proto, label = load_onnx_proto(onnx_path)
    # the cases' bounding box: comparisons in the graph that it decides become constants
    box = ((np.min([c.lo for c in spec.cases], axis=0), np.max([c.hi for c in spec.cases], axis=0))
           if spec.cases else None)
    try:
        imported = import_onnx(proto, label=label, box=box)
    except NonLinearModel as exc:
        return InstanceResult("unknown", time.monotonic() - t0, reason=str(exc))
    except HamverifyError as exc:
        return InstanceResult("unknown", time.monotonic() - t0, reason=str(exc))
    return decide(imported, proto, spec, t0 + budget, t0=t0, seed=seed)


def process_start() -> float:
    """``time.monotonic()`` at the start of this process (Linux ``/proc``; else now): the time limit
    counts the interpreter's start-up too, as a caller timing the whole command sees it."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        elapsed = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - min(max(elapsed, 0.0), 10.0)


def main(argv=None) -> int:
    """The command line; ``argv`` None: the console script (``sys.argv``, the time limit counted from
    the process start, the watchdog armed)."""
    t0 = process_start() if argv is None else time.monotonic()
    out = _Output(hard_exit=argv is None)
    try:
        args = _parser().parse_args(argv)
        if args.name:
            print(NAME)
            return 0
        if args.version:
            print(__version__)
            return 0
        if args.command == "supports":
            print(supports(args.capability))
            return 0
        if args.command == "verify":
            return verify(args, t0, out)
        raise _Usage("expected a command: verify or supports (see --help)")
    except _Usage as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    except HamverifyError as exc:
        sys.stderr.write(f"{PROG}: error: {' '.join(str(exc).split())}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except MemoryError:
        sys.stderr.write(f"{PROG}: error: out of memory\n")
        return 1
    except Exception as exc:  # no traceback: one line naming the failure
        text = str(exc).strip().splitlines()
        sys.stderr.write(f"{PROG}: internal error: {type(exc).__name__}" + (f": {text[0][:200]}" if text else "")
                         + "\n")
        return 1


def entry():  # pragma: no cover - the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
