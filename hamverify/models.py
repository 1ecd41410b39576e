"""Architectures (docs/METHOD.md §2), the Normalize layer, and checkpoints with metadata."""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import pathlib
import warnings
from typing import Callable

import torch
from torch import nn

from . import HamverifyError, __version__
from .text import short_text  # noqa: F401  (re-exported: its users import it from here)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

NORMALIZATION = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "mnist": (MNIST_MEAN, MNIST_STD),
    # Fashion-MNIST runs through mnist_small; its own statistics are the better choice.
    "fashion-mnist": ((0.2860,), (0.3530,)),
}

INPUT_SHAPE = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28)}


class Normalize(nn.Module):
    """Per-channel (x - mean) / std, so that the model takes inputs in [0, 1] pixel space."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class ReLUNet(nn.Sequential):
    """A feed-forward ReLU network whose forward pass can also return every ReLU's pre-activation."""

    def forward_with_preacts(self, x):
        """Return (logits, [pre-activation of each ReLU layer, flattened per sample])."""
        preacts = []
        for layer in self:
            if isinstance(layer, nn.ReLU):
                preacts.append(x.flatten(1))
            x = layer(x)
        return x, preacts


def _small_cnn(in_ch: int, side: int, hidden: int, mean, std, batch_norm: bool = False) -> ReLUNet:
    flat = 32 * (side // 4) * (side // 4)

    def conv(c_in, c_out):
        layer = [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)]
        return layer + [nn.BatchNorm2d(c_out)] if batch_norm else layer

    return ReLUNet(
        Normalize(mean, std),
        *conv(in_ch, 16),
        nn.ReLU(),
        *conv(16, 32),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(flat, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def cifar_small(dataset: str = "cifar10") -> ReLUNet:
    """Wong et al. 2018 / Xiao et al. 2019 small CNN with the paper's 128-unit layer."""
    return _small_cnn(3, 32, 128, *NORMALIZATION[dataset])


def mnist_small(dataset: str = "mnist") -> ReLUNet:
    """The MNIST counterpart of cifar_small (100-unit layer); also used for Fashion-MNIST."""
    return _small_cnn(1, 28, 100, *NORMALIZATION[dataset])


def cifar_small_bn(dataset: str = "cifar10") -> ReLUNet:
    """cifar_small with a BatchNorm after each convolution (issue 14's extra arch, reported apart
    from the paper's): batch statistics while training, folded into the convolutions for
    verification (eval mode: the same ReLUs, the same IR shape)."""
    return _small_cnn(3, 32, 128, *NORMALIZATION[dataset], batch_norm=True)


def tiny_mlp(dataset: str = "mnist", hidden: int = 8) -> ReLUNet:
    """A very small net for tests and smoke runs."""
    c, h, w = INPUT_SHAPE[dataset]
    return ReLUNet(Normalize(*NORMALIZATION[dataset]), nn.Flatten(), nn.Linear(c * h * w, hidden),
                   nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


ARCHITECTURES: dict[str, Callable[..., ReLUNet]] = {
    "cifar_small": cifar_small,
    "mnist_small": mnist_small,
    "cifar_small_bn": cifar_small_bn,
    "tiny_mlp": tiny_mlp,
}

DEFAULT_ARCH = {"cifar10": "cifar_small", "mnist": "mnist_small", "fashion-mnist": "mnist_small"}


# -- Appendix A's robustness networks: training and attacks only --------------------------------
class PreActBlock(nn.Module):
    """He et al. 2016's pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the
    identity, or a 1x1 convolution of the first activation when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
                         if stride != 1 or in_planes != planes else None)

    def forward(self, x, preacts: list | None = None):
        p1 = self.bn1(x)
        a1 = torch.relu(p1)
        skip = self.shortcut(a1) if self.shortcut is not None else x
        p2 = self.bn2(self.conv1(a1))
        if preacts is not None:
            preacts += [p1.flatten(1), p2.flatten(1)]
        return self.conv2(torch.relu(p2)) + skip


class PreActResNet18(nn.Module):
    """PreActResNet18 (He et al. 2016, "Identity mappings in deep residual networks"): a 3x3 stem,
    four stages of two pre-activation blocks (width, 2x, 4x, 8x channels; strides 1, 2, 2, 2), a
    final BN-ReLU, global average pooling and one linear layer; normalization inside, inputs in [0, 1].

    Residual connections and BatchNorm: not a feed-forward ReLUNet, so the verifier's IR
    (``hamverify.network.from_torch``) refuses it -- training and attacks only.  ``width`` 64 is
    the paper's network (11.2 M parameters); smaller widths are for smoke tests."""

    def __init__(self, in_ch: int, mean, std, width: int = 64, n_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(in_ch, width, 3, stride=1, padding=1, bias=False)
        blocks, planes = [], width
        for k, stride in enumerate((1, 2, 2, 2)):
            out = width * 2 ** k
            blocks += [PreActBlock(planes, out, stride), PreActBlock(out, out, 1)]
            planes = out
        self.blocks = nn.ModuleList(blocks)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, n_classes)

    def _forward(self, x, preacts):
        h = self.stem(self.normalize(x))
        for block in self.blocks:
            h = block(h, preacts)
        p = self.bn(h)
        if preacts is not None:
            preacts.append(p.flatten(1))
        return self.linear(torch.relu(p).mean(dim=(2, 3)))

    def forward(self, x):
        return self._forward(x, None)

    def forward_with_preacts(self, x):
        """(logits, [pre-activation of each of the 17 ReLUs, flattened per sample]), as ReLUNet's."""
        preacts: list = []
        return self._forward(x, preacts), preacts

    def __iter__(self):
        # Interval bounds (the IBP / CROWN-IBP losses, the RS loss, the per-epoch unstable-ReLU counts)
        # walk a network layer by layer; a residual network has no such sequence.
        raise HamverifyError("preact_resnet18 has residual connections: interval bounds (certified losses, "
                             "the RS loss, unstable-ReLU counts) and verification do not apply to it")


def preact_resnet18(dataset: str = "cifar10", width: int = 64) -> PreActResNet18:
    """Appendix A's CIFAR-10 robustness network (training and attacks only)."""
    return PreActResNet18(INPUT_SHAPE[dataset][0], *NORMALIZATION[dataset], width=width)


def cw_mnist(dataset: str = "mnist") -> ReLUNet:
    """Carlini & Wagner 2017's MNIST CNN (their Table 1): conv3x3 32, conv3x3 32, max-pool 2x2,
    conv3x3 64, conv3x3 64, max-pool 2x2, FC 200, FC 200, FC 10, ReLU after every hidden layer
    (valid padding: 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4).  Their training's dropout is left out.

    The verifier's IR (``hamverify.network.from_torch``) has no max-pool, so it refuses this
    network with one line -- training and attacks only."""
    c, h, _ = INPUT_SHAPE[dataset]
    side = ((h - 4) // 2 - 4) // 2
    return ReLUNet(
        Normalize(*NORMALIZATION[dataset]),
        nn.Conv2d(c, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
        nn.Linear(200, 10),
    )


# Networks the verifier's IR cannot express (residual connections, BatchNorm in a block, max-pool):
# build_model, checkpoints, training and the attacks take them; ``ARCHITECTURES`` stays the
# feed-forward ReLU networks that export to ONNX and verify.
TRAINING_ONLY_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "preact_resnet18": preact_resnet18,
    "cw_mnist": cw_mnist,
}


def build_model(arch: str, dataset: str) -> nn.Module:
    builder = ARCHITECTURES.get(arch) or TRAINING_ONLY_ARCHITECTURES.get(arch)
    if builder is None:
        known = [*ARCHITECTURES, *TRAINING_ONLY_ARCHITECTURES]
        raise HamverifyError(f"unknown architecture {arch!r}; known: {', '.join(known)}")
    if dataset not in NORMALIZATION:
        raise HamverifyError(f"unknown dataset {dataset!r}; known: {', '.join(NORMALIZATION)}")
    return builder(dataset)


CHECKPOINT_FORMAT = "hamverify-checkpoint-v1"


def save_checkpoint(path, model: nn.Module, *, arch: str, dataset: str, config: dict | None = None,
                    eps: float | None = None, metrics: dict | None = None, extra: dict | None = None):
    """Write state_dict + metadata atomically (a crash never leaves a half-written checkpoint)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mean, std = NORMALIZATION[dataset]
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "dataset": dataset,
        "normalization": {"mean": list(mean), "std": list(std)},
        "config": config or {},
        "eps": eps,
        "metrics": metrics or {},
        "hamverify_version": __version__,
        "torch_version": str(torch.__version__),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if extra:
        payload.update(extra)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _why_unreadable(exc: BaseException) -> str:
    """What a failed torch.load means for a user, on one line: torch's own texts run to several
    sentences of advice about ``weights_only`` that do not apply to a file that is not ours."""
    text = " ".join(str(exc).split())
    if "Weights only load failed" in text:
        return ("not a torch checkpoint of tensors (the file is not a torch zip archive, or it holds "
                "Python objects that a hamverify checkpoint never contains)")
    if "failed finding central directory" in text or "PytorchStreamReader" in text:
        return "truncated or corrupt (its zip archive is incomplete)"
    if isinstance(exc, EOFError) or "Ran out of input" in text:
        return "truncated or empty"
    return f"{type(exc).__name__}: {short_text(text, 120) or 'corrupt file'}"


def read_checkpoint(path) -> dict:
    """Load the raw checkpoint dict, turning every way a file can be wrong into one clear error."""
    path = pathlib.Path(path)
    if _is_onnx_name(path):
        raise HamverifyError(f"{path} is an ONNX model, not a hamverify checkpoint (.pt)")
    if not path.is_file():
        raise HamverifyError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise HamverifyError(f"{path}: not a readable checkpoint ({_why_unreadable(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise HamverifyError(f"{path}: not a hamverify checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    return payload


def _is_onnx_name(path) -> bool:
    name = str(path).lower()
    return name.endswith(".onnx") or name.endswith(".onnx.gz")


def check_dataset_fits(model_path, model_dataset: str | None, dataset: str, input_shape=None) -> None:
    """A one-line error unless images of ``dataset`` fit the model's input: a model trained on
    ``model_dataset`` (or taking ``input_shape``, C x H x W) cannot read images of another shape
    (an MNIST checkpoint with ``--dataset cifar10``)."""
    if dataset not in INPUT_SHAPE:
        raise HamverifyError(f"unknown dataset {dataset!r}; known: {', '.join(INPUT_SHAPE)}")
    want = tuple(input_shape) if input_shape is not None else INPUT_SHAPE.get(model_dataset)
    have = INPUT_SHAPE[dataset]
    if want is None or tuple(want) == have:
        return
    own = f"trained on {model_dataset}, " if model_dataset else ""
    hint = f" (its own: --dataset {model_dataset})" if model_dataset else ""
    raise HamverifyError(f"{model_path}: the model ({own}inputs {'x'.join(map(str, want))}) cannot read {dataset} "
                         f"images ({'x'.join(map(str, have))}): give a dataset of its input shape{hint}")


def has_batch_norm(arch: str, dataset: str) -> bool:
    """Whether the architecture holds a BatchNorm (batch statistics while training, which
    CROWN-IBP's backward pass does not have; folded into the IR in eval mode)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in build_model(arch, dataset).modules())


def load_checkpoint(path) -> tuple[ReLUNet, dict]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, metadata without weights)."""
    payload = read_checkpoint(path)
    model = build_model(payload["arch"], payload["dataset"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise HamverifyError(f"{path}: weights do not fit architecture {payload['arch']!r} "
                             f"({short_text(str(exc).splitlines()[0], 120)})") from None
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
