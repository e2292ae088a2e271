"""Datasets: deterministic splits, normalization, and each source read from real files."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from edgekd.data import load_data, read_idx
from edgekd.data import sources
from edgekd.errors import InputError


def test_digits_splits_are_deterministic_disjoint_and_normalized():
    first, second = load_data("digits", seed=3), load_data("digits", seed=3)
    assert torch.equal(first.train.tensors[0], second.train.tensors[0])
    assert sum(len(getattr(first, s)) for s in ("train", "val", "test")) == 1797
    other = load_data("digits", seed=4)
    assert not torch.equal(first.test.tensors[1], other.test.tensors[1])
    train_x = first.train.tensors[0]
    assert abs(float(train_x.mean())) < 1e-4 and abs(float(train_x.std()) - 1) < 1e-2
    assert first.input_shape == (1, 8, 8) and first.num_classes == 10
    # Stratified: every class is in the test split in roughly its share.
    counts = np.bincount(first.test.tensors[1].numpy(), minlength=10)
    assert counts.min() >= 30


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path):
    rng = np.random.default_rng(0)
    for stem, shape in (("train-images-idx3-ubyte", (50, 28, 28)), ("t10k-images-idx3-ubyte", (20, 28, 28))):
        write_idx(tmp_path / f"{stem}.gz", rng.integers(0, 256, shape))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(50) % 10)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    return tmp_path


def test_fashion_mnist_idx_files_from_data_root(fake_fashion):
    bundle = load_data("fashion-mnist", seed=0, root=str(fake_fashion), val_split=0.2)
    assert bundle.input_shape == (1, 28, 28)
    assert len(bundle.test) == 20 and len(bundle.train) + len(bundle.val) == 50
    raw = read_idx(fake_fashion / "t10k-labels-idx1-ubyte.gz")
    assert torch.equal(bundle.test.tensors[1], torch.from_numpy(raw.astype(np.int64)))


def test_fashion_mnist_missing_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "system"))
    monkeypatch.setenv("EDGEKD_DATA", str(tmp_path / "env"))
    with pytest.raises(InputError) as error:
        load_data("fashion-mnist", seed=0)
    message = str(error.value)
    for place in ("env", "system", "dataset-fashion-mnist"):
        assert place in message


def test_a_fashion_mnist_root_that_does_not_exist_is_an_error_not_a_fallback(fake_fashion, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", str(fake_fashion))  # a copy a fallback would find
    with pytest.raises(InputError, match="data.root: Fashion-MNIST folder .*mine.* does not exist"):
        load_data("fashion-mnist", seed=0, root=str(tmp_path / "mine"))


def test_corrupt_idx_file_is_named(fake_fashion):
    (fake_fashion / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="train-labels-idx1-ubyte.gz"):
        load_data("fashion-mnist", seed=0, root=str(fake_fashion))


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.random((60, 3, 6, 6)), y=np.arange(60) % 3)
    bundle = load_data("npz", seed=0, root=str(path))
    assert bundle.input_shape == (3, 6, 6) and bundle.num_classes == 3
    np.savez(path, images=rng.random((5, 6, 6)))
    with pytest.raises(InputError, match="lacks array"):
        load_data("npz", seed=0, root=str(path))


def test_imagefolder_dataset(tmp_path):
    rng = np.random.default_rng(2)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for index in range(10):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{index}.png")
    bundle = load_data("imagefolder", seed=0, root=str(tmp_path), test_split=0.2, options={"image_size": 8})
    assert bundle.input_shape == (3, 8, 8) and bundle.num_classes == 2
    assert len(bundle.test) == 4


def make_blobs(root=None, n=40):
    """A user dataset factory, referenced as 'tests.test_data:make_blobs'."""
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 4, 4)).astype(np.float32), np.arange(n) % 2, None, None


def test_user_callable_dataset():
    bundle = load_data("tests.test_data:make_blobs", seed=0, options={"n": 50})
    assert bundle.num_classes == 2 and sum(len(getattr(bundle, s)) for s in ("train", "val", "test")) == 50


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(InputError, match="Did you mean 'digits'"):
        load_data("digit", seed=0)
