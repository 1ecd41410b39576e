"""ONNX in and out (issue 7): export a checkpoint, import a ReLU network into the IR, and rebuild a
torch module from an IR so that the per-input pipeline (PGD, float64 validation) runs on it.

Export writes the model's own graph with ``onnx.helper`` (Normalize -> Sub/Div, Conv2d -> Conv,
BatchNorm2d -> BatchNormalization, Flatten, Linear -> Gemm(transB=1), ReLU -> Relu), opset 13,
IR version 8, input ``input`` of shape ``[N, C, H, W]`` in [0, 1] with a dynamic batch ``N``.
It does not go through ``torch.onnx`` (whose exporter changes from one torch release to the next).

Import executes the graph symbolically, for one sample (a symbolic or leading 1 batch dimension is
fixed to 1): every tensor is either a constant (numpy) or an affine function ``M @ v + c`` of the
current *segment* variables ``v`` (the flattened network input, or the output of the last ReLU
layer), with ``M`` a CSR matrix.  ``Relu`` closes a segment into one ``Affine(M, c)`` of the IR; the
graph output closes the last.  Supported on the data path (``SUPPORTED_OPS``), every one exact:

* linear: Gemm, MatMul, Add, Sub, Mul and Div by constants (or Add/Sub of two tensors of the same
  segment), Neg, Conv (1-D on ``[1, C, L]`` as 2-D with H = 1, and 2-D; unrolled),
  BatchNormalization (folded), ReduceSum, ReduceMean;
* row selections (a tensor's rows picked, repeated or mixed with constant rows, by numpy index
  arrays): Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity, Dropout, Slice, Concat, Split,
  Gather (constant indices), Expand, Where (constant condition), Pad (constant mode); Shape;
* piecewise linear: Relu, MaxPool (1-D and 2-D, ``ceil_mode`` 0 and 1) and ReduceMax;
* comparisons (Greater, GreaterOrEqual, Less, LessOrEqual, Equal, Not; Cast to bool or to an
  integer type) of input-dependent tensors: step functions, so decided element by element where
  the tensor is constant or, given ``import_onnx(..., box=(lo, hi))``, where interval bounds over
  the box fix the outcome with a margin (``DECIDE_MARGIN``): the result is then a constant (the IR
  holds on that box only; ``OnnxModel.box_decided`` counts such elements).  Where on a comparison
  left open is rewritten exactly when its branches meet where the condition switches (``p - q =
  lam * (a - b)`` per element: ReLU, max, min, leaky ReLU written with Where) as ``q + lam *
  relu(a - b)``, one ReLU layer; any other use of an open comparison (a jump) raises
  :class:`NonLinearModel`.  Cast to float32 / float64 is the identity (the IR's arithmetic is
  real); to float16 and other types it changes values and is refused.

MaxPool and ReduceMax are encoded with ReLUs inside the IR, so that the IR keeps its two kinds of
step and every bound method, the MILP and BaB handle them without a max layer of their own:
``max(a, b) = a + relu(b - a)``, and a value that must cross a ReLU layer unchanged goes as
``relu(a) - relu(-a)``.  A window of k values is reduced by a balanced tree of pairwise maxima, one
ReLU layer per level (ceil(log2 k) levels): the segment is closed by an ``Affine`` whose rows are
``[b - a, a, -a]`` per pair (``[a, -a]`` for an odd one out), and the next segment recombines them as
``relu(b - a) + relu(a) - relu(-a)``.  Where one input of a pair dominates over the box, ``b - a``
has a fixed sign and its ReLU is stable, as ``relu(a)`` / ``relu(-a)`` are for a value of known sign
(e.g. a MaxPool after a Relu): the bounds are then exact there and the MILP spends no binary on
them, the "stable max" shortcut a dedicated max encoding would need code for.

Transpose and the row selections are exact whatever they permute.  Nodes whose inputs are all
constants (Constant, shape arithmetic, ...) are evaluated by ``onnx.reference``.  An op that is not
piecewise linear on the data path (Sigmoid, Tanh, Softmax, Exp, Log, Pow, ..., or Mul / MatMul / Div
of two input-dependent tensors) raises :class:`NonLinearModel` (``hamverify vnnlib`` answers
``unknown`` for it); anything else unsupported raises a one-line :class:`HamverifyError` naming the
op and the node.  A graph output that does not depend on the input is imported as zero weights plus
its value (a constant network).

``onnx`` and ``onnxruntime`` are the optional extra ``hamverify[onnx]``; they are imported lazily,
and so is torch: importing an ONNX network and proving it by bounds needs neither (issue 16, item 4:
start-up).  :class:`~hamverify.ir_module.IRModule` (the IR as a torch module) lives in its own module
and is re-exported here on first use.
"""
from __future__ import annotations

import gzip
import math
import os
import pathlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from . import HamverifyError, __version__, onnx_proto
from .network import Affine, Network, conv_matrix
from .text import short_text

EXPORT_OPSET = 13
EXPORT_IR_VERSION = 8  # what every onnxruntime >= 1.10 reads
DENSE_FRACTION = 0.3  # an IR matrix with more non-zeros than this fraction is stored dense
INSTALL_HINT = "pip install 'hamverify[onnx]'"


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise HamverifyError(f"ONNX support needs the 'onnx' package: {INSTALL_HINT}") from None
    return onnx


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise HamverifyError(f"ONNX support needs the 'onnxruntime' package: {INSTALL_HINT}") from None
    return onnxruntime


# ============================================================================================ export

def _const(onnx, name: str, value: np.ndarray):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)


def _np(t) -> np.ndarray:  # a torch tensor
    return t.detach().cpu().double().numpy()


def model_to_onnx(model, input_shape: Sequence[int], metadata: dict | None = None):
    """The ``onnx.ModelProto`` of a feed-forward torch model (the layers ``from_torch`` supports)."""
    import torch
    from torch import nn
    onnx = require_onnx()
    from onnx import TensorProto, helper

    from .models import Normalize
    shape = tuple(int(s) for s in input_shape)
    layers = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    nodes, inits = [], []
    cur = "input"
    for k, layer in enumerate(layers):
        out = f"t{k}"
        name = f"{type(layer).__name__.lower()}_{k}"
        if isinstance(layer, Normalize):
            c = len(layer.mean.view(-1))
            view = (1, c) + (1,) * (len(shape) - 1)
            inits += [_const(onnx, f"{name}.mean", _np(layer.mean).reshape(view)),
                      _const(onnx, f"{name}.std", _np(layer.std).reshape(view))]
            nodes += [helper.make_node("Sub", [cur, f"{name}.mean"], [out + "_c"], name=name + "_sub"),
                      helper.make_node("Div", [out + "_c", f"{name}.std"], [out], name=name + "_div")]
        elif isinstance(layer, nn.Conv2d):
            if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
                raise HamverifyError(f"export: {name} has padding {layer.padding!r}/{layer.padding_mode}; "
                                     f"only explicit zero padding is supported")
            ph, pw = layer.padding
            inputs = [cur, f"{name}.weight"]
            inits.append(_const(onnx, f"{name}.weight", _np(layer.weight)))
            if layer.bias is not None:
                inits.append(_const(onnx, f"{name}.bias", _np(layer.bias)))
                inputs.append(f"{name}.bias")
            nodes.append(helper.make_node("Conv", inputs, [out], name=name,
                                          kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                                          pads=[ph, pw, ph, pw], dilations=list(layer.dilation),
                                          group=layer.groups))
        elif isinstance(layer, nn.BatchNorm2d):
            c = layer.num_features
            w = _np(layer.weight) if layer.affine else np.ones(c)
            b = _np(layer.bias) if layer.affine else np.zeros(c)
            for suffix, v in (("scale", w), ("bias", b), ("mean", _np(layer.running_mean)),
                              ("var", _np(layer.running_var))):
                inits.append(_const(onnx, f"{name}.{suffix}", v))
            nodes.append(helper.make_node("BatchNormalization", [cur] + [f"{name}.{s}" for s in
                                          ("scale", "bias", "mean", "var")], [out], name=name,
                                          epsilon=float(layer.eps)))
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise HamverifyError(f"export: {name} flattens dims {layer.start_dim}..{layer.end_dim}; only 1..-1")
            nodes.append(helper.make_node("Flatten", [cur], [out], name=name, axis=1))
        elif isinstance(layer, nn.Linear):
            inputs = [cur, f"{name}.weight"]
            inits.append(_const(onnx, f"{name}.weight", _np(layer.weight)))
            if layer.bias is not None:
                inits.append(_const(onnx, f"{name}.bias", _np(layer.bias)))
                inputs.append(f"{name}.bias")
            nodes.append(helper.make_node("Gemm", inputs, [out], name=name, transB=1))
        elif isinstance(layer, nn.ReLU):
            nodes.append(helper.make_node("Relu", [cur], [out], name=name))
        else:
            raise HamverifyError(f"export: unsupported layer {type(layer).__name__} ({name})")
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["logits"], name="output"))
    with torch.no_grad():
        probe = next(model.parameters(), torch.zeros(1))
        n_out = int(model(torch.zeros(1, *shape, dtype=probe.dtype)).reshape(1, -1).shape[1])
    graph = helper.make_graph(
        nodes, "hamverify",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_out])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)],
                              producer_name="hamverify", producer_version=__version__)
    proto.ir_version = EXPORT_IR_VERSION
    for key, value in (metadata or {}).items():
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = f"hamverify.{key}", str(value)
    onnx.checker.check_model(proto)
    return proto


def save_onnx(proto, path) -> pathlib.Path:
    """Write atomically (a crash never leaves half a file)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, path)
    return path


def onnx_session(source):
    """An onnxruntime CPU session (one thread) for a path, bytes or ModelProto."""
    ort = require_onnxruntime()
    if hasattr(source, "SerializeToString"):
        source = source.SerializeToString()
    elif not isinstance(source, (bytes, bytearray)):
        source = _read_bytes(source)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(bytes(source), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise HamverifyError(f"onnxruntime cannot load the model ({_first_line(exc)})") from None


def onnx_run(session, x: np.ndarray) -> np.ndarray:
    """Run the session's (single) input on ``x``, cast to the input's dtype; returns output 0."""
    inp = session.get_inputs()[0]
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    return np.asarray(session.run(None, {inp.name: np.asarray(x, dtype=dtype)})[0])


def export_checkpoint(checkpoint, out, n_check: int = 8, seed: int = 0) -> tuple[pathlib.Path, float]:
    """Export a checkpoint to ONNX; returns (path, max |onnxruntime - torch| on random inputs)."""
    import torch

    from .models import INPUT_SHAPE, file_sha256, load_checkpoint
    model, meta = load_checkpoint(checkpoint)
    shape = INPUT_SHAPE[meta["dataset"]]
    model = model.float().eval()
    proto = model_to_onnx(model, shape, {"arch": meta.get("arch"), "dataset": meta["dataset"],
                                         "eps": meta.get("eps"), "source_sha256": file_sha256(checkpoint)})
    path = save_onnx(proto, out)
    x = np.random.default_rng(seed).random((n_check, *shape)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(onnx_run(onnx_session(proto), x) - ref).max())
    return path, diff


# ============================================================================================ import

class NonLinearModel(HamverifyError):
    """The graph computes something that is not piecewise linear in its input (Sigmoid, Softmax,
    a product of two input-dependent tensors, ...): no exact ReLU-network IR exists, so a verifier
    can only answer ``unknown`` for it (not an error of the user's inputs)."""


# Ops whose output is not piecewise linear in an input-dependent operand (Pow: x ** k, k ** x).
NONLINEAR_OPS = frozenset({
    "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf", "Gelu",
    "Softplus", "Softsign", "Elu", "Selu", "Celu", "Mish", "HardSwish", "Sin", "Cos", "Tan", "Asin", "Acos",
    "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh"})

# Ops that take an undecided comparison (a _Cond) as their first input.
COND_OPS = frozenset({"Where", "Not", "Cast", "Identity"})
# Relative slack on interval bounds (float64 rounding of the sums is far below it).
RANGE_SLACK = 1e-9
# The margin (relative to the magnitude of the terms) by which the box must decide a comparison:
# wide enough that the model's own float32 arithmetic decides it the same way.
DECIDE_MARGIN = 1e-5
_FLOAT_TYPES = {1: "float32", 11: "float64"}  # TensorProto.FLOAT, DOUBLE
_INT_TYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64, 12: np.uint32,
              13: np.uint64}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {short_text(text[0], 160)}" if text else type(exc).__name__


def _read_bytes(path) -> bytes:
    path = pathlib.Path(path)
    if not path.is_file():
        raise HamverifyError(f"ONNX file not found: {path}")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # .onnx.gz, as some VNN-COMP benchmarks ship them
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise HamverifyError(f"{path}: corrupt gzip file ({_first_line(exc)})") from None
    return data


def load_onnx_proto(source):
    """A ModelProto from a path (.onnx or .onnx.gz), bytes, or a ModelProto; one-line errors.
    Parsed with the generated protobuf classes alone (:mod:`hamverify.onnx_proto`): no
    ``import onnx``."""
    pb = onnx_proto.pb2()
    if isinstance(source, pb.ModelProto) or hasattr(source, "SerializeToString"):
        return source, "<model>"
    label = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else _read_bytes(source)
    try:
        proto = pb.ModelProto.FromString(data)
    except Exception as exc:
        raise HamverifyError(f"{label}: not a readable ONNX model ({_first_line(exc)})") from None
    if not proto.graph.node or not proto.graph.output:
        raise HamverifyError(f"{label}: not an ONNX model (no graph nodes or outputs)")
    return proto, label


@dataclass
class _Lin:
    """A tensor ``M @ v + c`` (row-major flattening of ``shape``) of the segment ``seg``'s variables."""

    M: sp.csr_matrix
    c: np.ndarray
    shape: tuple[int, ...]
    seg: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def rows(self, idx: np.ndarray, shape) -> "_Lin":
        return _Lin(self.M[idx], self.c[idx], tuple(int(s) for s in shape), self.seg)

    def reshaped(self, shape) -> "_Lin":
        return _Lin(self.M, self.c, tuple(int(s) for s in shape), self.seg)

    def scaled(self, k: np.ndarray) -> "_Lin":
        return _Lin((sp.diags(k) @ self.M).tocsr(), k * self.c, self.shape, self.seg)


@dataclass
class _Cond:
    """An input-dependent boolean tensor ``E rel 0`` elementwise (``rel``: ``gt``, ``ge``, ``eq`` or
    ``ne``; ``E`` a :class:`_Lin` of the output's shape) that the input box does not decide
    everywhere: ``known`` is 1 / 0 where it does (or where ``E`` is a constant) and -1 elsewhere."""

    E: _Lin
    rel: str
    known: np.ndarray  # int8, flattened

    @property
    def shape(self) -> tuple[int, ...]:
        return self.E.shape


@dataclass(frozen=True)
class OnnxModel:
    """An imported ONNX network: the IR plus what is needed to run the original with onnxruntime."""

    net: Network
    input_name: str
    input_dims: tuple[int, ...]  # the ONNX input shape, batch (if any) fixed to 1
    output_name: str
    output_dims: tuple[int, ...]
    input_dtype: str  # "float32" or "float64"
    opset: int
    source: str
    # elements of comparisons (Greater, Equal, Cast to bool or int, ...) decided by the input box
    # given to import_onnx: the IR equals the graph on that box only (0: everywhere)
    box_decided: int = 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.net.input_shape


class _Importer:
    def __init__(self, proto, label: str, box=None):
        self.label = label
        self.proto = proto
        self.box = box  # (lo, hi) of the flattened input, or None
        self.box_decided = 0
        self._seg_range = None  # (segment, (lo, hi, mag, nz)) of its variables on the box
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.env: dict[str, object] = {}
        for init in proto.graph.initializer:
            try:
                self.env[init.name] = onnx_proto.tensor_to_array(init)
            except Exception as exc:
                raise HamverifyError(f"{label}: initializer {init.name!r} unreadable ({_first_line(exc)})") from None
        self.affines: list[Affine] = []
        self.seg = 0

    # -- helpers ---------------------------------------------------------------------------
    def fail(self, node, message: str, cls: type[HamverifyError] = HamverifyError):
        raise cls(f"{self.label}: node {node.name or '(unnamed)'!r} ({node.op_type}): {message}")

    def nonlinear(self, node, message: str):
        self.fail(node, f"not piecewise linear: {message}", NonLinearModel)

    def get(self, node, name: str):
        if name not in self.env:
            self.fail(node, f"input {name!r} is not produced by any earlier node")
        return self.env[name]

    def const(self, node, name: str, what: str) -> np.ndarray:
        value = self.get(node, name)
        if isinstance(value, _Lin):
            self.fail(node, f"{what} must be a constant, but it depends on the network input")
        return value

    def attrs(self, node) -> dict:
        return {a.name: onnx_proto.attribute_value(a) for a in node.attribute}

    def check_seg(self, node, *lins: _Lin):
        for lin in lins:
            if lin.seg != self.seg:
                self.fail(node, "uses a tensor from before a Relu or MaxPool (skip connections across ReLU "
                                "layers are not supported)")

    def axes_arg(self, node, attrs) -> list[int] | None:
        if len(node.input) > 1 and node.input[1]:
            return [int(a) for a in np.asarray(self.const(node, node.input[1], "axes")).ravel()]
        return None if "axes" not in attrs else [int(a) for a in attrs["axes"]]

    # -- the graph -------------------------------------------------------------------------
    def run(self) -> OnnxModel:
        onnx_inputs = [i for i in self.proto.graph.input if i.name not in self.env]
        if len(onnx_inputs) != 1:
            raise HamverifyError(f"{self.label}: the graph must have exactly one (non-constant) input, "
                                 f"has {len(onnx_inputs)}")
        inp = onnx_inputs[0]
        tt = inp.type.tensor_type
        TensorProto = onnx_proto.pb2().TensorProto
        if tt.elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            raise HamverifyError(f"{self.label}: input {inp.name!r} must be float or double")
        if not tt.HasField("shape"):
            raise HamverifyError(f"{self.label}: input {inp.name!r} has no shape")
        dims_raw = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        batch = len(dims_raw) >= 2 and dims_raw[0] in (None, 1)
        dims = ([1] if batch else []) + dims_raw[1 if batch else 0:]
        if any(d is None for d in dims):
            raise HamverifyError(f"{self.label}: input {inp.name!r} has a symbolic dimension other than the "
                                 f"batch: {[d if d else '?' for d in dims_raw]}")
        dims = tuple(int(d) for d in dims)
        sample = dims[1:] if batch else dims
        n = int(np.prod(dims, dtype=np.int64))
        if self.box is not None:
            lo, hi = (np.asarray(v, dtype=np.float64).ravel() for v in self.box)
            ok = lo.size == n and hi.size == n and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
            self.box = (lo, hi) if ok and np.all(lo <= hi) else None
        self.env[inp.name] = _Lin(sp.identity(n, format="csr"), np.zeros(n), dims, 0)
        for node in self.proto.graph.node:
            self.node(node)
        if len(self.proto.graph.output) != 1:
            raise HamverifyError(f"{self.label}: the graph must have exactly one output, has "
                                 f"{len(self.proto.graph.output)}")
        out_name = self.proto.graph.output[0].name
        out = self.env.get(out_name)
        if out is not None and not isinstance(out, _Lin):
            # A constant output (it does not depend on the input): an affine map with zero weights
            # from the current segment, so that every consumer sees an ordinary network.
            value = np.asarray(out, dtype=np.float64)
            if value.size == 0:
                raise HamverifyError(f"{self.label}: output {out_name!r} is empty")
            width = self.affines[-1].out_features if self.affines else n
            out = _Lin(sp.csr_matrix((value.size, width)), value.ravel().copy(), value.shape, self.seg)
        if isinstance(out, _Cond):
            raise NonLinearModel(f"{self.label}: output {out_name!r} is a comparison of the input that the input "
                                 f"box does not decide (a step function, not piecewise linear)")
        if not isinstance(out, _Lin):
            raise HamverifyError(f"{self.label}: output {out_name!r} is not produced by any node")
        if out.seg != self.seg:
            raise HamverifyError(f"{self.label}: output {out_name!r} skips the last Relu (not supported)")
        self.close(out)
        net = Network(tuple(self.affines), tuple(sample) if sample else (1,))
        return OnnxModel(net=net, input_name=inp.name, input_dims=dims, output_name=out_name,
                         output_dims=out.shape, input_dtype="float64" if tt.elem_type == TensorProto.DOUBLE
                         else "float32", opset=self.opset, source=self.label, box_decided=self.box_decided)

    def close(self, lin: _Lin):
        M = lin.M.tocsr()
        M.eliminate_zeros()
        W = M.toarray() if M.nnz > DENSE_FRACTION * M.shape[0] * M.shape[1] else M
        self.affines.append(Affine(W, np.asarray(lin.c, dtype=np.float64).copy()))
        self.seg += 1

    def node(self, node):
        if node.domain not in ("", "ai.onnx"):
            self.fail(node, f"op domain {node.domain!r} is not supported")
        ins = [self.env.get(n) if n else None for n in node.input]
        missing = [n for n, v in zip(node.input, ins) if n and v is None]
        if missing:
            self.fail(node, f"input {missing[0]!r} is not produced by any earlier node")
        if not any(isinstance(v, (_Lin, _Cond)) for v in ins):
            outs = self.fold(node)
        else:
            handler = getattr(self, f"op_{node.op_type}", None)
            conds = [k for k, v in enumerate(ins) if isinstance(v, _Cond)]
            if conds and not (node.op_type in COND_OPS and conds == [0]):
                self.nonlinear(node, f"uses {node.input[conds[0]]!r}, a comparison of the input that the input box "
                                     f"does not decide (a step function)")
            if node.op_type in NONLINEAR_OPS:
                self.nonlinear(node, f"{node.op_type} of a tensor that depends on the network input")
            if handler is None:
                self.fail(node, f"unsupported op {node.op_type} on the network's data path "
                                f"(supported: {', '.join(sorted(SUPPORTED_OPS))})")
            outs = handler(node, self.attrs(node))
            outs = outs if isinstance(outs, list) else [outs]
        for name, value in zip(node.output, outs):
            if name:
                self.env[name] = value

    def fold(self, node) -> list:
        """Evaluate a node whose inputs are all constants with onnx's reference implementation."""
        from onnx.reference import ReferenceEvaluator
        feeds = {n: self.env[n] for n in node.input if n}
        try:
            results = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as exc:
            self.fail(node, f"cannot evaluate on constants ({_first_line(exc)})")
        return [np.asarray(r) for r in results]

    # -- ops on the data path ----------------------------------------------------------------
    def op_Identity(self, node, attrs):
        return self.get(node, node.input[0])

    op_Dropout = op_Identity  # inference mode: the identity (a mask output is not supported)

    def op_Relu(self, node, attrs):
        x = self.get(node, node.input[0])
        self.check_seg(node, x)
        self.close(x)
        return _Lin(sp.identity(x.size, format="csr"), np.zeros(x.size), x.shape, self.seg)

    def op_Neg(self, node, attrs):
        x = self.get(node, node.input[0])
        return x.scaled(-np.ones(x.size))

    def _broadcast(self, node, value, shape):
        if isinstance(value, _Lin):
            if value.shape == tuple(shape):
                return value
            idx = np.broadcast_to(np.arange(value.size).reshape(value.shape), shape).ravel()
            return value.rows(idx, shape)
        return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).ravel()

    def _binary(self, node):
        a, b = (self.get(node, n) for n in node.input[:2])
        sa = a.shape if isinstance(a, _Lin) else np.shape(a)
        sb = b.shape if isinstance(b, _Lin) else np.shape(b)
        try:
            shape = tuple(np.broadcast_shapes(sa, sb))
        except ValueError:
            self.fail(node, f"shapes {list(sa)} and {list(sb)} do not broadcast")
        return self._broadcast(node, a, shape), self._broadcast(node, b, shape), shape

    def op_Add(self, node, attrs, sign: float = 1.0):
        a, b, shape = self._binary(node)
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            self.check_seg(node, a, b)
            return _Lin((a.M + sign * b.M).tocsr(), a.c + sign * b.c, shape, a.seg)
        if isinstance(a, _Lin):
            return _Lin(a.M, a.c + sign * b, shape, a.seg)
        b = b if sign > 0 else b.scaled(-np.ones(b.size))
        return _Lin(b.M, b.c + a, shape, b.seg)

    def op_Sub(self, node, attrs):
        return self.op_Add(node, attrs, sign=-1.0)

    def op_Mul(self, node, attrs):
        a, b, shape = self._binary(node)
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            self.nonlinear(node, "multiplies two tensors that both depend on the network input")
        lin, k = (a, b) if isinstance(a, _Lin) else (b, a)
        return lin.scaled(np.asarray(k, dtype=np.float64))

    def op_Div(self, node, attrs):
        a, b, shape = self._binary(node)
        if isinstance(b, _Lin):
            self.nonlinear(node, "divides by a tensor that depends on the network input")
        if np.any(b == 0):
            self.fail(node, "divides by zero")
        return a.scaled(1.0 / np.asarray(b, dtype=np.float64))

    def op_Flatten(self, node, attrs):
        x = self.get(node, node.input[0])
        axis = int(attrs.get("axis", 1))
        axis = axis + len(x.shape) if axis < 0 else axis
        return x.reshaped((int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))))

    def op_Reshape(self, node, attrs):
        x = self.get(node, node.input[0])
        target = [int(s) for s in np.asarray(self.const(node, node.input[1], "the shape")).ravel()]
        if not attrs.get("allowzero", 0):
            target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
        if target.count(-1) > 1:
            self.fail(node, f"shape {target} has more than one -1")
        if -1 in target:
            rest = int(np.prod([s for s in target if s != -1]))
            if rest == 0 or x.size % rest:
                self.fail(node, f"cannot reshape {list(x.shape)} to {target}")
            target[target.index(-1)] = x.size // rest
        if int(np.prod(target)) != x.size:
            self.fail(node, f"cannot reshape {list(x.shape)} to {target}")
        return x.reshaped(target)

    def op_Squeeze(self, node, attrs):
        x = self.get(node, node.input[0])
        axes = self.axes_arg(node, attrs)
        r = len(x.shape)
        axes = [i for i, s in enumerate(x.shape) if s == 1] if axes is None else [a % r for a in axes]
        if any(x.shape[a] != 1 for a in axes):
            self.fail(node, f"squeezes a dimension that is not 1 in shape {list(x.shape)}")
        return x.reshaped([s for i, s in enumerate(x.shape) if i not in axes])

    def op_Unsqueeze(self, node, attrs):
        x = self.get(node, node.input[0])
        axes = self.axes_arg(node, attrs)
        if axes is None:
            self.fail(node, "has no axes")
        r = len(x.shape) + len(axes)
        shape = list(x.shape)
        for a in sorted(a % r for a in axes):
            shape.insert(a, 1)
        return x.reshaped(shape)

    def op_Transpose(self, node, attrs):
        x = self.get(node, node.input[0])
        perm = list(attrs.get("perm", range(len(x.shape) - 1, -1, -1)))
        if sorted(perm) != list(range(len(x.shape))):
            self.fail(node, f"perm {perm} does not fit shape {list(x.shape)}")
        idx = np.arange(x.size).reshape(x.shape).transpose(perm).ravel()
        return x.rows(idx, [x.shape[p] for p in perm])

    def op_Shape(self, node, attrs):
        x = self.get(node, node.input[0])
        shape = np.asarray(x.shape, dtype=np.int64)
        start, end = int(attrs.get("start", 0)), attrs.get("end")
        return shape[start:None if end is None else int(end)]

    def op_BatchNormalization(self, node, attrs):
        x = self.get(node, node.input[0])
        if attrs.get("training_mode", 0):
            self.fail(node, "training_mode=1 is not supported")
        scale, bias, mean, var = (np.asarray(self.const(node, n, "a parameter"), dtype=np.float64).ravel()
                                  for n in node.input[1:5])
        if len(x.shape) < 2 or x.shape[1] != scale.size:
            self.fail(node, f"{scale.size} channels do not fit shape {list(x.shape)}")
        k = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
        view = (1, -1) + (1,) * (len(x.shape) - 2)
        per = lambda v: np.broadcast_to(v.reshape(view), x.shape).ravel()  # noqa: E731
        y = x.scaled(per(k))
        return _Lin(y.M, y.c + per(bias - mean * k), y.shape, y.seg)

    # -- row selections ----------------------------------------------------------------------
    # The op's own numpy operation runs on the operands' row numbers (``np.arange(size)`` in their
    # shapes); the result says which rows of ``M`` and ``c`` the output is made of.  Constant
    # operands join as rows with zero weights (a "pool" of every operand's rows), so mixing them in
    # is a row selection too.

    def _pool(self, node, values) -> tuple[_Lin, list[np.ndarray]]:
        """(one _Lin of every operand's rows, the row numbers of each operand in its shape)."""
        lins = [v for v in values if isinstance(v, _Lin)]
        self.check_seg(node, *lins)
        if len(values) == 1:
            return lins[0], [np.arange(lins[0].size).reshape(lins[0].shape)]
        width = lins[0].M.shape[1]
        Ms, cs, idx, offset = [], [], [], 0
        for v in values:
            if isinstance(v, _Lin):
                M, c, shape = v.M, v.c, v.shape
            else:
                a = np.asarray(v, dtype=np.float64)
                M, c, shape = sp.csr_matrix((a.size, width)), a.ravel(), a.shape
            n = int(np.prod(shape, dtype=np.int64))
            Ms.append(M)
            cs.append(c)
            idx.append(offset + np.arange(n).reshape(shape))
            offset += n
        return _Lin(sp.vstack(Ms, format="csr"), np.concatenate(cs), (offset,), self.seg), idx

    @staticmethod
    def _pick(pool: _Lin, idx: np.ndarray) -> _Lin:
        return pool.rows(np.asarray(idx).ravel(), np.shape(idx))

    def _axis(self, node, axis, rank: int) -> int:
        axis = int(axis)
        if not -rank <= axis < rank:
            self.fail(node, f"axis {axis} is out of range for rank {rank}")
        return axis % rank

    def _ints(self, node, i: int, what: str) -> list[int] | None:
        """Input ``i`` as a list of ints (a constant), or None when it is absent."""
        if len(node.input) > i and node.input[i]:
            return [int(v) for v in np.asarray(self.const(node, node.input[i], what)).ravel()]
        return None

    def _slice_range(self, node, dim: int, start: int, end: int, step: int) -> np.ndarray:
        # ONNX's clamping, which is not Python's for a start before the beginning with a negative
        # step: negative indices count from the end, then start is clamped to [0, dim] ([0, dim - 1]
        # going backwards) and end to [0, dim] ([-1, dim - 1] going backwards).
        if step == 0:
            self.fail(node, "a step of 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        return np.arange(start, end, step)

    def op_Slice(self, node, attrs):
        x = self.get(node, node.input[0])
        if self.opset < 10:  # Slice-1: attributes, no steps
            starts, ends, axes, steps = attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None
        else:
            starts, ends = self._ints(node, 1, "starts"), self._ints(node, 2, "ends")
            axes, steps = self._ints(node, 3, "axes"), self._ints(node, 4, "steps")
        if starts is None or ends is None:
            self.fail(node, "has no starts or ends")
        axes = list(range(len(starts))) if axes is None else list(axes)
        steps = [1] * len(starts) if steps is None else list(steps)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            self.fail(node, f"starts {list(starts)}, ends {list(ends)}, axes {axes} and steps {steps} differ in length")
        idx = np.arange(x.size).reshape(x.shape)
        for axis, start, end, step in zip(axes, starts, ends, steps):
            axis = self._axis(node, axis, len(x.shape))
            idx = np.take(idx, self._slice_range(node, x.shape[axis], int(start), int(end), int(step)), axis=axis)
        return self._pick(x, idx)

    def op_Concat(self, node, attrs):
        pool, idx = self._pool(node, [self.get(node, n) for n in node.input if n])
        if "axis" not in attrs:
            self.fail(node, "has no axis")
        if len({i.ndim for i in idx}) != 1:
            self.fail(node, f"inputs of different ranks {[list(i.shape) for i in idx]}")
        try:
            return self._pick(pool, np.concatenate(idx, axis=self._axis(node, attrs["axis"], idx[0].ndim)))
        except ValueError:
            self.fail(node, f"shapes {[list(i.shape) for i in idx]} do not concatenate")

    def op_Split(self, node, attrs):
        x = self.get(node, node.input[0])
        axis = self._axis(node, attrs.get("axis", 0), len(x.shape))
        dim = x.shape[axis]
        sizes = self._ints(node, 1, "split")  # an input from opset 13 on, an attribute before
        if sizes is None and "split" in attrs:
            sizes = [int(s) for s in attrs["split"]]
        if sizes is None:
            n = int(attrs.get("num_outputs", len(node.output)))
            if n <= 0 or ("num_outputs" not in attrs and dim % n):
                self.fail(node, f"cannot split {dim} into {n} equal parts")
            chunk = -(-dim // n)  # opset 18's num_outputs: the last part is the smaller one
            sizes = [min(chunk, dim - k * chunk) for k in range(n)]
        if len(sizes) != len(node.output) or any(s < 0 for s in sizes) or sum(sizes) != dim:
            self.fail(node, f"split {sizes} does not fit dimension {dim} and {len(node.output)} outputs")
        parts = np.split(np.arange(x.size).reshape(x.shape), np.cumsum(sizes)[:-1], axis=axis)
        return [self._pick(x, p) for p in parts]

    def op_Gather(self, node, attrs):
        x = self.get(node, node.input[0])
        if not isinstance(x, _Lin):
            self.fail(node, "indices that depend on the network input are not supported")
        ind = np.asarray(self.const(node, node.input[1], "the indices")).astype(np.int64)
        axis = self._axis(node, attrs.get("axis", 0), len(x.shape))
        dim = x.shape[axis]
        if ind.size and (ind.min() < -dim or ind.max() >= dim):
            self.fail(node, f"indices outside [-{dim}, {dim - 1}]")
        idx = np.take(np.arange(x.size).reshape(x.shape), np.where(ind < 0, ind + dim, ind), axis=axis)
        return self._pick(x, idx)

    def op_Expand(self, node, attrs):
        x = self.get(node, node.input[0])
        if not isinstance(x, _Lin):
            self.fail(node, "a shape that depends on the network input is not supported")
        target = tuple(int(s) for s in np.asarray(self.const(node, node.input[1], "the shape")).ravel())
        try:
            shape = tuple(np.broadcast_shapes(x.shape, target))
        except ValueError:
            self.fail(node, f"shape {list(x.shape)} does not expand to {list(target)}")
        return self._broadcast(node, x, shape)  # broadcasting a _Lin repeats its rows

    def op_Where(self, node, attrs):
        if isinstance(self.get(node, node.input[0]), _Cond):
            return self._where_cond(node, self.get(node, node.input[0]),
                                    *(self.get(node, n) for n in node.input[1:3]))
        cond = np.asarray(self.const(node, node.input[0], "the condition")).astype(bool)
        pool, (ia, ib) = self._pool(node, [self.get(node, n) for n in node.input[1:3]])
        try:
            return self._pick(pool, np.where(cond, ia, ib))
        except ValueError:
            self.fail(node, f"shapes {list(cond.shape)}, {list(ia.shape)} and {list(ib.shape)} do not broadcast")

    def op_Pad(self, node, attrs):
        x = self.get(node, node.input[0])
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode != "constant":
            self.fail(node, f"mode {mode!r} is not supported (only 'constant')")
        r = len(x.shape)
        if self.opset < 11:  # Pad-2: attributes
            pads, value, axes = attrs.get("pads"), float(attrs.get("value", 0.0)), None
        else:
            pads, axes = self._ints(node, 1, "pads"), self._ints(node, 3, "axes")
            value = (float(np.asarray(self.const(node, node.input[2], "the constant value")).ravel()[0])
                     if len(node.input) > 2 and node.input[2] else 0.0)
        axes = list(range(r)) if axes is None else [self._axis(node, a, r) for a in axes]
        if pads is None or len(pads) != 2 * len(axes):
            self.fail(node, f"pads {pads} do not fit {len(axes)} axes")
        before, after = np.zeros(r, dtype=np.int64), np.zeros(r, dtype=np.int64)
        before[axes], after[axes] = pads[:len(axes)], pads[len(axes):]
        pool, (idx, fill) = self._pool(node, [x, np.full(1, value)])  # the padding value: one constant row
        grown = np.pad(idx, [(max(b, 0), max(e, 0)) for b, e in zip(before, after)], constant_values=int(fill[0]))
        # negative pads remove elements
        crop = tuple(slice(max(-b, 0), n - max(-e, 0)) for b, e, n in zip(before, after, grown.shape))
        out = grown[crop]
        if any(s <= 0 for s in out.shape) and x.size:
            self.fail(node, f"pads {list(pads)} leave nothing of shape {list(x.shape)}")
        return self._pick(pool, out)

    # -- comparisons -------------------------------------------------------------------------
    # A comparison of an input-dependent tensor is a step function: it is decided element by
    # element, exactly where the tensor is a constant and, given an input box (import_onnx's
    # ``box``), where interval bounds over the box show its sign with a margin (RANGE_SLACK).  A
    # fully decided comparison is a constant (folded onward as any other); one that is not is a
    # _Cond, which only Where (and Not, Identity) may take: Where rewrites the undecided elements
    # exactly when the branches meet where the condition switches (max, min, ReLU, leaky ReLU in
    # disguise), and gives NonLinearModel (``unknown``) otherwise.

    def _range(self, node, E: _Lin):
        """(lo, hi, may be non-zero) of every element of ``E``: exact for constant rows; for the
        others interval bounds over the box, narrowed by DECIDE_MARGIN of the terms' magnitude (a
        value is decided only with that margin), unbounded without a box."""
        self.check_seg(node, E)
        constant = np.diff(E.M.indptr) == 0
        if self.box is None:
            lo, hi = np.full(E.size, -np.inf), np.full(E.size, np.inf)
            nz = np.ones(E.size, dtype=bool)
        else:
            lo, hi, mag, nz = self._affine_range(E.M, E.c, *self._segment_range())
            lo, hi = lo - DECIDE_MARGIN * mag, hi + DECIDE_MARGIN * mag
        lo, hi, nz = np.where(constant, E.c, lo), np.where(constant, E.c, hi), np.where(constant, E.c != 0, nz)
        return lo, hi, nz

    def _segment_range(self):
        """(lo, hi, magnitude, may be non-zero) of the current segment's variables on the box."""
        if self._seg_range is not None and self._seg_range[0] == self.seg:
            return self._seg_range[1]
        lo, hi = self.box
        mag, nz = np.maximum(np.abs(lo), np.abs(hi)), (lo != 0) | (hi != 0)
        for aff in self.affines:
            lo, hi, mag, nz = self._affine_range(aff.W, aff.b, lo, hi, mag, nz)
            nz = nz & (hi > 0)  # relu(v) with v < 0 for sure (hi is widened): exactly 0
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        self._seg_range = (self.seg, (lo, hi, mag, nz))
        return lo, hi, mag, nz

    @staticmethod
    def _affine_range(W, b, lo, hi, mag, nz):
        W = sp.csr_matrix(W)
        b = np.asarray(b, dtype=np.float64).ravel()
        pos, neg = W.maximum(0), W.minimum(0)
        m = np.asarray(abs(W) @ mag).ravel() + np.abs(b)
        slack = RANGE_SLACK * m
        out_lo = np.asarray(pos @ lo + neg @ hi).ravel() + b - slack
        out_hi = np.asarray(pos @ hi + neg @ lo).ravel() + b + slack
        W_nz = W.copy()
        W_nz.data = (W_nz.data != 0).astype(np.float64)
        out_nz = (np.asarray(W_nz @ nz.astype(np.float64)).ravel() > 0) | (b != 0)
        return out_lo, out_hi, m, out_nz

    def _decide(self, node, E: _Lin, rel: str) -> np.ndarray:
        """Per element of ``E rel 0``: 1 (true on the whole box), 0 (false) or -1 (not decided)."""
        lo, hi, nz = self._range(node, E)
        pos, neg, zero = lo > 0, hi < 0, ~nz
        true = {"gt": pos, "ge": pos | zero, "eq": zero, "ne": pos | neg}[rel]
        false = {"gt": neg | zero, "ge": neg, "eq": pos | neg, "ne": zero}[rel]
        known = np.where(true, 1, np.where(false, 0, -1)).astype(np.int8)
        self.box_decided += int(np.count_nonzero((known >= 0) & (np.diff(E.M.indptr) > 0)))
        return known

    def _as_lin(self, value, shape, width: int) -> _Lin:
        """A tensor broadcast to ``shape`` as a _Lin (a constant as rows with zero weights)."""
        if isinstance(value, _Lin):
            return self._broadcast(None, value, shape)
        c = np.asarray(value, dtype=np.float64)
        n = int(np.prod(shape, dtype=np.int64))
        c = c.ravel().copy() if c.ndim == 1 and c.size == n else np.broadcast_to(c, shape).ravel().copy()
        return _Lin(sp.csr_matrix((c.size, width)), c, tuple(shape), self.seg)

    def _compare(self, node, rel: str, swap: bool = False):
        a, b, shape = self._binary(node)
        if swap:
            a, b = b, a
        lins = [v for v in (a, b) if isinstance(v, _Lin)]
        self.check_seg(node, *lins)
        width = lins[0].M.shape[1]
        a, b = self._as_lin(a, shape, width), self._as_lin(b, shape, width)
        E = _Lin((a.M - b.M).tocsr(), a.c - b.c, shape, self.seg)
        return self._condition(node, E, rel)

    def _condition(self, node, E: _Lin, rel: str):
        known = self._decide(node, E, rel)
        if np.all(known >= 0):
            return (known == 1).reshape(E.shape)
        return _Cond(E, rel, known)

    def op_Greater(self, node, attrs):
        return self._compare(node, "gt")

    def op_GreaterOrEqual(self, node, attrs):
        return self._compare(node, "ge")

    def op_Less(self, node, attrs):  # a < b  <=>  b - a > 0
        return self._compare(node, "gt", swap=True)

    def op_LessOrEqual(self, node, attrs):
        return self._compare(node, "ge", swap=True)

    def op_Equal(self, node, attrs):
        return self._compare(node, "eq")

    def op_Not(self, node, attrs):
        c = self.get(node, node.input[0])
        if not isinstance(c, _Cond):
            self.fail(node, "takes a tensor that is not boolean")
        # not (E > 0) = (-E >= 0), not (E >= 0) = (-E > 0), not (E == 0) = (E != 0)
        flip = {"gt": "ge", "ge": "gt", "eq": "ne", "ne": "eq"}[c.rel]
        E = c.E if c.rel in ("eq", "ne") else c.E.scaled(-np.ones(c.E.size))
        return _Cond(E, flip, np.where(c.known < 0, -1, 1 - c.known).astype(np.int8))

    def op_Cast(self, node, attrs):
        x = self.get(node, node.input[0])
        to = int(attrs.get("to", 0))
        names = self._type_names()
        if isinstance(x, _Cond):
            if to == 9:  # BOOL: itself
                return x
            self.nonlinear(node, f"casts a comparison of the input that the input box does not decide to "
                                 f"{names.get(to, to)} (a step function)")
        if to in _FLOAT_TYPES:  # float32 / float64: the IR's real arithmetic already (no-op)
            return x
        if to == 9:  # BOOL: x != 0
            return self._condition(node, x, "ne")
        if to in _INT_TYPES:  # truncation toward zero: exact where the box fixes the integer part
            lo, hi, _ = self._range(node, x)
            t_lo, t_hi = np.trunc(lo), np.trunc(hi)
            fixed = np.isfinite(t_lo) & (t_lo == t_hi)
            if not np.all(fixed):
                why = "no input box is given" if self.box is None else "the input box does not fix its integer part"
                self.nonlinear(node, f"casts an input-dependent tensor to {names.get(to, to)} (rounding, a step "
                                     f"function) at {int(np.count_nonzero(~fixed))} of {x.size} elements, and {why}")
            info = np.iinfo(_INT_TYPES[to])
            if t_lo.min() < info.min or t_lo.max() > info.max:
                self.fail(node, f"values outside the range of {names.get(to, to)}")
            self.box_decided += int(np.count_nonzero(np.diff(x.M.indptr) > 0))
            return t_lo.astype(_INT_TYPES[to]).reshape(x.shape)
        self.fail(node, f"a cast to {names.get(to, to)} changes the values (only float32, float64, bool and "
                        f"integer types whose value the input box fixes are supported)")

    @staticmethod
    def _type_names() -> dict:
        pb = onnx_proto.pb2().TensorProto
        return {v: k.lower() for k, v in pb.DataType.items()}

    def _where_cond(self, node, cond: _Cond, p, q) -> _Lin:
        """Where on a comparison ``E rel 0``: decided elements pick their branch; an undecided one
        is ``q + lam * relu(E)`` (``rel`` gt / ge) when ``p - q = lam * E`` there, i.e. the branches
        meet where the condition switches, exact everywhere (one ReLU layer)."""
        sp_, sq = (v.shape if isinstance(v, _Lin) else np.shape(v) for v in (p, q))
        try:
            shape = tuple(np.broadcast_shapes(cond.shape, sp_, sq))
        except ValueError:
            self.fail(node, f"shapes {list(cond.shape)}, {list(sp_)} and {list(sq)} do not broadcast")
        self.check_seg(node, cond.E, *[v for v in (p, q) if isinstance(v, _Lin)])
        width = cond.E.M.shape[1]
        E = self._broadcast(node, cond.E, shape)
        known = np.broadcast_to(cond.known.reshape(cond.shape), shape).ravel()
        p, q = self._as_lin(p, shape, width), self._as_lin(q, shape, width)
        n = int(np.prod(shape, dtype=np.int64))
        open_ = np.flatnonzero(known < 0)
        pool = _Lin(sp.vstack([p.M, q.M], format="csr"), np.concatenate([p.c, q.c]), (2 * n,), self.seg)
        chosen = np.where(known == 1, np.arange(n), n + np.arange(n))
        if open_.size == 0:
            return pool.rows(chosen, shape)
        why = "no input box is given" if self.box is None else "the input box does not decide it"
        if cond.rel not in ("gt", "ge"):
            self.nonlinear(node, f"selects on an equality of the input at {open_.size} of {n} elements, and {why} "
                                 f"(a step function)")
        # lam per open element: p - q = lam * E, row by row (weights and constant together)
        AE = sp.hstack([E.M[open_], sp.csr_matrix(E.c[open_].reshape(-1, 1))], format="csr")
        AD = sp.hstack([(p.M - q.M)[open_], sp.csr_matrix((p.c - q.c)[open_].reshape(-1, 1))], format="csr")
        absE = abs(AE)
        j = np.asarray(absE.argmax(axis=1)).ravel()
        r = np.arange(open_.size)
        lam = np.asarray(AD[r, j]).ravel() / np.asarray(AE[r, j]).ravel()
        rest = abs(AD - sp.diags(lam) @ AE).max(axis=1).toarray().ravel()
        scale = np.maximum(np.asarray(abs(AD).max(axis=1).todense()).ravel(),
                           np.abs(lam) * np.asarray(absE.max(axis=1).todense()).ravel())
        bad = rest > 1e-12 * scale
        if np.any(bad):
            self.nonlinear(node, f"switches between branches that differ where the condition changes (a jump) "
                                 f"at {int(np.count_nonzero(bad))} of {n} elements, and {why}")
        # close the segment: rows [E, q, -q] per open element, [s, -s] for a decided one (s its
        # branch); after the ReLUs y = lam * relu(E) + relu(q) - relu(-q), resp. relu(s) - relu(-s)
        is_open = known < 0
        k = np.where(is_open, 3, 2)
        start = np.concatenate([[0], np.cumsum(k)[:-1]]).astype(np.int64)
        total = int(k.sum())
        o, d = np.flatnonzero(is_open), np.flatnonzero(~is_open)
        src = np.concatenate([2 * n + o, n + o, n + o, chosen[d], chosen[d]])  # rows of [p; q; E]
        dst = np.concatenate([start[o], start[o] + 1, start[o] + 2, start[d], start[d] + 1])
        sign = np.concatenate([np.ones(o.size), np.ones(o.size), -np.ones(o.size), np.ones(d.size), -np.ones(d.size)])
        full = _Lin(sp.vstack([pool.M, E.M], format="csr"), np.concatenate([pool.c, E.c]), (3 * n,), self.seg)
        S = sp.csr_matrix((sign, (dst, src)), shape=(total, 3 * n))
        self.close(_Lin((S @ full.M).tocsr(), np.asarray(S @ full.c).ravel(), (total,), self.seg))
        lam_all = np.zeros(n)
        lam_all[open_] = lam
        R = sp.csr_matrix((np.concatenate([lam_all[o], np.ones(o.size), -np.ones(o.size), np.ones(d.size),
                                           -np.ones(d.size)]),
                           (np.concatenate([o, o, o, d, d]),
                            np.concatenate([start[o], start[o] + 1, start[o] + 2, start[d], start[d] + 1]))),
                          shape=(n, total))
        return _Lin(R, np.zeros(n), shape, self.seg)

    # -- reductions --------------------------------------------------------------------------
    def _reduce_windows(self, node, attrs, x: _Lin) -> tuple[np.ndarray, list[int]]:
        """(the rows each output reduces, one row of ``windows`` per output; the output shape)."""
        r = len(x.shape)
        axes = self.axes_arg(node, attrs)  # an input from opset 13 (ReduceSum) / 18 (the others) on
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return np.arange(x.size).reshape(-1, 1), list(x.shape)
            axes = range(r)
        axes = sorted({self._axis(node, a, r) for a in axes})
        kept = [i for i in range(r) if i not in axes]
        k = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        if k == 0:
            self.fail(node, f"reduces an empty dimension of shape {list(x.shape)}")
        windows = np.arange(x.size).reshape(x.shape).transpose(kept + axes).reshape(-1, k)
        keep = attrs.get("keepdims", 1)
        shape = [1 if i in axes else s for i, s in enumerate(x.shape)] if keep else [x.shape[i] for i in kept]
        return windows, shape

    def op_ReduceSum(self, node, attrs, mean: bool = False):
        x = self.get(node, node.input[0])
        windows, shape = self._reduce_windows(node, attrs, x)
        n, k = windows.shape
        R = sp.csr_matrix((np.full(n * k, 1.0 / k if mean else 1.0), (np.repeat(np.arange(n), k), windows.ravel())),
                          shape=(n, x.size))
        return _Lin((R @ x.M).tocsr(), np.asarray(R @ x.c).ravel(), shape, x.seg)

    def op_ReduceMean(self, node, attrs):
        return self.op_ReduceSum(node, attrs, mean=True)

    def op_ReduceMax(self, node, attrs):
        x = self.get(node, node.input[0])
        windows, shape = self._reduce_windows(node, attrs, x)
        return self._max_tree(node, x, windows, shape)

    def _max_tree(self, node, x: _Lin, windows: np.ndarray, shape) -> _Lin:
        """The max over each row of ``windows`` (row numbers of ``x``, -1 for none), as a balanced
        tree of pairwise maxima with one ReLU layer per level (the module docstring says why)."""
        self.check_seg(node, x)
        if windows.size and np.any((windows < 0).all(axis=1)):
            self.fail(node, "a window holds no input element (it lies in the padding)")
        # each window's members first, in their order (so that the IR does not depend on sorting)
        slots = np.take_along_axis(windows, np.argsort(windows < 0, axis=1, kind="stable"), axis=1)
        terms = x
        while slots.shape[1] > 1:
            a = slots[:, 0::2]
            b = np.full(a.shape, -1, dtype=np.int64)
            b[:, :slots.shape[1] // 2] = slots[:, 1::2]
            keep = a >= 0  # members come first: b is a member only where a is
            av, bv = a[keep], b[keep]
            pair = bv >= 0
            start = np.concatenate([[0], np.cumsum(np.where(pair, 3, 2))[:-1]]).astype(np.int64)
            total = int(np.sum(np.where(pair, 3, 2)))
            ps, ls = start[pair], start[~pair]
            ap, bp, al = av[pair], bv[pair], av[~pair]
            ones_p, ones_l = np.ones(ps.size), np.ones(ls.size)
            # close the segment: rows [b - a, a, -a] per pair, [a, -a] for an odd one out
            S = sp.csr_matrix((np.concatenate([ones_p, -ones_p, ones_p, -ones_p, ones_l, -ones_l]),
                               (np.concatenate([ps, ps, ps + 1, ps + 2, ls, ls + 1]),
                                np.concatenate([bp, ap, ap, ap, al, al]))), shape=(total, terms.size))
            self.close(_Lin((S @ terms.M).tocsr(), np.asarray(S @ terms.c).ravel(), (total,), terms.seg))
            # ... and recombine after the ReLUs: relu(b - a) + relu(a) - relu(-a) = max(a, b), and
            # relu(a) - relu(-a) = a
            t = np.arange(av.size)
            R = sp.csr_matrix((np.concatenate([ones_p, ones_p, -ones_p, ones_l, -ones_l]),
                               (np.concatenate([t[pair], t[pair], t[pair], t[~pair], t[~pair]]),
                                np.concatenate([ps, ps + 1, ps + 2, ls, ls + 1]))), shape=(av.size, total))
            terms = _Lin(R, np.zeros(av.size), (av.size,), self.seg)
            slots = np.full(a.shape, -1, dtype=np.int64)
            slots[keep] = t
        return terms.rows(slots[:, 0], shape)

    # -- matrix products -------------------------------------------------------------------
    def _matmul(self, node, a, b):
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            self.nonlinear(node, "multiplies two tensors that both depend on the network input")
        if isinstance(a, _Lin):
            return self._lin_times_const(node, a, np.asarray(b, dtype=np.float64))
        return self._const_times_lin(node, np.asarray(a, dtype=np.float64), b)

    def _squeeze_const(self, node, W):
        while W.ndim > 2 and W.shape[0] == 1:
            W = W[0]
        if W.ndim > 2:
            self.fail(node, f"batched constant of shape {list(W.shape)} is not supported")
        return W

    def _lin_times_const(self, node, x: _Lin, W: np.ndarray) -> _Lin:
        W = self._squeeze_const(node, W)
        vec_w = W.ndim == 1
        W2 = W.reshape(-1, 1) if vec_w else W
        xs = x.shape if len(x.shape) >= 2 else (1,) + x.shape
        if xs[-1] != W2.shape[0]:
            self.fail(node, f"shapes {list(x.shape)} and {list(W.shape)} do not multiply")
        lead = int(np.prod(xs[:-1]))
        K = sp.csr_matrix(W2.T)
        K = K if lead == 1 else sp.kron(sp.identity(lead), K, format="csr")
        out = list(xs[:-1]) + [W2.shape[1]]
        if len(x.shape) == 1:
            out = out[1:]
        if vec_w:
            out = out[:-1]
        return _Lin((K @ x.M).tocsr(), np.asarray(K @ x.c).ravel(), out, x.seg)

    def _const_times_lin(self, node, W: np.ndarray, x: _Lin) -> _Lin:
        W = self._squeeze_const(node, W)
        vec_w = W.ndim == 1
        W2 = W.reshape(1, -1) if vec_w else W
        xs = x.shape if len(x.shape) >= 2 else x.shape + (1,)
        if xs[-2] != W2.shape[1]:
            self.fail(node, f"shapes {list(W.shape)} and {list(x.shape)} do not multiply")
        lead, ncols = int(np.prod(xs[:-2])), xs[-1]
        K = sp.kron(sp.csr_matrix(W2), sp.identity(ncols), format="csr")
        K = K if lead == 1 else sp.kron(sp.identity(lead), K, format="csr")
        out = list(xs[:-2]) + [W2.shape[0], ncols]
        if len(x.shape) == 1:
            out = out[:-1]
        if vec_w:
            out = out[:-2] + out[-1:] if len(x.shape) > 1 else out[:-1]
        return _Lin((K @ x.M).tocsr(), np.asarray(K @ x.c).ravel(), out, x.seg)

    def op_MatMul(self, node, attrs):
        a, b = (self.get(node, n) for n in node.input[:2])
        return self._matmul(node, a, b)

    def op_Gemm(self, node, attrs):
        a, b = (self.get(node, n) for n in node.input[:2])
        for v in (a, b):
            if len(v.shape if isinstance(v, _Lin) else np.shape(v)) != 2:
                self.fail(node, "Gemm inputs must be 2-D")
        if attrs.get("transA", 0):
            a = self._transpose2(a)
        if attrs.get("transB", 0):
            b = self._transpose2(b)
        y = self._matmul(node, a, b)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if alpha != 1.0:
            y = y.scaled(np.full(y.size, alpha))
        if len(node.input) > 2 and node.input[2]:
            c = self.get(node, node.input[2])
            if isinstance(c, _Lin):
                self.fail(node, "a bias C that depends on the input is not supported")
            try:
                c = np.broadcast_to(beta * np.asarray(c, dtype=np.float64), y.shape).ravel()
            except ValueError:
                self.fail(node, f"bias of shape {list(np.shape(c))} does not fit {list(y.shape)}")
            y = _Lin(y.M, y.c + c, y.shape, y.seg)
        return y

    @staticmethod
    def _transpose2(v):
        if isinstance(v, _Lin):
            idx = np.arange(v.size).reshape(v.shape).T.ravel()
            return v.rows(idx, v.shape[::-1])
        return np.asarray(v).T

    # -- convolution and pooling ---------------------------------------------------------------
    def _geometry(self, node, attrs, x_shape, kernel):
        """A 1-D (``[1, C, L]``) or 2-D (``[1, C, H, W]``) window op as 2-D (1-D is 2-D with H = 1):
        ((H, W), kernel, strides, dilations, pads ``[top, left, bottom, right]``)."""
        nd = len(x_shape) - 2
        if nd not in (1, 2):
            self.fail(node, f"only 1-D and 2-D inputs [1, C, L] / [1, C, H, W] are supported, input "
                            f"{list(x_shape)}")
        if x_shape[0] != 1:
            self.fail(node, f"batch dimension must be 1, input {list(x_shape)}")
        kernel = [int(k) for k in kernel]
        strides = [int(s) for s in attrs.get("strides", [1] * nd)]
        dil = [int(d) for d in attrs.get("dilations", [1] * nd)]
        if not len(kernel) == len(strides) == len(dil) == nd:
            self.fail(node, f"kernel {kernel}, strides {strides} and dilations {dil} do not fit a {nd}-D input")
        size = [int(s) for s in x_shape[2:]]
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("NOTSET", ""):
            pads = [int(p) for p in attrs.get("pads", [0] * (2 * nd))]
            if len(pads) != 2 * nd:
                self.fail(node, f"pads {pads} do not fit a {nd}-D input")
        elif auto == "VALID":
            pads = [0] * (2 * nd)
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * (2 * nd)
            for i in range(nd):
                total = max((math.ceil(size[i] / strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1
                            - size[i], 0)
                small, big = total // 2, total - total // 2
                pads[i], pads[i + nd] = (small, big) if auto == "SAME_UPPER" else (big, small)
        else:
            self.fail(node, f"auto_pad {auto!r} is not supported")
        if nd == 1:
            size, kernel, strides, dil = [1] + size, [1] + kernel, [1] + strides, [1] + dil
            pads = [0, pads[0], 0, pads[1]]
        return tuple(size), kernel, strides, dil, pads

    def op_Conv(self, node, attrs):
        x = self.get(node, node.input[0])
        W = np.asarray(self.const(node, node.input[1], "the weight"), dtype=np.float64)
        if len(x.shape) not in (3, 4) or W.ndim != len(x.shape):
            self.fail(node, f"only 1-D and 2-D convolutions on [1, C, L] / [1, C, H, W] are supported, input "
                            f"{list(x.shape)}, weight {list(W.shape)}")
        bias = (np.asarray(self.const(node, node.input[2], "the bias"), dtype=np.float64).ravel()
                if len(node.input) > 2 and node.input[2] else np.zeros(W.shape[0]))
        group = int(attrs.get("group", 1))
        kshape = list(attrs.get("kernel_shape", W.shape[2:]))
        if kshape != list(W.shape[2:]):
            self.fail(node, f"kernel_shape {kshape} does not match the weight {list(W.shape)}")
        if x.shape[1] != W.shape[1] * group:
            self.fail(node, f"weight {list(W.shape)} with group {group} does not fit input {list(x.shape)}")
        size, kernel, strides, dil, pads = self._geometry(node, attrs, x.shape, kshape)
        Wc, out_shape = conv_matrix(W.reshape(W.shape[:2] + tuple(kernel)), (x.shape[1],) + size, strides, pads,
                                    dil, group)
        c = np.asarray(Wc @ x.c).ravel() + np.repeat(bias, out_shape[1] * out_shape[2])
        shape = out_shape if len(x.shape) == 4 else (out_shape[0], out_shape[2])
        return _Lin((Wc @ x.M).tocsr(), c, (1,) + tuple(shape), x.seg)

    @staticmethod
    def _pool_size(n: int, head: int, tail: int, k: int, s: int, d: int, ceil: bool) -> int:
        """The number of windows along one axis.  ``ceil_mode=1`` rounds up, so the last window may
        reach past the padded end and holds fewer elements; a window that would start past the
        input and its head padding is dropped (the operator's text, PyTorch's rule, and what
        onnxruntime and ``onnx.reference`` compute; onnx's shape inference keeps it)."""
        span = n + head + tail - d * (k - 1) - 1
        if span < 0:  # the kernel does not fit the padded input
            return 0
        if not ceil:
            return span // s + 1
        out = -(-span // s) + 1
        if (out - 1) * s >= n + head:
            out -= 1
        return out

    def op_MaxPool(self, node, attrs):
        x = self.get(node, node.input[0])
        if len(node.output) > 1 and node.output[1]:
            self.fail(node, "the Indices output is not supported")
        if "kernel_shape" not in attrs:
            self.fail(node, "has no kernel_shape")
        (H, W), (kH, kW), (sh, sw), (dh, dw), (top, left, bottom, right) = self._geometry(
            node, attrs, x.shape, attrs["kernel_shape"])
        C = x.shape[1]
        ceil = bool(attrs.get("ceil_mode", 0))
        Ho = self._pool_size(H, top, bottom, kH, sh, dh, ceil)
        Wo = self._pool_size(W, left, right, kW, sw, dw, ceil)
        if Ho <= 0 or Wo <= 0:
            self.fail(node, f"kernel {kH}x{kW} does not fit the padded {H}x{W} input")
        # the taps of window (oh, ow): input (oh*sh - top + kh*dh, ow*sw - left + kw*dw); taps in the
        # padding, or past the padded end in ceil mode, are left out (MaxPool pads with -inf)
        ih = (np.arange(Ho)[:, None] * sh - top + np.arange(kH)[None, :] * dh)[:, None, :, None]
        iw = (np.arange(Wo)[:, None] * sw - left + np.arange(kW)[None, :] * dw)[None, :, None, :]
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # (Ho, Wo, kH, kW)
        taps = np.where(inside, ih * W + iw, -1).reshape(1, Ho * Wo, kH * kW)
        windows = np.where(taps >= 0, taps + (np.arange(C) * (H * W))[:, None, None], -1).reshape(C * Ho * Wo, -1)
        shape = (1, C, Ho, Wo) if len(x.shape) == 4 else (1, C, Wo)
        return self._max_tree(node, x, windows, shape)

SUPPORTED_OPS = {name[3:] for name in dir(_Importer) if name.startswith("op_")}


def import_onnx(source, label: str | None = None, box=None) -> OnnxModel:
    """Import an ONNX ReLU network (path, .onnx.gz path, bytes or ModelProto) into the IR;
    ``label`` names it in error messages (default: the path).  ``box``: ``(lo, hi)`` of the
    flattened input, the only inputs the IR will be used on; comparisons (Greater, Equal, Cast to
    bool or an integer type, ...) that interval bounds over it decide become constants, and the
    IR equals the graph on the box only where ``box_decided`` of the result is non-zero."""
    proto, default_label = load_onnx_proto(source)
    return _Importer(proto, label or default_label, box).run()


def from_onnx(source) -> Network:
    """The IR of an ONNX ReLU network; its ``input_shape`` is the ONNX input shape without batch."""
    return import_onnx(source).net


# ===================================================================================== model loading

def is_onnx_path(path) -> bool:
    name = str(path).lower()
    return name.endswith(".onnx") or name.endswith(".onnx.gz")


def dataset_input_shape(imported: OnnxModel, dataset: str) -> tuple[int, int, int]:
    """The dataset's (C, H, W) if the ONNX input holds it in C, H, W order; else a one-line error.

    Accepted: the flat vector (``[1, 784]``, ``[1, 784, 1]``) or the image in CHW order with any
    size-1 dimensions added or removed (``[1, 1, 28, 28]``, ``[1, 28, 28]``, ``[1, 3, 32, 32]``)."""
    from .models import INPUT_SHAPE
    if dataset not in INPUT_SHAPE:
        raise HamverifyError(f"unknown dataset {dataset!r}; known: {', '.join(INPUT_SHAPE)}")
    chw = INPUT_SHAPE[dataset]
    got = tuple(s for s in imported.sample_shape if s != 1)
    if got not in ((int(np.prod(chw)),), tuple(s for s in chw if s != 1)):
        raise HamverifyError(f"{imported.source}: input shape {list(imported.input_dims)} does not hold a "
                             f"{dataset} image {list(chw)} in C, H, W order (channels-last inputs are not "
                             f"supported)")
    if imported.net.num_classes != 10:
        raise HamverifyError(f"{imported.source}: {imported.net.num_classes} outputs; {dataset} has 10 classes")
    return chw


def load_any_model(path, dataset: str | None = None):
    """``(torch module, input_shape, the model's own dataset or None, sha256)`` of a checkpoint or
    an ONNX file (``.onnx``/``.onnx.gz``).  An ONNX model records no dataset: ``dataset`` is
    required for it and fixes the input shape; a checkpoint uses its own."""
    from .models import INPUT_SHAPE, file_sha256, load_checkpoint
    if is_onnx_path(path):
        if not dataset:
            raise HamverifyError(f"{path}: an ONNX model needs --dataset (one of {', '.join(INPUT_SHAPE)}) "
                                 f"to know its inputs")
        from .ir_module import IRModule
        imported = import_onnx(path)
        shape = dataset_input_shape(imported, dataset)
        net = Network(imported.net.affines, shape)
        return IRModule(net).eval(), shape, None, file_sha256(path)
    model, meta = load_checkpoint(path)
    return model, INPUT_SHAPE[meta["dataset"]], meta["dataset"], file_sha256(path)


def onnx_verify_meta(path, dataset: str | None, eps) -> dict:
    """What ``hamverify verify`` reads from a checkpoint's metadata, for an ONNX model: it records
    neither a dataset nor an eps, so both must be given (one-line errors otherwise)."""
    from .models import INPUT_SHAPE
    if not pathlib.Path(path).is_file():
        raise HamverifyError(f"ONNX file not found: {path}")
    if not dataset:
        raise HamverifyError(f"{path}: an ONNX model needs --dataset (one of {', '.join(INPUT_SHAPE)})")
    if eps is None:
        raise HamverifyError(f"{path}: an ONNX model needs --eps (it records no eps)")
    return {"dataset": dataset, "eps": eps}


def __getattr__(name: str):
    # IRModule needs torch at class definition: import it (and torch) only when asked for.
    if name == "IRModule":
        from .ir_module import IRModule
        return IRModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
