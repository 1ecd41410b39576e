"""Reading ONNX protobufs without the cost of ``import onnx`` (issue 16, item 4: start-up).

``import onnx`` loads its whole helper API, and with it ``ml_dtypes`` (about half a second on the
2-core machine), while reading a ReLU network needs only the generated protobuf classes and the
conversion of a few tensor and attribute kinds.  So the generated module ``onnx/onnx_ml_pb2.py``
is loaded on its own, under its own name: a later ``import onnx`` in the same process (constant
folding with ``onnx.reference``, export) finds it in ``sys.modules`` and reuses it, so its
descriptors are registered once.  Anything this module does not convert itself (external tensor
data, strings, bfloat16 / float8, graph attributes) is handed to ``onnx``'s own helpers, so every
result equals what ``onnx.numpy_helper`` / ``onnx.helper`` would give.
"""
from __future__ import annotations

import importlib.util
import sys

import numpy as np

from . import HamverifyError

INSTALL_HINT = "pip install 'hamverify[onnx]'"
_PB2 = "onnx.onnx_ml_pb2"

# TensorProto.DataType -> (numpy dtype, the repeated field holding the values when not raw_data)
_TENSOR_TYPES = {
    1: (np.float32, "float_data"), 2: (np.uint8, "int32_data"), 3: (np.int8, "int32_data"),
    4: (np.uint16, "int32_data"), 5: (np.int16, "int32_data"), 6: (np.int32, "int32_data"),
    7: (np.int64, "int64_data"), 9: (np.bool_, "int32_data"), 11: (np.float64, "double_data"),
    12: (np.uint32, "uint64_data"), 13: (np.uint64, "uint64_data"),
}
_FLOAT16 = 10  # stored as its bit pattern in int32_data
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def pb2():
    """The generated ONNX protobuf module (``ModelProto``, ``TensorProto``, ...), without the rest of
    the ``onnx`` package unless that is already imported."""
    if _PB2 in sys.modules:  # loaded by this function or by `import onnx`
        return sys.modules[_PB2]
    try:
        spec = importlib.util.find_spec("onnx")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise HamverifyError(f"ONNX support needs the 'onnx' package: {INSTALL_HINT}")
    pb2_spec = importlib.util.spec_from_file_location(
        _PB2, f"{list(spec.submodule_search_locations)[0]}/onnx_ml_pb2.py")
    module = importlib.util.module_from_spec(pb2_spec)
    sys.modules[_PB2] = module
    try:
        pb2_spec.loader.exec_module(module)
    except Exception:
        del sys.modules[_PB2]
        raise
    return module


def tensor_to_array(tensor) -> np.ndarray:
    """``onnx.numpy_helper.to_array(tensor)`` for the numeric types a network's weights use."""
    kind = _TENSOR_TYPES.get(tensor.data_type)
    if tensor.data_type == _FLOAT16:
        kind = (np.float16, "int32_data")
    if kind is None or tensor.data_location == _EXTERNAL or tensor.HasField("segment"):
        from onnx import numpy_helper
        return numpy_helper.to_array(tensor)
    dtype, field = kind
    dims = tuple(int(d) for d in tensor.dims)
    if tensor.raw_data:
        return np.frombuffer(tensor.raw_data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(dims)
    values = getattr(tensor, field)
    if tensor.data_type == _FLOAT16:
        return np.asarray(values, dtype=np.uint16).view(np.float16).reshape(dims)
    return np.asarray(values, dtype=dtype).reshape(dims)


# AttributeProto.AttributeType -> how onnx.helper.get_attribute_value reads it
_ATTRIBUTE_READERS = {
    1: lambda a: a.f, 2: lambda a: a.i, 3: lambda a: a.s, 4: lambda a: a.t,
    6: lambda a: list(a.floats), 7: lambda a: list(a.ints), 8: lambda a: list(a.strings),
    9: lambda a: list(a.tensors),
}


def attribute_value(attr):
    """``onnx.helper.get_attribute_value(attr)``; the rare kinds (graphs, sparse tensors, types)
    go to onnx itself."""
    reader = _ATTRIBUTE_READERS.get(attr.type)
    if reader is None:
        from onnx import helper
        return helper.get_attribute_value(attr)
    return reader(attr)
