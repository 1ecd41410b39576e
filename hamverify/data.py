"""Dataset loading for CIFAR-10, MNIST and Fashion-MNIST.

``load_dataset`` returns ``x`` uint8 (N, H, W, C) and ``y`` int64 (N,). For each dataset and split the first
source that has the data wins:

1. ``<root>/<name>/<split>.npz`` holding arrays ``x`` (uint8, HWC, or HW for grey images) and ``y``;
2. the official formats in ``<root>/<name>/`` or ``<root>/`` (for MNIST-likes also torchvision's
   ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``): the CIFAR-10 python pickles
   (``cifar-10-batches-py/``) or their archive ``cifar-10-python.tar.gz``, or the MNIST IDX files (raw or .gz);
3. for Fashion-MNIST, the Debian package copy in ``FASHION_MNIST_SYSTEM_DIR``;
4. a download of the official archives into ``<root>/<name>/`` (when ``download=True``), checked by md5.

``download=None`` (the default) means the current policy: True for library calls, and what the
command's ``--download`` flag says under the CLI, which sets it with ``download_policy`` -- a
command touches the network only when asked to.

CIFAR-10's extra split ``test_first100_exact`` (the first 100 official test images) is read from its own npz, or
cut from the official test batch; never from ``test.npz``, which may be a re-encoded, re-ordered copy.

Loaded arrays are cached per (dataset, split, root). The returned arrays are shared by every caller and therefore
read-only: ``.copy()`` them before changing them. ``clear_cache()`` forgets everything loaded.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import io
import os
import pathlib
import pickle
import sys
import tarfile
import tempfile
import urllib.request
import warnings
import zlib

import numpy as np
import torch

from . import HamverifyError

DATASETS = ("cifar10", "mnist", "fashion-mnist")
DATA_ENV_VAR = "HAMVERIFY_DATA"
DEFAULT_ROOT = pathlib.Path("~/.cache/hamverify")
# Where Debian's `dataset-fashion-mnist` package installs the IDX .gz files. Looked up at call time, so tests
# (and unusual installs) can point it elsewhere.
FASHION_MNIST_SYSTEM_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 10

_IMAGE_SHAPES = {"cifar10": (32, 32, 3), "mnist": (28, 28, 1), "fashion-mnist": (28, 28, 1)}
_NUM_CLASSES = 10
# Splits that are a leading slice of the official test set: split name -> number of images.
_TEST_PREFIX_SPLITS = {"cifar10": {"test_first100_exact": 100}}

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

# Official IDX archives: dataset -> (base URL, {file name: md5 of the .gz}).
IDX_SOURCES = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


# ----------------------------------------------------------------------------------------------------------- API


def resolve_root(data_dir: str | os.PathLike | None) -> pathlib.Path:
    """The data root: ``data_dir`` if given, else env HAMVERIFY_DATA, else ~/.cache/hamverify."""
    if data_dir is not None and str(data_dir) != "":
        return pathlib.Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR, "")
    if from_env:
        return pathlib.Path(from_env).expanduser()
    return DEFAULT_ROOT.expanduser()


_DOWNLOAD_POLICY = [True]  # innermost download_policy() last; the library default first


@contextlib.contextmanager
def download_policy(allowed: bool):
    """Within the block, ``load_dataset(download=None)`` downloads missing data only if ``allowed``
    (the CLI's ``--download``)."""
    _DOWNLOAD_POLICY.append(bool(allowed))
    try:
        yield
    finally:
        _DOWNLOAD_POLICY.pop()


def downloads_allowed() -> bool:
    return _DOWNLOAD_POLICY[-1]


def load_dataset(name: str, split: str = "test", data_dir=None, download: bool | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Images ``x`` uint8 (N, H, W, C) and labels ``y`` int64 (N,); both read-only and shared (see module doc).
    ``download``: fetch missing official files (None: the current download_policy)."""
    download = downloads_allowed() if download is None else download
    name = _canonical_name(name)
    _check_split(name, split)
    root = resolve_root(data_dir)
    _check_explicit_root(root, data_dir)
    try:  # what is on disk, whatever the download setting (one cache entry for both)
        return _load_cached(name, split, root, False)
    except HamverifyError:
        if not download:
            raise
    return _load_cached(name, split, root, True)


def dataset_source(name: str, split: str = "test", data_dir=None) -> str:
    """Which kind of source ``load_dataset`` read (or would read) this split from: ``npz`` or
    ``official`` (the official files, a Debian copy or a download); stored in verification records
    so that a resume never mixes inputs of two sources (a JPEG npz copy and the official files
    hold different pixels)."""
    name = _canonical_name(name)
    root = resolve_root(data_dir)
    return "npz" if (root / name / f"{split}.npz").is_file() else "official"


def to_tensor(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) images -> float32 tensor (N, C, H, W) with values in [0, 1]."""
    x_uint8 = np.asarray(x_uint8)
    if x_uint8.dtype != np.uint8 or x_uint8.ndim != 4:
        raise ValueError(f"to_tensor expects uint8 images of shape (N, H, W, C), got {x_uint8.dtype} {x_uint8.shape}")
    with warnings.catch_warnings():
        # torch warns about wrapping read-only arrays; this view is only read, never written through.
        warnings.simplefilter("ignore", UserWarning)
        pixels = torch.from_numpy(x_uint8)
    return pixels.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255.0)


def clear_cache() -> None:
    """Forget all loaded arrays (e.g. after files on disk changed)."""
    _load_cached.cache_clear()


# ---------------------------------------------------------------------------------------------- search and cache


def _canonical_name(name: str) -> str:
    canonical = str(name).strip().lower().replace("_", "-")
    if canonical not in DATASETS:
        raise HamverifyError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return canonical


def _valid_splits(name: str) -> tuple[str, ...]:
    return ("train", "test", *_TEST_PREFIX_SPLITS.get(name, {}))


def _check_split(name: str, split: str) -> None:
    if split not in _valid_splits(name):
        raise HamverifyError(f"unknown split {split!r} for {name}: choose one of {', '.join(_valid_splits(name))}")


def _check_explicit_root(root: pathlib.Path, data_dir) -> None:
    """A folder the user named must exist; the default cache folder is created on download."""
    if data_dir is not None and str(data_dir) != "":
        origin = "--data-dir"
    elif os.environ.get(DATA_ENV_VAR, ""):
        origin = DATA_ENV_VAR
    else:
        return
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise HamverifyError(f"data directory {root} (from {origin}) {problem}")


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: pathlib.Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y = _load_uncached(name, split, root, download)
    x, y = _validated(name, x, y, source=f"{name} {split}")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _load_uncached(name: str, split: str, root: pathlib.Path, download: bool):
    npz_path = root / name / f"{split}.npz"
    if npz_path.is_file():
        return _read_npz(npz_path)

    # Prefix splits (the first 100 test images) come from the official test set, never from test.npz.
    prefix = _TEST_PREFIX_SPLITS.get(name, {}).get(split)
    official_split = "test" if prefix is not None else split

    found = _load_official(name, official_split, root)
    download_note = "download disabled; add --download to fetch the official files"
    if found is None and download:
        download_note = _download_official(name, official_split, root)
        found = _load_official(name, official_split, root)
    if found is None:
        raise HamverifyError(_not_found_message(name, split, root, download_note))
    x, y = found
    # Copy the slice so the cache does not keep the whole test set alive behind it.
    return (x[:prefix].copy(), y[:prefix].copy()) if prefix is not None else (x, y)


def _load_official(name: str, split: str, root: pathlib.Path):
    """The official files of ``split`` from the first folder holding them, or None."""
    if name == "cifar10":
        for folder in (root / name, root):
            found = _load_cifar_official(folder, split)
            if found is not None:
                return found
        return None
    for folder in _idx_folders(name, root):
        paths = _find_idx_pair(folder, split)
        if paths is not None:
            return _read_idx_pair(*paths)
    return None


def _idx_folders(name: str, root: pathlib.Path) -> list[pathlib.Path]:
    folders = [root / name, root, root / _TORCHVISION_FOLDERS[name] / "raw"]
    if name == "fashion-mnist":
        folders.append(pathlib.Path(FASHION_MNIST_SYSTEM_DIR))
    return folders


def _not_found_message(name: str, split: str, root: pathlib.Path, download_note: str) -> str:
    npz = f"{name}/{split}.npz"
    if name == "cifar10":
        official = f"{_CIFAR_FOLDER}/ or {_CIFAR_ARCHIVE}"
        searched = f"{root / npz}, {official} in {root / name} and {root}"
    else:
        prefix = _IDX_PREFIX[split]
        official = f"{name}/{prefix}-images-idx3-ubyte.gz + {prefix}-labels-idx1-ubyte.gz"
        searched = f"{root / npz}, IDX files in {', '.join(str(f) for f in _idx_folders(name, root))}"
    hint = f"set --data-dir or {DATA_ENV_VAR} to a folder holding {npz} or {official}"
    if name == "fashion-mnist":
        hint += " (or apt-get install dataset-fashion-mnist)"
    message = f"{name} {split} data not found (searched {searched}; {download_note}): {hint}"
    return " ".join(message.split())  # one line, whatever the paths or error texts hold


def _validated(name: str, x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Check dtype, shape and label range against the dataset; x becomes (N, H, W, C), y int64."""
    if x.dtype != np.uint8:
        raise HamverifyError(f"{source}: images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    expected_shape = _IMAGE_SHAPES[name]
    if x.ndim != 4 or x.shape[1:] != expected_shape:
        expected = ", ".join(map(str, expected_shape))
        raise HamverifyError(f"{source}: images have shape {x.shape}, expected (N, {expected}) for {name}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise HamverifyError(f"{source}: labels must be {len(x)} integers, got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= _NUM_CLASSES):
        raise HamverifyError(f"{source}: labels must lie in 0..{_NUM_CLASSES - 1}")
    return np.ascontiguousarray(x), y.astype(np.int64)


# ------------------------------------------------------------------------------------------------------- npz files


def _read_npz(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise HamverifyError(f"{path}: npz lacks array(s) {', '.join(sorted(missing))} (needs x and y)")
            return archive["x"], archive["y"]
    except HamverifyError:
        raise
    except Exception as exc:  # zipfile, zlib, format and OS errors all mean: unreadable file
        raise HamverifyError(f"{path}: not a readable npz file ({_short(exc)})") from exc


# ---------------------------------------------------------------------------------------------- CIFAR-10 pickles


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches hold (dicts, lists, numpy arrays): pickles can run code, and a data
    folder is not trusted code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),  # labels saved as numpy integers by re-pickled copies
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 protocol-2 pickles store bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _parse_cifar_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: b'data' (N, 3072) uint8, channel-planes flattened -> (N, 32, 32, 3) HWC."""
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:
        raise HamverifyError(f"{source}: not a readable CIFAR-10 batch pickle ({_short(exc)})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise HamverifyError(f"{source}: not a CIFAR-10 batch (needs keys b'data' and b'labels')")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise HamverifyError(f"{source}: CIFAR-10 batch data has {data.dtype} {data.shape} for {len(labels)} labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _load_cifar_official(folder: pathlib.Path, split: str):
    batch_names = _CIFAR_BATCHES[split]
    batch_folder = folder / _CIFAR_FOLDER
    if all((batch_folder / b).is_file() for b in batch_names):
        paths = [batch_folder / b for b in batch_names]
        return _concat([_parse_cifar_batch(p.read_bytes(), str(p)) for p in paths])
    archive = folder / _CIFAR_ARCHIVE
    if archive.is_file():
        return _concat(_read_cifar_archive(archive, batch_names))
    return None


def _read_cifar_archive(archive: pathlib.Path, batch_names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches read straight from the .tar.gz, in one pass (seeking back in a gzip stream re-decompresses)."""
    raw_batches = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in batch_names and base not in raw_batches:
                    raw_batches[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise HamverifyError(f"{archive}: not a readable CIFAR-10 archive ({_short(exc)})") from exc
    missing = [b for b in batch_names if b not in raw_batches]
    if missing:
        raise HamverifyError(f"{archive}: archive lacks {', '.join(missing)}")
    return [_parse_cifar_batch(raw_batches[b], f"{archive}:{b}") for b in batch_names]


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ----------------------------------------------------------------------------------------------------- IDX files


def _find_idx_pair(folder: pathlib.Path, split: str):
    """(images path, labels path) for ``split`` in ``folder``, raw preferred over .gz; None if either is missing."""
    prefix = _IDX_PREFIX[split]
    images = _first_file(folder, f"{prefix}-images-idx3-ubyte")
    labels = _first_file(folder, f"{prefix}-labels-idx1-ubyte")
    return (images, labels) if images and labels else None


def _first_file(folder: pathlib.Path, stem: str):
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_pair(images_path: pathlib.Path, labels_path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise HamverifyError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    return images, labels.astype(np.int64)


def _read_idx(path: pathlib.Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file: big-endian magic (0x0000 08 <ndim>), ndim big-endian uint32 sizes, then uint8 values."""
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != expected_magic:
        found = raw[:4].hex() or "nothing"
        raise HamverifyError(f"{path}: not the expected IDX file (magic {found}, expected {expected_magic:08x})")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise HamverifyError(f"{path}: truncated IDX file ({len(raw)} bytes, header alone needs {header_size})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header_size + int(np.prod(dims))
    if len(raw) != expected_size:
        problem = "truncated" if len(raw) < expected_size else "oversized"
        raise HamverifyError(f"{path}: {problem} IDX file ({len(raw)} bytes, header {dims} needs {expected_size})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _read_maybe_gzip(path: pathlib.Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise HamverifyError(f"{path}: unreadable or truncated file ({_short(exc)})") from exc


# ------------------------------------------------------------------------------------------------------ download


class _DownloadFailed(Exception):
    """A download failed for a reason that is no fault of the file (no network, server error, full disk)."""


def _download_official(name: str, split: str, root: pathlib.Path) -> str:
    """Fetch the missing official files of ``split`` into <root>/<name>/. Returns a note for the not-found error;
    raises HamverifyError on a checksum mismatch."""
    folder = root / name
    if name == "cifar10":
        wanted = [(CIFAR_URL, folder / _CIFAR_ARCHIVE, CIFAR_MD5)]
    else:
        base_url, md5s = IDX_SOURCES[name]
        prefix = _IDX_PREFIX[split]
        files = [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-images-idx3-ubyte.gz"]  # small file first: fail fast
        wanted = [(base_url + f, folder / f, md5s[f]) for f in files]
    for url, dest, md5 in wanted:
        if dest.is_file():
            continue
        try:
            _download(url, dest, md5)
        except _DownloadFailed as exc:
            return f"download of {url} failed: {exc}"
    return "download finished but gave no usable files"


def _download(url: str, dest: pathlib.Path, expected_md5: str) -> None:
    """Stream ``url`` into a temp file beside ``dest``; rename it to ``dest`` only once its md5 matches."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise _DownloadFailed(f"cannot write to {dest.parent} ({_short(exc)})") from exc
    temp_path = pathlib.Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual_md5 = _stream_to_file(url, out, dest.name)
        if actual_md5 != expected_md5:
            raise HamverifyError(
                f"checksum mismatch for downloaded {dest.name} from {url}: md5 {actual_md5}, expected {expected_md5}"
            )
        os.replace(temp_path, dest)
    # URLError, timeouts and disk errors are OSErrors; a connection cut mid-body is an HTTPException.
    except (OSError, EOFError, http.client.HTTPException) as exc:
        raise _DownloadFailed(_short(exc)) from exc
    finally:
        temp_path.unlink(missing_ok=True)


def _stream_to_file(url: str, out, label: str) -> str:
    """Copy the response body into ``out`` with a progress bar; returns the md5 hex digest of what was written."""
    md5 = hashlib.md5()
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = response.headers.get("Content-Length") if response.headers is not None else None
        bar = _progress_bar(int(total) if total and total.isdigit() else None, label)
        try:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return md5.hexdigest()


def _progress_bar(total: int | None, label: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {label}")


def _short(exc: BaseException) -> str:
    """An exception as one short line for an error message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------------------------------------------ fetch (CLI)


def fetch(root, names=("mnist", "cifar10"), log=print) -> list[pathlib.Path]:
    """Download the official files of ``names`` into ``root`` (md5-checked) and write lossless npz
    copies ``<root>/<name>/{train,test}.npz`` beside them (the format read first, and quick to
    load); returns the npz paths.  ``python -m hamverify.data fetch [ROOT] [DATASET ...]``."""
    root = pathlib.Path(root).expanduser()
    written = []
    for name in names:
        name = _canonical_name(name)
        for split in ("train", "test"):
            npz = root / name / f"{split}.npz"
            if npz.is_file():
                log(f"{npz}: already there")
                continue
            x, y = _load_uncached(name, split, root, download=True)
            x, y = _validated(name, x, y, source=f"{name} {split}")
            npz.parent.mkdir(parents=True, exist_ok=True)
            tmp = npz.with_name(npz.name + ".tmp.npz")
            np.savez_compressed(tmp, x=x, y=y)
            os.replace(tmp, npz)
            written.append(npz)
            log(f"{npz}: {len(x)} images")
    return written


def _main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m hamverify.data",
                                     description="Download data sets into a data root (then set HAMVERIFY_DATA to it).")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download the official files and write npz copies")
    f.add_argument("root", nargs="?", default=str(DEFAULT_ROOT), help=f"data root (default {DEFAULT_ROOT})")
    f.add_argument("datasets", nargs="*", default=["mnist", "cifar10"], help=f"of {', '.join(DATASETS)}")
    args = parser.parse_args(argv)
    try:
        fetch(args.root, args.datasets)
    except HamverifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done: export HAMVERIFY_DATA={pathlib.Path(args.root).expanduser()}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
