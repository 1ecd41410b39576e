"""The importer's row-selection, reduction and piecewise-linear ops (issue 17, item 3): every op on
hand-built graphs against onnxruntime, MaxPool's ReLU encoding under the bounds and the MILP
(``solve_instance`` verdicts known by construction), and networks that are not piecewise linear
answering ``unknown``."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hamverify import HamverifyError  # noqa: E402
from hamverify.bounds import output_bounds, symbolic_bounds, unstable_counts  # noqa: E402
from hamverify.onnx_io import NonLinearModel, import_onnx, onnx_run, onnx_session  # noqa: E402
from hamverify.vnncomp import solve_instance  # noqa: E402

INT64_MAX = np.iinfo(np.int64).max


def _graph(nodes, inits, in_dims, opset, elem, out="y"):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", elem, in_dims)],
        [helper.make_tensor_value_info(out, elem, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def build(nodes, inits, in_dims, opset=13, double=False, head=True, seed=0):
    """``nodes`` map ``x`` to ``h``; with ``head``, ``h`` goes on through Reshape [1, -1], Relu and a
    random MatMul + Add to 3 outputs (so that the op's output feeds one more affine map)."""
    elem, dtype = (TensorProto.DOUBLE, np.float64) if double else (TensorProto.FLOAT, np.float32)
    inits = {k: (v.astype(dtype) if np.asarray(v).dtype.kind == "f" else v) for k, v in inits.items()}
    if not head:
        return _graph(nodes + [helper.make_node("Identity", ["h"], ["y"], name="out")], inits, in_dims, opset, elem)
    nodes = nodes + [helper.make_node("Reshape", ["h", "head_shape"], ["hf"], name="head_flat")]
    inits = {**inits, "head_shape": np.array([1, -1], np.int64)}
    probe = _graph(nodes, inits, in_dims, opset, elem, out="hf")
    n = onnx_run(onnx_session(probe), np.zeros([d if isinstance(d, int) else 1 for d in in_dims])).size
    rng = np.random.default_rng(seed + 100)
    nodes = nodes + [helper.make_node("Relu", ["hf"], ["hr"], name="head_relu"),
                     helper.make_node("MatMul", ["hr", "head_W"], ["hm"], name="head_mm"),
                     helper.make_node("Add", ["hm", "head_b"], ["y"], name="head_add")]
    inits = {**inits, "head_W": (rng.standard_normal((n, 3)) * 0.5).astype(dtype),
             "head_b": (rng.standard_normal(3) * 0.5).astype(dtype)}
    return _graph(nodes, inits, in_dims, opset, elem)


def check(proto, n=16, seed=0, tol=1e-5):
    """The IR (float64) against onnxruntime on ``n`` random inputs in [-1, 1]: max abs difference."""
    imported = import_onnx(proto)
    session = onnx_session(proto)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(n):
        x = rng.uniform(-1, 1, imported.input_dims)
        ort = onnx_run(session, x).ravel().astype(np.float64)
        x_fed = x.astype(np.float64 if imported.input_dtype == "float64" else np.float32).astype(np.float64)
        ir = imported.net.forward(x_fed.reshape(1, -1))[0]
        assert ir.shape == ort.shape
        worst = max(worst, float(np.abs(ir - ort).max()))
    assert worst < tol, worst
    return imported


def w(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def conv(name, x, out, weight, **kw):
    return helper.make_node("Conv", [x, weight], [out], name=name, **kw)


# ------------------------------------------------------------------------------------ row selections

SLICES = [  # (starts, ends, axes, steps): on [1, 3, 6, 5]
    ([1, -1, 0], [3, -7, 5], [1, -1, 2], [1, -2, 2]),  # negative axis, negative end and step, step 2
    ([0, 1], [INT64_MAX, 3], None, None),  # default axes and steps, "to the end"
    ([100], [-100], [2], [-1]),  # reversed: both ends clamped
    ([-2, 4], [-100, 0], [-3, 3], [-3, -1]),  # negative start with step -3
    ([-100], [-100], [2], [-1]),  # ONNX clamps a start before the beginning to 0 (Python: empty)
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice_opset13_inputs(starts, ends, axes, steps):
    rng = np.random.default_rng(0)
    inits = {"st": np.array(starts, np.int64), "en": np.array(ends, np.int64), "cw": w(rng, 3, 3, 1, 1)}
    ins = ["c", "st", "en"] + (["ax"] if axes is not None else ([""] if steps is not None else []))
    if axes is not None:
        inits["ax"] = np.array(axes, np.int64)
    if steps is not None:
        ins.append("sp")
        inits["sp"] = np.array(steps, np.int64)
    nodes = [conv("conv", "x", "c", "cw"), helper.make_node("Slice", ins, ["h"], name="slice")]
    check(build(nodes, inits, [1, 3, 6, 5]))


def test_slice_opset9_attributes_and_double():
    nodes = [helper.make_node("Slice", ["x"], ["h"], name="slice", starts=[0, 1, -3], ends=[1, 4, 100],
                              axes=[0, 3, 2])]
    check(build(nodes, {}, [1, 2, 5, 6], opset=9, head=False, double=True), tol=1e-12)
    check(build(nodes, {}, [1, 2, 5, 6], opset=9))


def test_concat_of_input_conv_and_constant():
    rng = np.random.default_rng(1)
    nodes = [conv("conv", "x", "c", "cw", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["c", "K", "x"], ["k1"], name="cat_channels", axis=-3),
             helper.make_node("Concat", ["K2", "k1"], ["h"], name="cat_width", axis=3)]
    check(build(nodes, {"cw": w(rng, 3, 2, 3, 3), "K": w(rng, 1, 2, 4, 4), "K2": w(rng, 1, 7, 4, 2)},
                [1, 2, 4, 4]))


@pytest.mark.parametrize("opset,how", [(13, "input"), (11, "attribute"), (18, "num_outputs")])
def test_split(opset, how):
    rng = np.random.default_rng(2)
    inits = {"cw": w(rng, 6, 2, 1, 1)}
    if how == "input":
        inits["sp"] = np.array([1, 2, 3], np.int64)
        split = helper.make_node("Split", ["c", "sp"], ["s0", "s1", "s2"], name="split", axis=1)
        axis = 1
    elif how == "attribute":
        split = helper.make_node("Split", ["c"], ["s0", "s1", "s2"], name="split", axis=-3, split=[3, 1, 2])
        axis = 1
    else:  # 5 = 2 + 2 + 1
        split = helper.make_node("Split", ["c"], ["s0", "s1", "s2"], name="split", axis=-1, num_outputs=3)
        axis = 3
    nodes = [conv("conv", "x", "c", "cw"), split,
             helper.make_node("Concat", ["s2", "s0", "s1"], ["h"], name="cat", axis=axis)]
    check(build(nodes, inits, [1, 2, 4, 5], opset=opset))


def test_gather_any_axis_negative_and_scalar_indices():
    rng = np.random.default_rng(3)
    nodes = [conv("conv", "x", "c", "cw"),
             helper.make_node("Gather", ["c", "i1"], ["g1"], name="g1", axis=1),  # [1, 4, 4, 5]
             helper.make_node("Gather", ["g1", "i2"], ["g2"], name="g2", axis=2),  # [1, 4, 2, 2, 5]
             helper.make_node("Gather", ["g2", "i3"], ["h"], name="g3", axis=-1)]  # [1, 4, 2, 2]
    check(build(nodes, {"cw": w(rng, 3, 2, 1, 1), "i1": np.array([2, -1, 0, 0], np.int64),
                        "i2": np.array([[0, 3], [-1, 1]], np.int64), "i3": np.array(-2, np.int64)},
                [1, 2, 4, 5]))


@pytest.mark.parametrize("shape", [[2, 1, 5, 1], [5, 4], [1]])
def test_expand(shape):
    nodes = [helper.make_node("Expand", ["x", "shp"], ["h"], name="expand")]
    check(build(nodes, {"shp": np.array(shape, np.int64)}, [1, 3, 1, 4]))


def test_where_with_constant_condition():
    rng = np.random.default_rng(4)
    nodes = [conv("conv", "x", "c", "cw", pads=[1, 1, 1, 1]),
             conv("conv2", "x", "c2", "cw2", pads=[1, 1, 1, 1]),
             helper.make_node("Where", ["cond1", "c", "K"], ["w1"], name="where_lin_const"),
             helper.make_node("Where", ["cond2", "quarter", "x"], ["w2"], name="where_const_lin"),  # broadcast
             helper.make_node("Where", ["cond1", "c", "c2"], ["w3"], name="where_lin_lin"),
             helper.make_node("Concat", ["w1", "w2", "w3"], ["h"], name="cat", axis=1)]
    check(build(nodes, {"cw": w(rng, 3, 2, 3, 3), "cw2": w(rng, 3, 2, 3, 3), "K": w(rng, 1, 3, 4, 4),
                        "quarter": np.array(0.25, np.float32), "cond1": rng.random((1, 3, 4, 4)) < 0.5,
                        "cond2": np.array([[True], [False], [True], [False]])}, [1, 2, 4, 4]))


def test_pad_constant_value_input_negative_and_axes():
    rng = np.random.default_rng(5)
    # begins [0, 0, 1, -1], ends [0, 1, 2, 0]: [1, 2, 4, 4] -> [1, 3, 7, 3], filled with 0.7
    nodes = [conv("conv", "x", "c", "cw"),
             helper.make_node("Pad", ["c", "pads", "val"], ["h"], name="pad")]
    check(build(nodes, {"cw": w(rng, 2, 2, 1, 1), "pads": np.array([0, 0, 1, -1, 0, 1, 2, 0], np.int64),
                        "val": np.array(0.7, np.float32)}, [1, 2, 4, 4]))
    nodes = [helper.make_node("Pad", ["x", "pads", "val", "axes"], ["p"], name="pad18"),
             conv("conv", "p", "h", "cw", strides=[2, 2])]
    check(build(nodes, {"cw": w(rng, 2, 2, 3, 3), "pads": np.array([1, 0, 2, 1], np.int64),
                        "val": np.array(-0.3, np.float32), "axes": np.array([-1, 2], np.int64)},
                [1, 2, 4, 4], opset=18))


def test_pad_opset10_attributes_before_conv():
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Pad", ["x"], ["p"], name="pad", pads=[0, 0, 2, 1, 0, 0, 1, 0], value=-0.3),
             conv("conv", "p", "h", "cw")]
    check(build(nodes, {"cw": w(rng, 3, 2, 3, 3)}, [1, 2, 4, 4], opset=10))


@pytest.mark.parametrize("op,opset,axes,keep,as_input", [
    ("ReduceSum", 13, [-1, 1], 0, True), ("ReduceSum", 11, [2], 1, False), ("ReduceSum", 13, None, 0, False),
    ("ReduceMean", 13, [2], 1, False), ("ReduceMean", 18, [1, 3], 0, True), ("ReduceMean", 11, None, 1, False),
])
def test_reduce_sum_mean(op, opset, axes, keep, as_input):
    rng = np.random.default_rng(7)
    inits = {"cw": w(rng, 3, 2, 2, 2)}
    kw = {"keepdims": keep}
    ins = ["c"]
    if axes is not None and as_input:
        ins.append("axes")
        inits["axes"] = np.array(axes, np.int64)
    elif axes is not None:
        kw["axes"] = axes
    nodes = [conv("conv", "x", "c", "cw"), helper.make_node(op, ins, ["h"], name="reduce", **kw)]
    check(build(nodes, inits, [1, 2, 5, 6], opset=opset))


def test_conv_1d():
    rng = np.random.default_rng(8)
    nodes = [conv("conv1", "x", "a", "w1", strides=[2], pads=[1, 2], dilations=[2], kernel_shape=[3]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             conv("conv2", "r", "h", "w2", auto_pad="SAME_UPPER", group=2)]
    imported = check(build(nodes, {"w1": w(rng, 4, 2, 3), "w2": w(rng, 4, 2, 2)}, [1, 2, 11]))
    assert imported.net.input_shape == (2, 11) and len(imported.net.affines) == 3


def test_neg_sub_div_by_constants():
    rng = np.random.default_rng(9)
    nodes = [helper.make_node("Sub", ["K", "x"], ["a"], name="const_minus_x"),
             helper.make_node("Div", ["a", "D"], ["b"], name="div"),
             helper.make_node("Neg", ["b"], ["h"], name="neg")]
    check(build(nodes, {"K": w(rng, 1, 5), "D": w(rng, 5) + 2}, [1, 5]))


# ---------------------------------------------------------------------------------------------- max

MAXPOOLS = [  # (input dims, attributes, after a Relu)
    ([1, 2, 7, 7], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), False),  # odd window, padded
    ([1, 2, 5, 5], dict(kernel_shape=[2, 2]), True),  # overlapping (stride 1)
    ([1, 2, 6, 7], dict(kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 1], pads=[0, 1, 1, 1]), False),
    ([1, 1, 7, 4], dict(kernel_shape=[5, 1], strides=[2, 1]), False),  # 5 -> 3 -> 2 -> 1: leftovers at two levels
    ([1, 2, 5, 6], dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"), False),
    ([1, 2, 9], dict(kernel_shape=[3], strides=[2], pads=[1, 1]), False),  # 1-D
]


CEIL_MAXPOOLS = [  # ceil_mode=1: the last window along an axis reaches past the (padded) end
    ([1, 2, 5, 5], dict(kernel_shape=[2, 2], strides=[2, 2])),  # 3x3 windows, the last row/column of 1-2
    ([1, 1, 3, 3], dict(kernel_shape=[2, 2], strides=[2, 2])),  # the conformance suite's maxpool03
    ([1, 2, 6, 7], dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 0, 1])),  # a window would start
    ([1, 1, 7, 7], dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 1])),  # in the padding: dropped
    ([1, 2, 4, 4], dict(kernel_shape=[2, 2], strides=[3, 3], pads=[1, 1, 1, 1])),
    ([1, 2, 8], dict(kernel_shape=[3], strides=[3])),  # 1-D: 3 windows, the last of 2
]


def maxpool_model(in_dims, attrs, after_relu, seed=0, head=True, opset=13):
    rng = np.random.default_rng(seed)
    weight = w(rng, in_dims[1], in_dims[1], *([3] * (len(in_dims) - 2)), scale=0.7)
    pads = [1] * (2 * (len(in_dims) - 2))
    nodes = [conv("conv", "x", "c", "cw", pads=pads)]
    if after_relu:
        nodes.append(helper.make_node("Relu", ["c"], ["c_r"], name="relu"))
    nodes.append(helper.make_node("MaxPool", ["c_r" if after_relu else "c"], ["h"], name="pool", **attrs))
    return build(nodes, {"cw": weight}, in_dims, seed=seed, head=head, opset=opset)


@pytest.mark.parametrize("in_dims,attrs,after_relu", MAXPOOLS)
def test_maxpool(in_dims, attrs, after_relu):
    imported = check(maxpool_model(in_dims, attrs, after_relu))
    window = int(np.prod(attrs["kernel_shape"]))
    levels = int(np.ceil(np.log2(window)))
    assert len(imported.net.affines) == 1 + after_relu + levels + 1  # conv [, relu], tree levels, head


def _pool_reference(x: np.ndarray, k, st, pads, dil) -> np.ndarray:
    """MaxPool with ceil_mode=1 in numpy (2-D, [1, C, H, W]): windows that start inside the input or
    its head padding, taps outside the input left out."""
    C, H, W = x.shape[1:]
    sizes = []
    for n, kk, s, d, head, tail in ((H, k[0], st[0], dil[0], pads[0], pads[2]), (W, k[1], st[1], dil[1], pads[1],
                                                                                 pads[3])):
        out = -(-(n + head + tail - d * (kk - 1) - 1) // s) + 1
        sizes.append(out - 1 if (out - 1) * s >= n + head else out)
    y = np.full((1, C, *sizes), -np.inf)
    for i in range(sizes[0]):
        for j in range(sizes[1]):
            for a in range(k[0]):
                for b in range(k[1]):
                    r, c = i * st[0] - pads[0] + a * dil[0], j * st[1] - pads[1] + b * dil[1]
                    if 0 <= r < H and 0 <= c < W:
                        y[0, :, i, j] = np.maximum(y[0, :, i, j], x[0, :, r, c])
    return y


@pytest.mark.parametrize("in_dims,attrs", CEIL_MAXPOOLS)
def test_maxpool_ceil_mode(in_dims, attrs):
    attrs = dict(attrs, ceil_mode=1)
    # behind a conv, against onnxruntime (no head: onnx's shape inference keeps a window that starts
    # in the tail padding, onnxruntime drops it, as the operator's text says, and then refuses the
    # head's MatMul)
    check(maxpool_model(in_dims, attrs, False, head=False, opset=18))
    # directly on the input: every output element (the border windows' too) against numpy, the
    # border windows' maxima on the elements they do cover
    imported = check(build([helper.make_node("MaxPool", ["x"], ["h"], name="pool", **attrs)], {}, in_dims,
                           opset=18, head=False))
    two_d = len(in_dims) == 4
    k = ([1] if not two_d else []) + attrs["kernel_shape"]
    st = ([1] if not two_d else []) + attrs.get("strides", [1] * len(attrs["kernel_shape"]))
    dil = ([1] if not two_d else []) + attrs.get("dilations", [1] * len(attrs["kernel_shape"]))
    p = attrs.get("pads", [0] * (2 * len(attrs["kernel_shape"])))
    pads = p if two_d else [0, p[0], 0, p[1]]
    rng = np.random.default_rng(1)
    for _ in range(8):
        x = rng.uniform(-1, 1, imported.input_dims)
        x4 = x if two_d else x[:, :, None, :]
        ref = _pool_reference(x4, k, st, pads, dil)
        np.testing.assert_allclose(imported.net.forward(x.reshape(1, -1))[0], ref.ravel(), atol=1e-12)
    assert tuple(imported.output_dims) == (ref.shape if two_d else (1, ref.shape[1], ref.shape[3]))


def test_maxpool_ceil_mode_border_window_of_one_element():
    # maxpool03 of the conformance suite: Y[0,0,1,1] is X[0,0,2,2] alone
    imported = check(build([helper.make_node("MaxPool", ["x"], ["h"], name="pool", kernel_shape=[2, 2],
                                             strides=[2, 2], ceil_mode=1)], {}, [1, 1, 3, 3], opset=18, head=False))
    x = np.arange(9.0)[::-1].reshape(1, 9)  # the largest element first: no other window sees X[2,2] = 0
    np.testing.assert_array_equal(imported.net.forward(x)[0], [8, 6, 2, 0])


def test_maxpool_directly_on_input_and_reduce_max():
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMax", ["p"], ["h"], name="rmax", axes=[1, -1], keepdims=1)]
    check(build(nodes, {}, [1, 3, 5, 5], opset=13))
    nodes = [helper.make_node("ReduceMax", ["x"], ["h"], name="rmax", keepdims=0)]  # global, 60 values
    imported = check(build(nodes, {}, [1, 3, 4, 5], opset=13, head=False))
    assert len(imported.net.affines) == 1 + 6


def test_maxpool_bounds_contain_samples_and_stable_max():
    proto = maxpool_model([1, 2, 7, 7], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), False)
    net = import_onnx(proto).net
    rng = np.random.default_rng(10)
    centre = rng.uniform(-0.5, 0.5, net.input_size)
    lo, hi = centre - 0.1, centre + 0.1
    bounds = symbolic_bounds(net, lo, hi)
    out = output_bounds(net, lo, hi, bounds)
    x = rng.uniform(lo, hi, (400, net.input_size))
    x[:8] = np.where(rng.random((8, net.input_size)) < 0.5, lo, hi)  # corners
    for b, pre in zip(bounds, net.preactivations(x)):
        assert np.all(pre >= b.lower - 1e-9) and np.all(pre <= b.upper + 1e-9)
    y = net.forward(x)
    assert np.all(y >= out.lower - 1e-9) and np.all(y <= out.upper + 1e-9)
    # max(x0, x1) with x0 in [0.8, 1] dominating x1 in [0, 0.5]: every ReLU of the encoding is
    # stable and the bounds are exact
    pair = import_onnx(build([helper.make_node("MaxPool", ["x"], ["h"], name="pool", kernel_shape=[1, 2])], {},
                             [1, 1, 1, 2], head=False)).net
    lo, hi = np.array([0.8, 0.0]), np.array([1.0, 0.5])
    bounds = symbolic_bounds(pair, lo, hi)
    assert unstable_counts(bounds) == [0]
    out = output_bounds(pair, lo, hi, bounds)
    np.testing.assert_allclose([out.lower[0], out.upper[0]], [0.8, 1.0], atol=1e-12)


# ---------------------------------------------------------------------------------- verdicts (MILP)

def write_spec(path, lo, hi, n_out, output: str):
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {float(a)!r}))", f"(assert (<= X_{i} {float(b)!r}))"]
    path.write_text("\n".join(lines) + "\n" + output + "\n")
    return path


@pytest.fixture(scope="module")
def max_minus_mean(tmp_path_factory):
    """y0 = max(x), y1 = mean(x) - 0.05 over four inputs in [0, 1]: y0 - y1 = max - mean + 0.05
    takes every value in [0.05, 0.8] (the largest at a one-hot x)."""
    # The mean goes through the pool as a second channel (max of four copies of it): a branch
    # around the pool would be a skip connection across its ReLU layers.
    nodes = [helper.make_node("ReduceMean", ["x"], ["a"], name="mean", axes=[2, 3], keepdims=1),
             helper.make_node("Expand", ["a", "full"], ["a4"], name="spread"),
             helper.make_node("Concat", ["x", "a4"], ["c"], name="cat", axis=1),
             helper.make_node("MaxPool", ["c"], ["m"], name="pool", kernel_shape=[2, 2]),
             helper.make_node("Reshape", ["m", "shp"], ["m1"], name="flat"),
             helper.make_node("Add", ["m1", "b"], ["h"], name="shift")]
    proto = build(nodes, {"full": np.array([1, 1, 2, 2], np.int64), "shp": np.array([1, 2], np.int64),
                          "b": np.array([0.0, -0.05], np.float32)}, [1, 1, 2, 2], head=False)
    root = tmp_path_factory.mktemp("maxpool")
    path = root / "max_minus_mean.onnx"
    path.write_bytes(proto.SerializeToString())
    return root, path


@pytest.mark.parametrize("stages", [("attack", "alpha", "bab", "milp"), ("milp",)])
def test_maxpool_verdicts(max_minus_mean, stages):
    root, net_path = max_minus_mean
    lo, hi = np.zeros(4), np.ones(4)
    sat = write_spec(root / "sat.vnnlib", lo, hi, 2, "(assert (>= Y_0 (+ Y_1 0.45)))")  # max - mean >= 0.4
    unsat = write_spec(root / "unsat.vnnlib", lo, hi, 2, "(assert (>= Y_0 (+ Y_1 0.85)))")  # max - mean >= 0.8
    res = solve_instance(net_path, sat, 20, stages=stages)
    assert res.result == "sat", res.reason
    x = res.x
    assert np.all((x >= lo) & (x <= hi))
    assert x.max() - x.mean() >= 0.4 - 1e-6  # checked on the function itself, not on the IR
    np.testing.assert_allclose(res.y, [x.max(), x.mean() - 0.05], atol=1e-6)
    if stages == ("milp",):
        assert res.decided_by == "milp"  # the solver's point, validated
    res = solve_instance(net_path, unsat, 20, stages=stages)
    assert res.result == "unsat", res.reason
    assert res.decided_by in ("bounds", "milp")  # today the symbolic bounds leave it to the MILP


# ------------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize("nodes,inits,in_dims,words", [
    ([helper.make_node("MaxPool", ["x"], ["h"], name="pool9", kernel_shape=[6, 2], ceil_mode=1)], {},
     [1, 1, 5, 5], ["pool9", "MaxPool", "does not fit"]),
    ([helper.make_node("Cast", ["x"], ["h"], name="cast16", to=TensorProto.FLOAT16)], {},
     [1, 4], ["cast16", "Cast", "float16", "changes the values"]),
    ([helper.make_node("MaxPool", ["x"], ["h", "ind"], name="pool8", kernel_shape=[2, 2])], {},
     [1, 1, 4, 4], ["pool8", "Indices"]),
    ([helper.make_node("Pad", ["x", "pads"], ["h"], name="pad3", mode="reflect")],
     {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, [1, 1, 4, 4], ["pad3", "Pad", "reflect"]),
    ([helper.make_node("Gather", ["x", "i"], ["h"], name="gat", axis=1)], {"i": np.array([4], np.int64)},
     [1, 4], ["gat", "Gather", "indices"]),
])
def test_unsupported_variants_are_one_line_errors(nodes, inits, in_dims, words):
    with pytest.raises(HamverifyError) as exc:
        import_onnx(build(nodes, inits, in_dims, head=False))
    assert not isinstance(exc.value, NonLinearModel)
    assert all(word in one_line(exc) for word in words), one_line(exc)


@pytest.mark.parametrize("op,extra", [
    ("Sigmoid", []), ("Tanh", []), ("Softmax", []), ("Exp", []), ("Log", []), ("Pow", ["two"]), ("Mul", ["x"]),
    ("MatMul", ["xt"]), ("Div", ["x"])])
def test_not_piecewise_linear_raises_nonlinear_model(op, extra):
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[1, 0])] if "xt" in extra else []
    nodes.append(helper.make_node(op, ["x"] + extra, ["h"], name="act3"))
    with pytest.raises(NonLinearModel) as exc:
        import_onnx(build(nodes, {"two": np.array(2.0, np.float32)}, [1, 4], head=False))
    assert op in one_line(exc) and "act3" in one_line(exc) and "piecewise linear" in one_line(exc)


def test_sigmoid_network_is_unknown_in_solve_instance(tmp_path):
    rng = np.random.default_rng(11)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["a"], name="fc"),
             helper.make_node("Sigmoid", ["a"], ["h"], name="sig1")]
    path = tmp_path / "sig.onnx"
    path.write_bytes(build(nodes, {"W": w(rng, 4, 5)}, [1, 4]).SerializeToString())
    spec = write_spec(tmp_path / "s.vnnlib", np.zeros(4), np.ones(4), 3, "(assert (>= Y_0 Y_1))")
    res = solve_instance(path, spec, 10)
    assert res.result == "unknown" and "Sigmoid" in res.reason and "sig1" in res.reason
    assert res.vnncomp_text() == "unknown\n"


# ------------------------------------------------------------------- comparisons, Where on them, Cast

def node(op, ins, out, **kw):
    return helper.make_node(op, ins, [out], name=out, **kw)


def check_on_box(proto, lo, hi, n=64, seed=0, tol=1e-5):
    """The IR imported for the box ``[lo, hi]`` against onnxruntime on points of the box (its
    corners among them)."""
    imported = import_onnx(proto, box=(lo, hi))
    session = onnx_session(proto)
    rng = np.random.default_rng(seed)
    x = rng.uniform(lo, hi, (n, lo.size))
    x[:4] = np.where(rng.random((4, lo.size)) < 0.5, lo, hi)
    for xi in x.astype(np.float32).astype(np.float64):
        ort = onnx_run(session, xi.reshape(imported.input_dims)).ravel().astype(np.float64)
        assert np.abs(imported.net.forward(xi[None])[0] - ort).max() < tol
    return imported


@pytest.mark.parametrize("nodes,consts", [
    # relu(x): Where(x > 0, x, 0)
    ([node("Greater", ["h0", "zero"], "c"), node("Where", ["c", "h0", "zero"], "h")], {}),
    # max(a, b) and min(a, b), a and b two conv channels (Less / GreaterOrEqual / LessOrEqual)
    ([node("Greater", ["a", "b"], "c"), node("Where", ["c", "a", "b"], "h")], {}),
    ([node("Less", ["a", "b"], "c"), node("Where", ["c", "a", "b"], "h")], {}),
    ([node("GreaterOrEqual", ["b", "a"], "c"), node("Where", ["c", "a", "b"], "h")], {}),  # min
    ([node("LessOrEqual", ["a", "b"], "c"), node("Not", ["c"], "nc"), node("Where", ["nc", "a", "b"], "h")], {}),
    # leaky relu: Where(x > 0, x, 0.1 x); a clipped ramp max(x, 0.3) written as Where(x < 0.3, 0.3, x)
    ([node("Greater", ["h0", "zero"], "c"), node("Mul", ["h0", "tenth"], "s"), node("Where", ["c", "h0", "s"], "h")],
     {}),
    ([node("Less", ["h0", "third"], "c"), node("Where", ["c", "third", "h0"], "h")], {}),
    # a condition that is constant on some elements (x > 0 against a constant mixed in by Concat)
    ([node("Concat", ["h0", "K"], "hk", axis=1), node("Greater", ["hk", "zero"], "c"),
      node("Where", ["c", "hk", "zero"], "h")], {}),
])
def test_where_on_a_comparison_that_is_max_min_or_relu(nodes, consts):
    rng = np.random.default_rng(12)
    head = [conv("conv", "x", "h0", "cw", pads=[1, 1, 1, 1]),
            node("Slice", ["h0", "s0", "s1", "ax"], "a"), node("Slice", ["h0", "s1", "s2", "ax"], "b")]
    inits = {"cw": w(rng, 2, 1, 3, 3), "zero": np.array(0.0, np.float32), "tenth": np.array(0.1, np.float32),
             "third": np.array(0.3, np.float32), "K": np.array([[[[-1.0, 2.0, 0.0]] * 3]], np.float32),
             "s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "s2": np.array([2], np.int64),
             "ax": np.array([1], np.int64)}
    imported = check(build(head + nodes, inits, [1, 1, 3, 3], opset=18), n=32)
    assert imported.box_decided == 0  # exact everywhere, no box needed
    assert len(imported.net.affines) == 3  # conv, the Where's ReLU layer, the head


def test_where_rewrite_bounds_contain_samples():
    # max(a, b) via Where over a box: the bounds of the rewritten IR hold the network's values
    nodes = [node("Slice", ["x", "s0", "s1", "ax"], "a"), node("Slice", ["x", "s1", "s2", "ax"], "b"),
             node("Greater", ["a", "b"], "c"), node("Where", ["c", "a", "b"], "h")]
    inits = {"s0": np.array([0], np.int64), "s1": np.array([2], np.int64), "s2": np.array([4], np.int64),
             "ax": np.array([1], np.int64)}
    net = import_onnx(build(nodes, inits, [1, 4], opset=18, head=False)).net
    lo, hi = np.array([0.0, -1.0, 0.5, -0.5]), np.array([1.0, 0.0, 0.7, 0.5])
    out = output_bounds(net, lo, hi, symbolic_bounds(net, lo, hi))
    x = np.random.default_rng(3).uniform(lo, hi, (500, 4))
    y = net.forward(x)
    np.testing.assert_allclose(y, np.maximum(x[:, :2], x[:, 2:]), atol=1e-12)
    assert np.all(y >= out.lower - 1e-9) and np.all(y <= out.upper + 1e-9)


WHERE_JUMP = [node("Greater", ["x", "t"], "c"), node("Where", ["c", "x", "ten"], "h")]  # x > t ? x : 10
WHERE_INITS = {"t": np.array([-1.0, 0.5, 5.0], np.float32), "ten": np.array(10.0, np.float32)}


def test_where_with_a_jump_is_decided_by_the_box_or_unknown():
    proto = build(WHERE_JUMP, WHERE_INITS, [1, 3], opset=18, head=False)
    with pytest.raises(NonLinearModel) as exc:  # without a box: a jump at x = t
        import_onnx(proto)
    assert "Where" in one_line(exc) and "jump" in one_line(exc) and "no input box" in one_line(exc)
    # on [0, 0.4] x [0.6, 1] x [0, 1]: x0 > -1 (true), x1 > 0.5 (true), x2 > 5 (false)
    imported = check_on_box(proto, np.array([0.0, 0.6, 0.0]), np.array([0.4, 1.0, 1.0]))
    assert imported.box_decided == 3
    np.testing.assert_allclose(imported.net.forward(np.array([[0.2, 0.7, 0.3]]))[0], [0.2, 0.7, 10.0])
    with pytest.raises(NonLinearModel) as exc:  # x1 in [0.4, 0.6]: x1 > 0.5 is open on the box
        import_onnx(proto, box=(np.array([0.0, 0.4, 0.0]), np.array([0.4, 0.6, 1.0])))
    assert "1 of 3 elements" in one_line(exc) and "does not decide" in one_line(exc)
    with pytest.raises(NonLinearModel):  # a tie at the box's edge is not decided (no margin)
        import_onnx(proto, box=(np.array([0.0, 0.5, 0.0]), np.array([0.4, 1.0, 1.0])))


def test_comparison_after_a_relu_layer_is_decided_by_the_box():
    # relu(W x + b) > 0.05: the bounds of the segment come through the ReLU layer
    nodes = [node("Gemm", ["x", "W", "b"], "g", transB=1), node("Relu", ["g"], "r"), node("Greater", ["r", "cut"], "c"),
             node("Where", ["c", "r", "ten"], "h")]
    W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    inits = {"W": W, "b": np.array([0.0, -2.0, 0.5], np.float32), "cut": np.array(0.05, np.float32),
             "ten": np.array(10.0, np.float32)}
    proto = build(nodes, inits, [1, 2], opset=18, head=False)
    # x in [0.1, 0.3]^2: r0 in [0.1, 0.3] (> 0.05), r1 = 0 exactly (relu of [-1.9, -1.7]), r2 in [0.7, 1.1]
    imported = check_on_box(proto, np.full(2, 0.1), np.full(2, 0.3))
    assert imported.box_decided == 3


def test_where_on_a_comparison_feeding_anything_else_is_unknown():
    nodes = [node("Greater", ["x", "zero"], "c"), node("Cast", ["c"], "f", to=TensorProto.FLOAT),
             node("Add", ["f", "x"], "h")]  # a step function of x
    with pytest.raises(NonLinearModel) as exc:
        import_onnx(build(nodes, {"zero": np.array(0.0, np.float32)}, [1, 3], opset=18, head=False))
    assert "Cast" in one_line(exc) and "step" in one_line(exc)
    nodes = [node("Equal", ["x", "zero"], "c"), node("Where", ["c", "x", "zero"], "h")]
    with pytest.raises(NonLinearModel) as exc:
        import_onnx(build(nodes, {"zero": np.array(0.0, np.float32)}, [1, 3], opset=18, head=False))
    assert "equality" in one_line(exc)


def test_cast_float_is_a_no_op_and_bool_int_equal_are_decided_by_the_box():
    rng = np.random.default_rng(13)
    # float -> double -> float on the data path: the identity
    nodes = [node("Gemm", ["x", "W"], "g", transB=1), node("Cast", ["g"], "g64", to=TensorProto.DOUBLE),
             node("Cast", ["g64"], "h", to=TensorProto.FLOAT)]
    check(build(nodes, {"W": w(rng, 3, 4)}, [1, 4], opset=18))
    # Cast to bool (x != 0), to int64 (truncation), Equal(x, 0), back to float; x0 = 0 exactly
    nodes = [node("Cast", ["x"], "xb", to=TensorProto.BOOL), node("Cast", ["xb"], "fb", to=TensorProto.FLOAT),
             node("Cast", ["x"], "xi", to=TensorProto.INT64), node("Cast", ["xi"], "fi", to=TensorProto.FLOAT),
             node("Equal", ["x", "zero"], "xe"), node("Cast", ["xe"], "fe", to=TensorProto.FLOAT),
             node("Concat", ["fb", "fi", "fe"], "h", axis=1)]
    proto = build(nodes, {"zero": np.array(0.0, np.float32)}, [1, 3], opset=18, head=False)
    lo, hi = np.array([0.0, 2.1, -3.9]), np.array([0.0, 2.4, -3.2])
    imported = check_on_box(proto, lo, hi)
    np.testing.assert_array_equal(imported.net.forward(((lo + hi) / 2)[None])[0], [0, 1, 1, 0, 2, -3, 1, 0, 0])
    for box in ((np.array([0.0, 1.9, -3.9]), hi), (np.array([-0.1, 2.1, -3.9]), hi)):
        with pytest.raises(NonLinearModel) as exc:  # x1 crosses 2 / x0 may be 0 or not: a step
            import_onnx(proto, box=box)
        assert "step" in one_line(exc)
    with pytest.raises(NonLinearModel) as exc:
        import_onnx(proto)
    assert "no input box" in one_line(exc) or "does not decide" in one_line(exc)


def test_box_decided_comparisons_through_solve_query(tmp_path):
    # the conformance suite's where05 / where06 shape: Y = Where(X > 0.5, X, 0)
    from hamverify.vnnlib2 import parse_query_text, solve_query
    nodes = [node("Greater", ["x", "half"], "c"), node("Where", ["c", "x", "zero"], "h")]
    proto = build(nodes, {"half": np.array([0.5], np.float32), "zero": np.array([0.0], np.float32)}, [2], opset=18,
                  head=False)
    path = tmp_path / "w.onnx"
    path.write_bytes(proto.SerializeToString())
    head = ("(vnnlib-version <2.0>)\n(declare-network N (declare-input X float32 [2]) (declare-output Y float32 [2]))\n"
            "(assert (>= X[0] 0.0))\n(assert (<= X[0] 0.4))\n(assert (>= X[1] 0.6))\n(assert (<= X[1] 1.0))\n")
    for out, verdict in (("(assert (>= Y[0] 0.3))", "unsat"), ("(assert (>= Y[1] 0.6))", "sat"),
                         ("(assert (>= Y[1] 0.95))", "sat"), ("(assert (>= (+ Y[0] Y[1]) 1.01))", "unsat")):
        res, _ = solve_query(parse_query_text(head + out), {"N": str(path)}, 20)
        assert res.result == verdict, (out, res.reason)
    # X[0] in [0.4, 0.6]: the jump at 0.5 lies in the box -> unknown with the reason
    res, _ = solve_query(parse_query_text(head.replace("(<= X[0] 0.4)", "(<= X[0] 0.6)") + "(assert (>= Y[0] 0.3))"),
                         {"N": str(path)}, 20)
    assert res.result == "unknown" and "jump" in res.reason
