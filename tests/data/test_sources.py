"""Loaders on small generated fixtures, and clear errors for missing or corrupted sources."""

import gzip
import pickle

import numpy as np
import pytest

from unlearn_ops.data.sources import (
    DataSourceError,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_mnist5k,
    load_rotten_tomatoes,
)


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture()
def tiny_fmnist(tmp_path, monkeypatch):
    import unlearn_ops.data.sources as src

    monkeypatch.setattr(src, "FMNIST_FILES", {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 20),
                                              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10)})
    monkeypatch.setattr(src, "FMNIST_SYSTEM_DIR", tmp_path / "nowhere")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 0x803)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10, 0x801)
    return tmp_path


def test_fashion_mnist_reads_idx(tiny_fmnist):
    ds = load_fashion_mnist(tiny_fmnist)
    x, y = ds.splits["train"]
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.uint8
    assert y.tolist() == [i % 10 for i in range(20)]
    assert len(ds.classes) == 10


def test_fashion_mnist_corrupted_file_names_file_and_fix(tiny_fmnist):
    (tiny_fmnist / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    with pytest.raises(DataSourceError, match="train-labels-idx1-ubyte.gz.*dataset-fashion-mnist"):
        load_fashion_mnist(tiny_fmnist)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    import unlearn_ops.data.sources as src

    monkeypatch.setattr(src, "FMNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DataSourceError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def write_cifar(path, n, seed):
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"labels": list(rng.integers(0, 10, n))}, f)


def test_cifar10_reads_pickle_format(tmp_path):
    for i in range(1, 6):
        write_cifar(tmp_path / f"data_batch_{i}", 4, i)
    write_cifar(tmp_path / "test_batch", 3, 9)
    ds = load_cifar10(tmp_path)
    assert ds.splits["train"][0].shape == (20, 3, 32, 32)
    assert ds.splits["test"][0].shape == (3, 3, 32, 32)


def test_cifar10_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    for i in range(1, 6):
        write_cifar(tmp_path / f"data_batch_{i}", 2, i)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DataSourceError, match="test_batch"):
        load_cifar10(tmp_path)


def test_cifar10_missing_file(tmp_path):
    with pytest.raises(DataSourceError, match="data_batch_1.*no package ships them"):
        load_cifar10(tmp_path)


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load_digits(seed=1), load_digits(seed=1)
    assert np.array_equal(a.extra["train"]["row"], b.extra["train"]["row"])
    assert not set(a.extra["train"]["row"]) & set(a.extra["test"]["row"])
    assert len(a.extra["train"]["row"]) + len(a.extra["test"]["row"]) == 1797


@pytest.mark.integration
def test_packaged_mnist5k_and_rotten_tomatoes():
    m = load_mnist5k()
    assert sum(len(v[1]) for v in m.splits.values()) == 5000
    assert np.bincount(np.concatenate([v[1] for v in m.splits.values()])).tolist() == [500] * 10
    rt = load_rotten_tomatoes()
    assert sum(len(v[1]) for v in rt.splits.values()) == 12808
    assert rt.splits["train"][0].dtype.kind == "U"
