"""ONNX in and out (issue 7): export a checkpoint, import a ReLU network into the IR, and rebuild a
torch module from an IR so that the per-input pipeline (PGD, float64 validation) runs on it.

Export writes the model's own graph with ``onnx.helper`` (Normalize -> Sub/Div, Conv2d -> Conv,
BatchNorm2d -> BatchNormalization, Flatten, Linear -> Gemm(transB=1), ReLU -> Relu), opset 13,
IR version 8, input ``input`` of shape ``[N, C, H, W]`` in [0, 1] with a dynamic batch ``N``.
It does not go through ``torch.onnx`` (whose exporter changes from one torch release to the next).

Import executes the graph symbolically, for one sample (a symbolic or leading 1 batch dimension is
fixed to 1): every tensor is either a constant (numpy) or an affine function ``M @ v + c`` of the
current *segment* variables ``v`` (the flattened network input, or the output of the last Relu),
with ``M`` a CSR matrix.  ``Relu`` closes a segment into one ``Affine(M, c)`` of the IR; the graph
output closes the last.  Supported on the data path: Gemm, MatMul, Add, Sub, Mul and Div by
constants (or Add/Sub of two tensors of the same segment), Neg, Conv (2-D, unrolled exactly),
BatchNormalization (folded), Relu, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity, Shape.
Transpose is a row permutation, so it is exact whatever it permutes.  Nodes whose inputs are all
constants (Constant, shape arithmetic, ...) are evaluated by ``onnx.reference``.  Anything else on
the data path raises a one-line :class:`HamverifyError` naming the op and the node.  A graph output
that does not depend on the input is imported as zero weights plus its value (a constant network).

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

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.net.input_shape


class _Importer:
    def __init__(self, proto, label: str):
        self.label = label
        self.proto = proto
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
    def fail(self, node, message: str):
        raise HamverifyError(f"{self.label}: node {node.name or '(unnamed)'!r} ({node.op_type}): {message}")

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
                self.fail(node, "uses a tensor from before a Relu (skip connections across ReLUs are not "
                                "supported)")

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
        if not isinstance(out, _Lin):
            raise HamverifyError(f"{self.label}: output {out_name!r} is not produced by any node")
        if out.seg != self.seg:
            raise HamverifyError(f"{self.label}: output {out_name!r} skips the last Relu (not supported)")
        self.close(out)
        net = Network(tuple(self.affines), tuple(sample) if sample else (1,))
        return OnnxModel(net=net, input_name=inp.name, input_dims=dims, output_name=out_name,
                         output_dims=out.shape, input_dtype="float64" if tt.elem_type == TensorProto.DOUBLE
                         else "float32", opset=self.opset, source=self.label)

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
        if not any(isinstance(v, _Lin) for v in ins):
            outs = self.fold(node)
        else:
            handler = getattr(self, f"op_{node.op_type}", None)
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
            self.fail(node, "multiplies two tensors that both depend on the input (not piecewise linear)")
        lin, k = (a, b) if isinstance(a, _Lin) else (b, a)
        return lin.scaled(np.asarray(k, dtype=np.float64))

    def op_Div(self, node, attrs):
        a, b, shape = self._binary(node)
        if isinstance(b, _Lin):
            self.fail(node, "divides by a tensor that depends on the input (not piecewise linear)")
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

    # -- matrix products -------------------------------------------------------------------
    def _matmul(self, node, a, b):
        if isinstance(a, _Lin) and isinstance(b, _Lin):
            self.fail(node, "multiplies two tensors that both depend on the input (not piecewise linear)")
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

    # -- convolution -----------------------------------------------------------------------
    def op_Conv(self, node, attrs):
        x = self.get(node, node.input[0])
        W = np.asarray(self.const(node, node.input[1], "the weight"), dtype=np.float64)
        if len(x.shape) != 4 or W.ndim != 4:
            self.fail(node, f"only 2-D convolutions on [1, C, H, W] are supported, input {list(x.shape)}")
        if x.shape[0] != 1:
            self.fail(node, f"batch dimension must be 1, input {list(x.shape)}")
        bias = (np.asarray(self.const(node, node.input[2], "the bias"), dtype=np.float64).ravel()
                if len(node.input) > 2 and node.input[2] else np.zeros(W.shape[0]))
        group = int(attrs.get("group", 1))
        strides = list(attrs.get("strides", [1, 1]))
        dil = list(attrs.get("dilations", [1, 1]))
        kshape = list(attrs.get("kernel_shape", W.shape[2:]))
        if kshape != list(W.shape[2:]):
            self.fail(node, f"kernel_shape {kshape} does not match the weight {list(W.shape)}")
        if x.shape[1] != W.shape[1] * group:
            self.fail(node, f"weight {list(W.shape)} with group {group} does not fit input {list(x.shape)}")
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        H, Wd = x.shape[2:]
        if auto in ("NOTSET", ""):
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
        elif auto == "VALID":
            pads = [0, 0, 0, 0]
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0, 0, 0, 0]
            for i, size in enumerate((H, Wd)):
                total = max((math.ceil(size / strides[i]) - 1) * strides[i] + (kshape[i] - 1) * dil[i] + 1 - size, 0)
                small, big = total // 2, total - total // 2
                pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
        else:
            self.fail(node, f"auto_pad {auto!r} is not supported")
        Wc, out_shape = conv_matrix(W, x.shape[1:], strides, pads, dil, group)
        c = np.asarray(Wc @ x.c).ravel() + np.repeat(bias, out_shape[1] * out_shape[2])
        return _Lin((Wc @ x.M).tocsr(), c, (1,) + out_shape, x.seg)


SUPPORTED_OPS = {name[3:] for name in dir(_Importer) if name.startswith("op_")}


def import_onnx(source, label: str | None = None) -> OnnxModel:
    """Import an ONNX ReLU network (path, .onnx.gz path, bytes or ModelProto) into the IR;
    ``label`` names it in error messages (default: the path)."""
    proto, default_label = load_onnx_proto(source)
    return _Importer(proto, label or default_label).run()


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
