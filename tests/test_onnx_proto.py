"""hamverify.onnx_proto: ONNX read with the generated protobuf classes alone gives what onnx's own
helpers give, and a `vnnlib` process that the bounds decide imports neither torch nor onnx."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

from hamverify import onnx_proto  # noqa: E402

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16,
          np.uint32, np.uint64, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("raw", [True, False], ids=["raw_data", "typed_field"])
def test_tensor_to_array_matches_numpy_helper(dtype, raw):
    rng = np.random.default_rng(3)
    value = (rng.normal(size=(2, 3, 4)) * 50).astype(dtype)
    tensor = numpy_helper.from_array(value, "w")
    if not raw:  # the same values in the typed repeated field (as hand-written models store them)
        tensor = helper.make_tensor("w", tensor.data_type, value.shape,
                                    value.view(np.uint16).ravel().tolist() if dtype == np.float16
                                    else value.ravel().tolist())
    got = onnx_proto.tensor_to_array(tensor)
    ref = numpy_helper.to_array(tensor)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    got[...] = 0  # a writable copy, never a view of the protobuf's bytes


def test_scalar_and_unusual_tensors_fall_back_to_onnx():
    scalar = numpy_helper.from_array(np.asarray(2.5, dtype=np.float32), "s")
    assert onnx_proto.tensor_to_array(scalar).shape == () and float(onnx_proto.tensor_to_array(scalar)) == 2.5
    strings = helper.make_tensor("t", onnx.TensorProto.STRING, [2], [b"a", b"b"])
    assert list(onnx_proto.tensor_to_array(strings)) == list(numpy_helper.to_array(strings))


def test_attribute_value_matches_helper():
    tensor = numpy_helper.from_array(np.arange(3, dtype=np.float32), "t")
    node = helper.make_node("Conv", ["x", "w"], ["y"], alpha=0.5, group=2, auto_pad="SAME_UPPER",
                            pads=[1, 0, 1, 0], scales=[0.5, 2.0], names=["a", "b"], value=tensor, values=[tensor])
    for attr in node.attribute:
        got, ref = onnx_proto.attribute_value(attr), helper.get_attribute_value(attr)
        assert type(got) is type(ref) and got == ref, attr.name


def test_fresh_process_reads_without_onnx_then_onnx_imports_cleanly(tmp_path):
    """The light module first, then the full package in the same process: one descriptor
    registration, and onnx's own classes are the light ones."""
    path = tmp_path / "m.onnx"
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path.write_bytes(helper.make_model(graph).SerializeToString())
    code = ("import sys; from hamverify import onnx_proto; pb = onnx_proto.pb2(); "
            f"m = pb.ModelProto.FromString(open({str(path)!r}, 'rb').read()); "
            "before = 'onnx' in sys.modules; import onnx, onnx.reference; "
            "print(before, isinstance(m, onnx.ModelProto), onnx.ModelProto is pb.ModelProto)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]


def test_vnnlib_decided_by_bounds_imports_neither_torch_nor_onnx(tmp_path):
    """The start-up property of issue 16 item 4: proving an instance by the symbolic bounds needs
    numpy and scipy only (no torch, onnx, onnxruntime or highspy import)."""
    pytest.importorskip("onnxruntime")
    import torch

    from hamverify.ir_module import IRModule
    from hamverify.models import tiny_mlp
    from hamverify.network import from_torch
    from hamverify.onnx_io import model_to_onnx, save_onnx
    torch.manual_seed(0)
    model = tiny_mlp("mnist").eval()
    net = from_torch(model, (1, 28, 28))
    onnx_path = save_onnx(model_to_onnx(IRModule(net).float(), net.input_shape), tmp_path / "n.onnx")
    x = np.full(784, 0.5)
    label = int(np.argmax(net.forward(x[None])[0]))
    lines = [f"(declare-const X_{i} Real)" for i in range(784)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(10)]
    lines += [f"(assert (>= X_{i} {v - 1e-4}))\n(assert (<= X_{i} {v + 1e-4}))" for i, v in enumerate(x)]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(10) if j != label) + "))")
    spec = tmp_path / "p.vnnlib"
    spec.write_text("\n".join(lines) + "\n")
    code = ("import sys, json\nfrom hamverify.cli import main\ntry:\n    main(['vnnlib', '--onnx', sys.argv[1], "
            "'--vnnlib', sys.argv[2]])\nexcept SystemExit:\n    pass\nprint(json.dumps(sorted(m for m in "
            "('torch', 'onnx', 'onnxruntime', 'highspy') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(onnx_path), str(spec)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    verdict, imported = out.stdout.strip().splitlines()[0], json.loads(out.stdout.strip().splitlines()[-1])
    assert verdict == "unsat"
    assert imported == []
