"""ONNX export and import (hamverify.onnx_io): round trips on every architecture, hand-built graphs
with each supported op checked against onnxruntime, refusals as one-line errors, and
`hamverify verify --model net.onnx`."""
from __future__ import annotations

import gzip
import json
import os
import pathlib
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hamverify import HamverifyError  # noqa: E402
from hamverify.cli import main  # noqa: E402
from hamverify.models import ARCHITECTURES, INPUT_SHAPE, build_model, save_checkpoint, tiny_mlp  # noqa: E402
from hamverify.network import from_torch  # noqa: E402
from hamverify.onnx_io import (IRModule, import_onnx, load_any_model, model_to_onnx, onnx_run,  # noqa: E402
                               onnx_session, save_onnx)

from conftest import shared_data_root  # noqa: E402

DATA = shared_data_root()
needs_mnist = pytest.mark.skipif(not (DATA / "mnist" / "test.npz").is_file(), reason="MNIST not available")
ARCH_DATASETS = [("cifar_small", "cifar10"), ("mnist_small", "mnist"), ("tiny_mlp", "mnist"), ("tiny_mlp", "cifar10"),
                 ("cifar_small_bn", "cifar10")]




def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


# ------------------------------------------------------------------------------------ export round trip

def test_every_architecture_is_covered():
    assert {a for a, _ in ARCH_DATASETS} == set(ARCHITECTURES)


@pytest.mark.parametrize("arch,dataset", ARCH_DATASETS)
def test_export_import_round_trip(arch, dataset):
    torch.manual_seed(0)
    model = build_model(arch, dataset).eval()
    shape = INPUT_SHAPE[dataset]
    proto = model_to_onnx(model, shape)
    x = np.random.default_rng(1).random((3, *shape))
    with torch.no_grad():
        ref32 = model(torch.from_numpy(x).float()).numpy()
        ref64 = model.double()(torch.from_numpy(x)).numpy()
    model.float()
    session = onnx_session(proto)
    assert np.abs(onnx_run(session, x) - ref32).max() < 1e-5  # dynamic batch of 3
    assert np.abs(onnx_run(session, x[:1]) - ref32[:1]).max() < 1e-5
    imported = import_onnx(proto)
    assert imported.net.input_shape == shape and imported.input_dims == (1, *shape)
    assert np.abs(imported.net.forward(x) - ref64).max() < 1e-5
    # The IR's torch module gives the IR back (the Verifier builds it with from_torch).
    module = IRModule(imported.net)
    with torch.no_grad():
        assert np.abs(module(torch.from_numpy(x)).numpy() - ref64).max() < 1e-9
    again = from_torch(module, shape)
    assert np.abs(again.forward(x) - ref64).max() < 1e-5


def test_export_cli_and_checkpoint_metadata(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", tiny_mlp("mnist"), arch="tiny_mlp", dataset="mnist", eps=0.1)
    res = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    proto = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["hamverify.dataset"] == "mnist" and meta["hamverify.arch"] == "tiny_mlp"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    res = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "not found" in res.output


# ------------------------------------------------------------------------------- hand-built graphs

def _model(nodes, inits, in_dims, out_dims=None, opset=13, in_name="x"):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def _f32(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _check(proto, n=5, seed=0, tol=1e-5):
    """IR (float64) vs onnxruntime (float32) on random inputs in [0, 1]."""
    imported = import_onnx(proto)
    dims = imported.input_dims
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.random(dims).astype(np.float32)
        ort = onnx_run(onnx_session(proto), x).ravel()
        ir = imported.net.forward(x.astype(np.float64).reshape(1, -1))[0]
        assert ir.shape == ort.shape
        assert np.abs(ir - ort).max() < tol * (1 + np.abs(ort).max())
    return imported


def test_matmul_add_relu_with_flat_input():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["h2"], name="add1"),
             helper.make_node("Relu", ["h2"], ["r"], name="relu1"),
             helper.make_node("MatMul", ["r", "W2"], ["o"], name="mm2"),
             helper.make_node("Add", ["b2", "o"], ["y"], name="add2")]  # constant on the left
    proto = _model(nodes, {"W1": _f32(rng, 6, 5), "b1": _f32(rng, 5), "W2": _f32(rng, 5, 3), "b2": _f32(rng, 3)},
                   [1, 6], [1, 3])
    imported = _check(proto)
    assert imported.net.input_shape == (6,) and imported.net.relu_layer_sizes == [5]


def test_sub_div_normalization_conv_batchnorm_flatten_gemm_transb():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Sub", ["x", "mean"], ["a"], name="norm_sub"),
             helper.make_node("Div", ["a", "std"], ["b"], name="norm_div"),
             helper.make_node("Conv", ["b", "cw", "cb"], ["c"], name="conv", strides=[2, 1], pads=[1, 0, 2, 1],
                              kernel_shape=[3, 2]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["d"], name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["d"], ["e"], name="relu"),
             helper.make_node("Conv", ["e", "cw2"], ["f"], name="conv2", auto_pad="SAME_UPPER", strides=[2, 2],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["f"], ["g"], name="relu2"),
             helper.make_node("Flatten", ["g"], ["h"], name="flat"),
             helper.make_node("Gemm", ["h", "W", "bias"], ["y"], name="fc", transB=1, alpha=0.7, beta=1.5)]
    conv_out = 4 * 2 * 3  # conv1 -> [3, 4, 5]; conv2 (SAME_UPPER, stride 2) -> [4, 2, 3]
    proto = _model(nodes, {
        "mean": np.array([0.4, 0.5], np.float32).reshape(1, 2, 1, 1),
        "std": np.array([0.2, 0.3], np.float32).reshape(1, 2, 1, 1),
        "cw": _f32(rng, 3, 2, 3, 2), "cb": _f32(rng, 3),
        "s": _f32(rng, 3) + 1, "bb": _f32(rng, 3), "m": _f32(rng, 3), "v": np.abs(_f32(rng, 3)) + 0.5,
        "cw2": _f32(rng, 4, 3, 3, 3)}, [1, 2, 6, 5], [1, 5])
    proto.graph.initializer.extend([numpy_helper.from_array(_f32(rng, 5, conv_out), "W"),
                                    numpy_helper.from_array(_f32(rng, 5), "bias")])
    imported = _check(proto)
    assert imported.net.input_shape == (2, 6, 5) and len(imported.net.affines) == 3


def test_transpose_reshape_squeeze_unsqueeze_identity_mul_and_constant_folding():
    rng = np.random.default_rng(2)
    shape_const = numpy_helper.from_array(np.array([1, -1], np.int64), "shp")
    nodes = [
        # NCHW -> NHWC with C = 1: a Transpose that only reshapes
        helper.make_node("Transpose", ["x"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Identity", ["t"], ["t2"], name="ident"),
        helper.make_node("Mul", ["t2", "k"], ["t3"], name="scale"),
        # a real transpose (H <-> W), exact as a permutation
        helper.make_node("Transpose", ["t3"], ["t4"], name="swap_hw", perm=[0, 2, 1, 3]),
        # Shape -> Gather -> Unsqueeze -> Concat -> Reshape: the flatten pattern of torch exports
        helper.make_node("Shape", ["t4"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["s0"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["s0", "ax0"], ["s1"], name="unsq_shape"),
        helper.make_node("Concat", ["s1", "minus1"], ["s2"], name="concat", axis=0),
        helper.make_node("Reshape", ["t4", "s2"], ["flat"], name="reshape"),
        helper.make_node("Constant", [], ["W1"], name="const_w", value=numpy_helper.from_array(_f32(rng, 12, 7))),
        helper.make_node("Gemm", ["flat", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Unsqueeze", ["r", "ax2"], ["u"], name="unsq"),  # [1, 7, 1]
        helper.make_node("Squeeze", ["u", "ax2"], ["q"], name="sq"),
        helper.make_node("Reshape", ["q", "shp"], ["q2"], name="reshape2"),
        helper.make_node("Gemm", ["W2", "q2"], ["yt"], name="fc2", transA=1, transB=1),  # constant on the left
        helper.make_node("Transpose", ["yt"], ["y"], name="out_t", perm=[1, 0]),
    ]
    proto = _model(nodes, {"k": np.array([2.0], np.float32), "zero": np.array(0, np.int64),
                           "ax0": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
                           "ax2": np.array([2], np.int64), "W2": _f32(rng, 7, 4)}, [1, 1, 3, 4], [4, 1])
    proto.graph.initializer.append(shape_const)
    imported = _check(proto)
    assert imported.net.input_shape == (1, 3, 4) and imported.net.num_classes == 4


def test_input_shapes_symbolic_batch_trailing_one_and_relu_on_input(tmp_path):
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Squeeze", ["x", "ax"], ["s"], name="sq"),
             helper.make_node("Relu", ["s"], ["r0"], name="relu_in"),
             helper.make_node("Gemm", ["r0", "W", "b"], ["h"], name="fc", transB=1),
             helper.make_node("Relu", ["h"], ["y"], name="relu_out")]  # the output is post-ReLU
    proto = _model(nodes, {"ax": np.array([2], np.int64), "W": _f32(rng, 3, 5), "b": _f32(rng, 3)},
                   ["batch", 5, 1], ["batch", 3])
    imported = _check(proto)
    assert imported.input_dims == (1, 5, 1) and imported.net.input_shape == (5, 1)
    # .onnx.gz on disk
    path = tmp_path / "net.onnx.gz"
    path.write_bytes(gzip.compress(proto.SerializeToString()))
    assert import_onnx(path).net.input_size == 5


def test_opset_11_squeeze_with_axes_attribute():
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], name="unsq", axes=[2]),
             helper.make_node("Squeeze", ["u"], ["s"], name="sq", axes=[2]),
             helper.make_node("Gemm", ["s", "W"], ["h"], name="fc"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Sub", ["r", "c"], ["y"], name="sub")]
    _check(_model(nodes, {"W": _f32(rng, 4, 3), "c": _f32(rng, 3)}, [1, 4], [1, 3], opset=11))


# -------------------------------------------------------------------------------------------- refusals

def test_unsupported_ops_name_the_op_and_node():
    rng = np.random.default_rng(0)
    sig = _model([helper.make_node("Sigmoid", ["x"], ["a"], name="act7"),
                  helper.make_node("Flatten", ["a"], ["f"], name="flat"),
                  helper.make_node("Gemm", ["f", "W"], ["y"], name="fc")], {"W": _f32(rng, 16, 2)}, [1, 1, 4, 4], [1, 2])
    with pytest.raises(HamverifyError) as exc:
        import_onnx(sig)
    assert "Sigmoid" in one_line(exc) and "act7" in str(exc.value)
    pool = _model([helper.make_node("MaxPool", ["x"], ["a", "idx"], name="pool1", kernel_shape=[2, 2],
                                     strides=[2, 2]),
                   helper.make_node("Flatten", ["a"], ["f"], name="flat"),
                   helper.make_node("Gemm", ["f", "W"], ["y"], name="fc")], {"W": _f32(rng, 4, 2)}, [1, 1, 4, 4], [1, 2])
    with pytest.raises(HamverifyError) as exc:
        import_onnx(pool)
    assert "MaxPool" in one_line(exc) and "pool1" in str(exc.value) and "Indices" in str(exc.value)
    square = _model([helper.make_node("Mul", ["x", "x"], ["y"], name="sq")], {}, [1, 3], [1, 3])
    with pytest.raises(HamverifyError) as exc:
        import_onnx(square)
    assert "not piecewise linear" in one_line(exc)
    skip = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                   helper.make_node("Add", ["r", "x"], ["y"], name="residual")], {}, [1, 3], [1, 3])
    with pytest.raises(HamverifyError) as exc:
        import_onnx(skip)
    assert "skip connections" in one_line(exc)


def test_malformed_onnx_is_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04junk\xff\xff\xff\xff\xff")
    with pytest.raises(HamverifyError) as exc:
        import_onnx(bad)
    assert "bad.onnx" in one_line(exc)
    torch.manual_seed(0)
    good = model_to_onnx(tiny_mlp("mnist"), (1, 28, 28)).SerializeToString()
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(HamverifyError) as exc:
        import_onnx(truncated)
    assert "trunc.onnx" in one_line(exc)
    with pytest.raises(HamverifyError) as exc:
        import_onnx(tmp_path / "missing.onnx")
    assert "not found" in one_line(exc)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(HamverifyError) as exc:
        import_onnx(empty)
    one_line(exc)


def test_missing_onnx_package_is_one_line(monkeypatch):
    from hamverify import onnx_io
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(HamverifyError) as exc:
        onnx_io.require_onnx()
    assert "hamverify[onnx]" in one_line(exc)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(HamverifyError) as exc:
        onnx_io.require_onnxruntime()
    assert "hamverify[onnx]" in one_line(exc)


# ------------------------------------------------------------------------------------- load_any_model

@pytest.mark.parametrize("dims,dataset,ok", [
    ([1, 784], "mnist", True), ([1, 784, 1], "mnist", True), ([1, 1, 28, 28], "mnist", True),
    (["N", 28, 28], "mnist", True), ([1, 3, 32, 32], "cifar10", True), ([1, 3072], "cifar10", True),
    ([1, 32, 32, 3], "cifar10", False), ([1, 1, 28, 28], "cifar10", False)])
def test_load_any_model_input_shapes(tmp_path, dims, dataset, ok):
    rng = np.random.default_rng(0)
    n = int(np.prod([d for d in dims if isinstance(d, int)]))
    nodes = [helper.make_node("Reshape", ["x", "shp"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "W"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2"], ["y"], name="fc2")]
    proto = _model(nodes, {"shp": np.array([1, -1], np.int64), "W": _f32(rng, n, 4, scale=0.05),
                           "W2": _f32(rng, 4, 10)}, dims, [1, 10])
    path = save_onnx(proto, tmp_path / "m.onnx")
    if not ok:
        with pytest.raises(HamverifyError) as exc:
            load_any_model(path, dataset)
        assert "C, H, W" in one_line(exc)
        return
    module, shape, own_dataset, sha = load_any_model(path, dataset)
    assert shape == INPUT_SHAPE[dataset] and own_dataset is None and len(sha) == 64
    x = rng.random((2, *shape))
    with torch.no_grad():
        out = module(torch.from_numpy(x)).numpy()
    session = onnx_session(proto)
    in_dims = [1 if isinstance(d, str) else d for d in dims]
    ort = np.vstack([onnx_run(session, xi.reshape(in_dims)) for xi in x])
    assert np.abs(out - ort).max() < 1e-5
    with pytest.raises(HamverifyError) as exc:
        load_any_model(path, None)
    assert "--dataset" in one_line(exc)


# ------------------------------------------------------------------------------------- verify via CLI

@needs_mnist
def test_cli_verify_onnx_matches_checkpoint(tmp_path):
    from hamverify.data import load_dataset
    x, y = load_dataset("mnist", "test", DATA)  # a few steps on images 100..2099: most of 0..4 right
    xt = torch.from_numpy(np.transpose(x[100:2100], (0, 3, 1, 2)).astype(np.float32) / 255)
    yt = torch.from_numpy(y[100:2100].astype(np.int64))
    torch.manual_seed(0)
    model = tiny_mlp("mnist")
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(150):
        idx = torch.arange(step * 100, step * 100 + 100) % len(xt)
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_checkpoint(tmp_path / "m.pt", model, arch="tiny_mlp", dataset="mnist", eps=0.05)
    runner = CliRunner()
    env = {"HAMVERIFY_DATA": str(DATA)}
    assert runner.invoke(main, ["export", "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.onnx")],
                         env=env).exit_code == 0
    common = ["--eps", "0.05", "--count", "5", "--timeout", "20", "--quiet", "--json"]
    res_onnx = runner.invoke(main, ["verify", "--model", str(tmp_path / "m.onnx"), "--dataset", "mnist",
                                    "--results", str(tmp_path / "o.jsonl"), *common], env=env)
    assert res_onnx.exit_code == 0, res_onnx.output
    res_ckpt = runner.invoke(main, ["verify", "--model", str(tmp_path / "m.pt"),
                                    "--results", str(tmp_path / "c.jsonl"), *common], env=env)
    assert res_ckpt.exit_code == 0, res_ckpt.output

    def statuses(path):
        return [(r["index"], r["status"], r["predicted"]) for r in map(json.loads, open(path))]

    assert len(statuses(tmp_path / "o.jsonl")) == 5
    assert sum(s != "misclassified" for _, s, _ in statuses(tmp_path / "o.jsonl")) >= 3
    assert sorted(statuses(tmp_path / "o.jsonl")) == sorted(statuses(tmp_path / "c.jsonl"))
    # ONNX records neither dataset nor eps: both are required, each a one-line error.
    for args, needle in ((["--eps", "0.05"], "--dataset"), (["--dataset", "mnist"], "--eps")):
        res = runner.invoke(main, ["verify", "--model", str(tmp_path / "m.onnx"), *args], env=env)
        assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1
