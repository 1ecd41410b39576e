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


def _small_cnn(in_ch: int, side: int, hidden: int, mean, std) -> ReLUNet:
    flat = 32 * (side // 4) * (side // 4)
    return ReLUNet(
        Normalize(mean, std),
        nn.Conv2d(in_ch, 16, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
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


def tiny_mlp(dataset: str = "mnist", hidden: int = 8) -> ReLUNet:
    """A very small net for tests and smoke runs."""
    c, h, w = INPUT_SHAPE[dataset]
    return ReLUNet(Normalize(*NORMALIZATION[dataset]), nn.Flatten(), nn.Linear(c * h * w, hidden),
                   nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


ARCHITECTURES: dict[str, Callable[..., ReLUNet]] = {
    "cifar_small": cifar_small,
    "mnist_small": mnist_small,
    "tiny_mlp": tiny_mlp,
}

DEFAULT_ARCH = {"cifar10": "cifar_small", "mnist": "mnist_small", "fashion-mnist": "mnist_small"}


def build_model(arch: str, dataset: str) -> ReLUNet:
    if arch not in ARCHITECTURES:
        raise HamverifyError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if dataset not in NORMALIZATION:
        raise HamverifyError(f"unknown dataset {dataset!r}; known: {', '.join(NORMALIZATION)}")
    return ARCHITECTURES[arch](dataset)


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
