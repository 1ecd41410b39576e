"""Tests for hamverify.data: real shared data (skipped when absent) and tiny official-format files written here.

No test touches the network: an autouse fixture makes every URL open fail unless a test serves its own bytes.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import pickle
import tarfile
import urllib.error

import numpy as np
import pytest
import torch

from hamverify import HamverifyError, data

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _shared_data_root() -> pathlib.Path:
    from_env = os.environ.get("HAMVERIFY_DATA")
    return pathlib.Path(from_env) if from_env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_root() -> pathlib.Path:
    root = _shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root}")
    return root


@pytest.fixture(autouse=True)
def offline_and_isolated(monkeypatch, tmp_path):
    """No network, no system Fashion-MNIST copy, no stale cache: each test sees only what it sets up."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-copy")
    data.clear_cache()
    yield
    data.clear_cache()


# ----------------------------------------------------------------------------------------------- file writers


def _random_images(rng, n: int, shape) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _cifar_batch_bytes(images_hwc: np.ndarray, labels) -> bytes:
    """A batch as the official files hold it: channel planes flattened, bytes keys, old numpy module path."""
    flat_chw = images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), -1)
    raw = pickle.dumps({b"batch_label": b"test", b"data": flat_chw, b"labels": [int(v) for v in labels]}, protocol=2)
    # The official pickles were written by Python 2 numpy, which names numpy.core; protocol 2 GLOBALs are text.
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _py2_cifar_pickle(flat: np.ndarray, labels: list[int]) -> bytes:
    """{'data': flat, 'labels': labels} byte for byte as Python 2's cPickle (protocol 2) wrote the official
    batches: str as SHORT_BINSTRING, the array via numpy.core.multiarray._reconstruct."""
    import struct

    def short_str(text: bytes) -> bytes:
        return b"U" + bytes([len(text)]) + text

    def int4(value: int) -> bytes:
        return b"J" + struct.pack("<i", value)

    dtype_u1 = (b"cnumpy\ndtype\n" + short_str(b"u1") + b"K\x00K\x01\x87R"
                + b"(K\x03" + short_str(b"|") + b"NNN" + int4(-1) + int4(-1) + b"K\x00tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short_str(b"b") + b"\x87R"
             + b"(K\x01" + int4(flat.shape[0]) + int4(flat.shape[1]) + b"\x86" + dtype_u1 + b"\x89"
             + b"T" + struct.pack("<i", flat.nbytes) + flat.tobytes() + b"tb")
    label_list = b"](" + b"".join(int4(v) for v in labels) + b"e"
    return b"\x80\x02}(" + short_str(b"data") + array + short_str(b"labels") + label_list + b"u."


def _write_cifar_official(rng, folder: pathlib.Path, per_batch: int = 3, as_archive: bool = False):
    """Writes 5 train batches and a test batch; returns {split: (x, y)} as the loader should give them."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for name in names:
        x = _random_images(rng, per_batch, (32, 32, 3))
        y = rng.integers(0, 10, size=per_batch)
        batches[name] = (x, y, _cifar_batch_bytes(x, y))
    folder.mkdir(parents=True, exist_ok=True)
    if as_archive:
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, (_, _, raw) in batches.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        (folder / "cifar-10-batches-py").mkdir()
        for name, (_, _, raw) in batches.items():
            (folder / "cifar-10-batches-py" / name).write_bytes(raw)
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return {
        "train": (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])),
        "test": batches["test_batch"][:2],
    }


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic + dims + array.astype(np.uint8).tobytes()


def _write_idx_split(rng, folder: pathlib.Path, prefix: str = "t10k", n: int = 5, gz: bool = False):
    """Writes <prefix>-images/-labels IDX files; returns (x (n,28,28), y) as written."""
    x = _random_images(rng, n, (28, 28))
    y = rng.integers(0, 10, size=n).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
        raw = _idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return x, y


# -------------------------------------------------------------------------------------------------- real data


def test_mnist_test_real(shared_root):
    x, y = data.load_dataset("mnist", "test", data_dir=shared_root, download=False)
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.uint8
    assert y.dtype == np.int64
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_train_real_first_labels(shared_root):
    x, y = data.load_dataset("mnist", "train", data_dir=shared_root, download=False)
    assert x.shape == (60000, 28, 28, 1)
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_cifar_test_real(shared_root):
    x, y = data.load_dataset("cifar10", "test", data_dir=shared_root, download=False)
    assert x.shape == (10000, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [1000] * 10


def test_cifar_first100_exact_real(shared_root):
    x, y = data.load_dataset("cifar10", "test_first100_exact", data_dir=shared_root, download=False)
    assert x.shape == (100, 32, 32, 3)
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert x[0, 0, 0].tolist() == [158, 112, 49]  # test_batch data[0][0], [1024], [2048]


def test_env_var_and_cache_give_same_read_only_arrays(shared_root, monkeypatch):
    monkeypatch.setenv("HAMVERIFY_DATA", str(shared_root))
    x1, y1 = data.load_dataset("cifar10", "test_first100_exact", download=False)
    x2, _ = data.load_dataset("CIFAR10", "test_first100_exact", data_dir=shared_root, download=False)
    assert x1 is x2
    assert not x1.flags.writeable and not y1.flags.writeable


# ------------------------------------------------------------------------------------------ roots and tensors


def test_resolve_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HAMVERIFY_DATA", str(tmp_path / "env"))
    assert data.resolve_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("HAMVERIFY_DATA")
    assert data.resolve_root(None) == pathlib.Path.home() / ".cache" / "hamverify"


def test_to_tensor_layout_and_range():
    x = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3) * 2
    x.setflags(write=False)
    t = data.to_tensor(x)
    assert t.dtype == torch.float32 and t.shape == (2, 3, 3, 4)
    assert torch.equal(t[1, 2, 0, 3], torch.tensor(x[1, 0, 3, 2] / 255.0, dtype=torch.float32))
    assert 0.0 <= t.min() and t.max() <= 1.0


# ------------------------------------------------------------------------------------------ official formats


@pytest.mark.parametrize("as_archive", [False, True], ids=["batches", "tar.gz"])
def test_cifar_official_chw_to_hwc(tmp_path, as_archive):
    rng = np.random.default_rng(0)
    expected = _write_cifar_official(rng, tmp_path / "cifar10", as_archive=as_archive)
    for split in ("train", "test"):
        x, y = data.load_dataset("cifar10", split, data_dir=tmp_path, download=False)
        np.testing.assert_array_equal(x, expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])
    x, _ = data.load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    assert x.shape == (15, 32, 32, 3)


def test_cifar_official_pixel_planes_exactly(tmp_path):
    """Pixel (r, c) channel k must come from flat index k*1024 + r*32 + c."""
    flat = np.zeros((1, 3072), dtype=np.uint8)
    flat[0, 0], flat[0, 1024], flat[0, 2048] = 158, 112, 49
    flat[0, 1 * 32 + 2] = 7  # red of row 1, column 2
    flat[0, 2048 + 31 * 32 + 30] = 9  # blue of row 31, column 30
    folder = tmp_path / "cifar-10-batches-py"  # official folder directly under the root
    folder.mkdir()
    (folder / "test_batch").write_bytes(_py2_cifar_pickle(flat, [4]))
    x, y = data.load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert x[0, 0, 0].tolist() == [158, 112, 49]
    assert x[0, 1, 2, 0] == 7 and x[0, 31, 30, 2] == 9
    assert int(x.astype(int).sum()) == 158 + 112 + 49 + 7 + 9
    assert y.tolist() == [4]


def test_cifar_first100_comes_from_official_test_not_test_npz(tmp_path):
    rng = np.random.default_rng(1)
    expected = _write_cifar_official(rng, tmp_path, per_batch=120, as_archive=True)
    # A (re-ordered) test.npz must not be used for the exact split.
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "test.npz", x=expected["test"][0][::-1], y=expected["test"][1][::-1])
    x, y = data.load_dataset("cifar10", "test_first100_exact", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(x, expected["test"][0][:100])
    np.testing.assert_array_equal(y, expected["test"][1][:100])


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("split,prefix", [("test", "t10k"), ("train", "train")])
def test_mnist_idx(tmp_path, gz, split, prefix):
    rng = np.random.default_rng(2)
    x_written, y_written = _write_idx_split(rng, tmp_path / "mnist", prefix=prefix, gz=gz)
    x, y = data.load_dataset("mnist", split, data_dir=tmp_path, download=False)
    assert x.shape == (5, 28, 28, 1) and y.dtype == np.int64
    np.testing.assert_array_equal(x[..., 0], x_written)
    np.testing.assert_array_equal(y, y_written)


def test_npz_wins_over_official_files(tmp_path):
    rng = np.random.default_rng(3)
    _write_idx_split(rng, tmp_path / "mnist")
    x_npz = _random_images(rng, 2, (28, 28))
    np.savez(tmp_path / "mnist" / "test.npz", x=x_npz, y=np.array([3, 3], dtype=np.uint8))
    x, y = data.load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(x[..., 0], x_npz)
    assert y.tolist() == [3, 3]


def test_fashion_mnist_system_copy(tmp_path, monkeypatch):
    system_dir = tmp_path / "system"
    rng = np.random.default_rng(4)
    x_written, y_written = _write_idx_split(rng, system_dir, gz=True)
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", system_dir)
    empty_root = tmp_path / "root"
    empty_root.mkdir()
    x, y = data.load_dataset("fashion-mnist", "test", data_dir=empty_root, download=False)
    np.testing.assert_array_equal(x[..., 0], x_written)
    np.testing.assert_array_equal(y, y_written)


# ------------------------------------------------------------------------------------------------ bad inputs


def test_truncated_idx(tmp_path):
    _write_idx_split(np.random.default_rng(5), tmp_path / "mnist")
    images = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(HamverifyError, match="t10k-images-idx3-ubyte.*truncated"):
        data.load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_truncated_gzip_idx(tmp_path):
    _write_idx_split(np.random.default_rng(6), tmp_path / "mnist", gz=True)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-10])
    with pytest.raises(HamverifyError, match="t10k-labels-idx1-ubyte.gz"):
        data.load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_idx_wrong_magic(tmp_path):
    _write_idx_split(np.random.default_rng(7), tmp_path / "mnist")
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    images = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    labels.write_bytes(images.read_bytes())  # an images file where labels belong
    with pytest.raises(HamverifyError, match="t10k-labels-idx1-ubyte.*magic"):
        data.load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_missing_data_dir_is_one_line_error(tmp_path):
    with pytest.raises(HamverifyError) as err:
        data.load_dataset("mnist", "test", data_dir=tmp_path / "nope")
    assert "nope" in str(err.value) and "\n" not in str(err.value)


def test_missing_env_dir_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HAMVERIFY_DATA", str(tmp_path / "gone"))
    with pytest.raises(HamverifyError, match="HAMVERIFY_DATA") as err:
        data.load_dataset("cifar10")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", data.DATASETS)
def test_not_found_is_one_line_naming_places(tmp_path, name):
    with pytest.raises(HamverifyError) as err:
        data.load_dataset(name, "test", data_dir=tmp_path, download=True)  # network fails (fixture)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / name / "test.npz") in message
    assert "HAMVERIFY_DATA" in message and "network disabled in tests" in message
    assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir())


def test_fashion_does_not_read_mnist_npz(tmp_path):
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "test.npz", x=np.zeros((1, 28, 28), np.uint8), y=np.zeros(1, np.uint8))
    with pytest.raises(HamverifyError, match="not found"):
        data.load_dataset("fashion-mnist", "test", data_dir=tmp_path, download=False)


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(HamverifyError, match="unknown dataset"):
        data.load_dataset("imagenet", data_dir=tmp_path)
    with pytest.raises(HamverifyError, match="unknown split"):
        data.load_dataset("mnist", "test_first100_exact", data_dir=tmp_path)


def test_corrupt_npz_names_file(tmp_path):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "test.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(HamverifyError, match="test.npz"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


def test_npz_with_wrong_image_shape(tmp_path):
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "test.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.zeros(2, np.uint8))
    with pytest.raises(HamverifyError, match="shape"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


def test_cifar_batch_with_numpy_labels(tmp_path):
    """Re-pickled copies (Python 3, newest protocol) may hold labels as numpy integers."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    flat = np.random.default_rng(9).integers(0, 256, size=(2, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": flat, b"labels": list(np.array([5, 6]))}))
    x, y = data.load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert y.tolist() == [5, 6] and x.shape == (2, 32, 32, 3)


def test_corrupt_pickle_names_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(HamverifyError, match="test_batch"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": RunsCode(), b"labels": []}))
    with pytest.raises(HamverifyError, match="refusing"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


# -------------------------------------------------------------------------------------------------- download


class _FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, fail_after: int | None = None):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}
        self._fail_after = fail_after

    def read(self, size=-1):
        if self._fail_after is not None and self.tell() >= self._fail_after:
            raise ConnectionResetError("connection reset mid-download")
        return super().read(min(size, self._fail_after) if self._fail_after else size)


def _serve(monkeypatch, bodies: dict[str, bytes], fail_after: int | None = None):
    """Make urlopen serve ``bodies`` by file name; returns the list of URLs requested."""
    requested = []

    def fake_urlopen(url, timeout=None):
        assert timeout is not None and timeout <= 30
        requested.append(url)
        return _FakeResponse(bodies[url.rsplit("/", 1)[-1]], fail_after)

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    return requested


def _tiny_mnist_gz(rng):
    x = _random_images(rng, 3, (28, 28))
    y = np.array([1, 2, 3], dtype=np.uint8)
    bodies = {
        "t10k-images-idx3-ubyte.gz": gzip.compress(_idx_bytes(x)),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(_idx_bytes(y)),
    }
    return x, y, bodies


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, {"t10k-labels-idx1-ubyte.gz": b"wrong bytes", "t10k-images-idx3-ubyte.gz": b"wrong"})
    with pytest.raises(HamverifyError) as err:
        data.load_dataset("mnist", "test", data_dir=tmp_path)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert hashlib.md5(b"wrong bytes").hexdigest() in message
    assert data.IDX_SOURCES["mnist"][1]["t10k-labels-idx1-ubyte.gz"] in message
    assert list((tmp_path / "mnist").iterdir()) == []


def test_download_cut_mid_stream_leaves_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, {"cifar-10-python.tar.gz": b"x" * 5000}, fail_after=1000)
    with pytest.raises(HamverifyError, match="connection reset") as err:
        data.load_dataset("cifar10", "test", data_dir=tmp_path)
    assert "not found" in str(err.value)
    assert list((tmp_path / "cifar10").iterdir()) == []


def test_download_success_then_loads(tmp_path, monkeypatch):
    x_served, y_served, bodies = _tiny_mnist_gz(np.random.default_rng(8))
    requested = _serve(monkeypatch, bodies)
    base_url, md5s = data.IDX_SOURCES["mnist"]
    patched = dict(md5s, **{name: hashlib.md5(body).hexdigest() for name, body in bodies.items()})
    monkeypatch.setitem(data.IDX_SOURCES, "mnist", (base_url, patched))
    x, y = data.load_dataset("mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(x[..., 0], x_served)
    assert y.tolist() == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(bodies)
    assert all(url.startswith(base_url) for url in requested)


def test_download_disabled_never_opens_urls(tmp_path, monkeypatch):
    requested = _serve(monkeypatch, {})
    with pytest.raises(HamverifyError, match="download disabled"):
        data.load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert requested == []


def test_fetch_downloads_then_writes_npz_copies(tmp_path, monkeypatch):
    """`python -m hamverify.data fetch ROOT mnist`: the official files, then lossless npz copies."""
    rng = np.random.default_rng(9)
    x_test, y_test, bodies = _tiny_mnist_gz(rng)
    x_train = _random_images(rng, 4, (28, 28))
    y_train = np.array([4, 3, 2, 1], dtype=np.uint8)
    bodies["train-images-idx3-ubyte.gz"] = gzip.compress(_idx_bytes(x_train))
    bodies["train-labels-idx1-ubyte.gz"] = gzip.compress(_idx_bytes(y_train))
    _serve(monkeypatch, bodies)
    base_url, md5s = data.IDX_SOURCES["mnist"]
    monkeypatch.setitem(data.IDX_SOURCES, "mnist",
                        (base_url, dict(md5s, **{n: hashlib.md5(b).hexdigest() for n, b in bodies.items()})))
    lines = []
    written = data.fetch(tmp_path, ["mnist"], log=lines.append)
    assert written == [tmp_path / "mnist" / "train.npz", tmp_path / "mnist" / "test.npz"]
    with np.load(tmp_path / "mnist" / "test.npz") as d:
        np.testing.assert_array_equal(d["x"][..., 0], x_test)
        assert d["y"].tolist() == [1, 2, 3]
    assert data.fetch(tmp_path, ["mnist"], log=lines.append) == []  # already there: nothing again
    assert data._main(["fetch", str(tmp_path), "mnist"]) == 0
