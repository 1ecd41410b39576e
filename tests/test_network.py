"""The verification IR (hamverify.network): exact agreement with torch, folding, refusals."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from hamverify import HamverifyError
from hamverify.models import ARCHITECTURES, INPUT_SHAPE, Normalize, ReLUNet, build_model
from hamverify.network import Affine, Network, check_against_torch, from_torch

ARCH_DATASETS = [("cifar_small", "cifar10"), ("mnist_small", "mnist"), ("tiny_mlp", "mnist"),
                 ("tiny_mlp", "cifar10"), ("cifar_small_bn", "cifar10")]




_BUILT: dict = {}


def _built(arch, dataset):
    """(model, IR) per architecture, built once per module: unrolling cifar_small's convs takes a second."""
    if (arch, dataset) not in _BUILT:
        torch.manual_seed(0)
        model = build_model(arch, dataset).eval()
        _BUILT[(arch, dataset)] = (model, from_torch(model, INPUT_SHAPE[dataset]))
    return _BUILT[(arch, dataset)]


def _torch64(model, x):
    with torch.no_grad():
        out = model.double()(torch.from_numpy(x)).numpy()
    model.float()
    return out


def _max_diff_random(net, model, n=6, seed=0, low=0.0, high=1.0):
    x = np.random.default_rng(seed).uniform(low, high, (n, *net.input_shape))
    return float(np.abs(net.forward(x) - _torch64(model, x)).max())


def test_all_architectures_listed():
    assert {a for a, _ in ARCH_DATASETS} == set(ARCHITECTURES)


@pytest.mark.parametrize("arch,dataset", ARCH_DATASETS)
def test_registered_architecture_matches_torch(arch, dataset):
    model, net = _built(arch, dataset)
    assert net.input_shape == INPUT_SHAPE[dataset]
    assert net.relu_layer_sizes == [p.shape[1] for p in model.forward_with_preacts(torch.rand(1, *INPUT_SHAPE[dataset]))[1]]
    assert net.num_classes == 10
    assert all(isinstance(a, Affine) for a in net.affines)
    assert check_against_torch(net, model, n=6, seed=1) < 1e-5
    assert next(model.parameters()).dtype == torch.float32  # check_against_torch leaves the model float
    # Agreement in float32 too (the model as it is used), with float32 round-off only.
    x = np.random.default_rng(2).random((4, *INPUT_SHAPE[dataset]))
    with torch.no_grad():
        ref32 = model(torch.from_numpy(x).float()).double().numpy()
    assert np.abs(net.forward(x) - ref32).max() < 1e-4
    # One input without a batch axis gives one row.
    assert np.allclose(net.forward(x[0]), net.forward(x[:1]))


@pytest.mark.parametrize("arch,dataset", [("cifar_small", "cifar10"), ("mnist_small", "mnist")])
def test_preactivations_agree_with_torch(arch, dataset):
    model, net = _built(arch, dataset)
    x = np.random.default_rng(4).random((3, *INPUT_SHAPE[dataset]))
    with torch.no_grad():
        _, ref = model.double().forward_with_preacts(torch.from_numpy(x))
    model.float()
    ours = net.preactivations(x)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == tuple(b.shape)
        assert np.abs(a - b.numpy()).max() < 1e-9


CONV_VARIANTS = [
    dict(kernel_size=3, stride=1, padding=0),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2, stride=1, padding=2, bias=False),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=3, stride=1, padding=2, dilation=2),
    dict(kernel_size=1, stride=3, padding=0, bias=False),
]


@pytest.mark.parametrize("kw", CONV_VARIANTS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_tiny_conv_variants(kw):
    torch.manual_seed(5)
    in_shape = (2, 7, 6)  # non-square on purpose: catches H/W mix-ups in the unrolling
    conv = nn.Conv2d(2, 3, **kw)
    with torch.no_grad():
        out = conv(torch.zeros(1, *in_shape))
    flat = out[0].numel()
    model = nn.Sequential(Normalize((0.3, 0.6), (0.2, 0.5)), conv, nn.ReLU(),
                          nn.Conv2d(3, 4, 2, stride=1, padding=1, bias=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * (out.shape[2] + 1) * (out.shape[3] + 1), 5)).eval()
    net = from_torch(model, in_shape)
    assert net.relu_layer_sizes == [flat, 4 * (out.shape[2] + 1) * (out.shape[3] + 1)]
    assert _max_diff_random(net, model, seed=6) < 1e-9
    assert sp.issparse(net.affines[1].W) or isinstance(net.affines[1].W, np.ndarray)


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_folded(affine):
    torch.manual_seed(7)
    bn = nn.BatchNorm2d(4, affine=affine)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3.0)
        if affine:
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
    model = nn.Sequential(Normalize((0.5,), (0.25,)), nn.Conv2d(1, 4, 3, stride=2, padding=1), bn, nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    net = from_torch(model, (1, 9, 9))
    assert len(net.affines) == 3  # BatchNorm leaves no step of its own
    assert _max_diff_random(net, model, seed=8) < 1e-9
    assert check_against_torch(net, model) < 1e-5
    bn.train()
    with pytest.raises(HamverifyError, match="eval mode"):
        from_torch(model, (1, 9, 9))


@pytest.mark.parametrize("layer", [nn.Sigmoid(), nn.MaxPool2d(2), nn.Tanh(), nn.Dropout(0.1)])
def test_unsupported_layer_named(layer):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), layer, nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 2)
                          if not isinstance(layer, nn.MaxPool2d) else nn.Linear(2 * 4, 2))
    with pytest.raises(HamverifyError) as err:
        from_torch(model, (1, 4, 4))
    assert type(layer).__name__ in str(err.value)
    assert "\n" not in str(err.value)


def test_structural_refusals():
    with pytest.raises(HamverifyError, match="directly on the input"):
        from_torch(nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4, 2)), (4,))
    with pytest.raises(HamverifyError, match="end with an affine"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.ReLU()), (4,))
    with pytest.raises(HamverifyError, match="Linear expects"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Linear(5, 2)), (4,))


def test_affine_helpers():
    W = np.array([[1.0, -2.0], [0.0, 3.0]])
    a = Affine(W, np.array([0.5, -1.0]))
    assert np.allclose(a.forward(np.array([[1.0, 1.0]])), [[-0.5, 2.0]])
    pos, neg = a.positive_negative()
    assert np.array_equal(pos + neg, W) and (pos >= 0).all() and (neg <= 0).all()
    s = Affine(sp.csr_matrix(W), a.b)
    sp_pos, sp_neg = s.positive_negative()
    assert np.array_equal(sp_pos.toarray(), pos) and np.array_equal(sp_neg.toarray(), neg)
    assert np.array_equal(s.dense(), W)
    net = Network((a, Affine(np.eye(2), np.zeros(2))), (2,))
    assert np.allclose(net.forward([1.0, 1.0]), [[0.0, 2.0]])
    assert np.allclose(net.preactivations([[1.0, 1.0]])[0], [[-0.5, 2.0]])


def test_relunet_sequential_is_accepted():
    torch.manual_seed(9)
    model = ReLUNet(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    net = from_torch(model, (6,))
    assert _max_diff_random(net, model) < 1e-12


@pytest.mark.parametrize("case", [
    dict(c_in=2, c_out=3, k=(3, 3), strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1),
    dict(c_in=4, c_out=6, k=(3, 2), strides=(2, 1), pads=(1, 0, 2, 1), dil=(1, 1), group=2),  # ONNX asymmetric pads
    dict(c_in=3, c_out=3, k=(2, 2), strides=(1, 2), pads=(2, 1, 0, 2), dil=(2, 1), group=3),  # depthwise, dilated
    dict(c_in=1, c_out=2, k=(1, 1), strides=(3, 3), pads=(0, 0, 0, 0), dil=(1, 1), group=1),
])
def test_conv_matrix_matches_torch_conv(case):
    """Column i of the matrix is the convolution of the i-th basis image, for every tap layout
    (torch's conv on the explicitly padded input is the brute-force reference)."""
    from hamverify.network import conv_matrix
    rng = np.random.default_rng(11)
    in_shape = (case["c_in"], 7, 6)
    weight = rng.normal(size=(case["c_out"], case["c_in"] // case["group"], *case["k"]))
    weight[0, 0, 0, 0] = 0.0  # an exact zero tap is left out of the sparse matrix, not stored
    M, out_shape = conv_matrix(weight, in_shape, case["strides"], case["pads"], case["dil"], case["group"])
    x = rng.normal(size=(5, *in_shape))
    top, left, bottom, right = case["pads"]
    xt = torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom))
    ref = torch.nn.functional.conv2d(xt, torch.from_numpy(weight), None, case["strides"], 0, case["dil"],
                                     case["group"])
    assert out_shape == tuple(ref.shape[1:])
    assert M.shape == (int(np.prod(out_shape)), int(np.prod(in_shape)))
    np.testing.assert_allclose((M @ x.reshape(5, -1).T).T, ref.reshape(5, -1).numpy(), rtol=0, atol=1e-12)
    assert np.all(M.data != 0)
