"""Bad data is refused before training, naming the dataset and the fault: npz, IDX and image-folder files
with each fault, a factory with the wrong signature, and a teacher cache keyed by the data's contents."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import pytest
from PIL import Image

import edgekd
from edgekd.data import load_data
from edgekd.errors import InputError
from tests.conftest import tiny_recipe
from tests.test_data import write_idx

RNG = np.random.default_rng(0)
GOOD_X, GOOD_Y = RNG.random((60, 6, 6)).astype(np.float32), np.arange(60) % 3


def _with_nan() -> np.ndarray:
    x = GOOD_X.copy()
    x[7, 2, 2] = np.nan
    return x


NPZ_FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "negative labels": ({"y": GOOD_Y - 1}, r"y holds negative labels \(-1 at index 0\)"),
    "string images": ({"x": np.array(["a"] * 60)}, r"x holds <U1 values; images must be numbers"),
    "string labels": ({"y": np.array(["cat", "dog", "cow"] * 20)}, r"y holds <U3 values; labels are class indices"),
    "wrong rank": ({"x": GOOD_X.reshape(60, 36)}, r"x has shape \(60, 36\); images must be"),
    "empty": ({"x": np.zeros((0, 6, 6)), "y": np.zeros(0, int)}, "x holds no images"),
    "one-hot labels": ({"y": np.eye(3)[GOOD_Y]}, r"y has shape \(60, 3\): one-hot vectors"),
    "fractional labels": ({"y": GOOD_Y + 0.5}, "not a whole number"),
    "length mismatch": ({"y": GOOD_Y[:50]}, "x has 60 images but y has 50 labels"),
    "label out of range": ({"y": np.where(np.arange(60) == 5, 1000, GOOD_Y)}, r"997 of the 1001 classes .* no sample in the training split"),
    "a class with no sample": ({"y": np.where(GOOD_Y == 1, 2, GOOD_Y)}, r"1 of the 3 classes .* no sample in the training split: 1"),
    "nan pixels": ({"x": _with_nan()}, r"NaN or infinite pixels in 1 image\(s\), the first at index 7"),
    "test images of another size": ({"x_test": RNG.random((9, 8, 8)), "y_test": np.arange(9) % 3},
                                    r"test images are 1×8×8 but training images are 1×6×6"),
    "test labels without test images": ({"y_test": np.arange(9) % 3}, "gives y_test without x_test"),
    "a test split missing a class": ({"x_test": RNG.random((9, 6, 6)), "y_test": np.arange(9) % 2},
                                     r"no sample in the test split: 2"),
    "too few samples to hold out a test split": ({"x": GOOD_X[:2], "y": GOOD_Y[:2]}, "the test split holds no samples"),
}  # fmt: skip


@pytest.mark.parametrize("fault", NPZ_FAULTS, ids=list(NPZ_FAULTS))
def test_a_faulty_npz_file_is_refused_naming_it(fault: str, tmp_path: Path):
    change, message = NPZ_FAULTS[fault]
    path = tmp_path / "data.npz"
    np.savez(path, **{"x": GOOD_X, "y": GOOD_Y, **change})
    with pytest.raises(InputError, match=message) as error:
        load_data("npz", seed=0, root=str(path))
    assert str(path) in str(error.value) and error.value.exit_code == 2


def fashion_folder(root: Path, train_labels: np.ndarray | None = None, train_count: int = 50) -> Path:
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte.gz", RNG.integers(0, 256, (train_count, 28, 28)))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(50) % 10 if train_labels is None else train_labels)
    write_idx(root / "t10k-images-idx3-ubyte.gz", RNG.integers(0, 256, (20, 28, 28)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: fashion_folder(root, train_count=49), "x has 49 images but y has 50 labels"),
        (lambda root: fashion_folder(root, train_labels=np.where(np.arange(50) == 3, 200, np.arange(50) % 10)),
         r"190 of the 201 classes"),
    ],
    ids=["label count differs from image count", "a label out of range"],
)  # fmt: skip
def test_faulty_idx_files_are_refused(make: Callable[[Path], Path], message: str, tmp_path: Path):
    root = make(tmp_path / "fashion")
    with pytest.raises(InputError, match=message):
        load_data("fashion-mnist", seed=0, root=str(root))


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(RNG.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(root / name / f"{index}.png")
    return root


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width×height pixels but holds almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _bomb(root: Path) -> Path:
    image_folder(root, {"a": 5, "b": 5})
    png_header_only(root / "b" / "bomb.png", 100_000, 100_000)
    return root


def _split_folders(root: Path, test_classes: dict[str, int]) -> Path:
    image_folder(root / "train", {"a": 5, "b": 5, "c": 5})
    image_folder(root / "test", test_classes)
    return root


IMAGE_FOLDER_FAULTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "an empty class folder": (lambda root: image_folder(root, {"a": 5, "b": 5, "c": 0}), r"class folder .*c.* holds no images"),
    "an empty first class folder": (lambda root: image_folder(root, {"a": 0, "b": 5}), r"class folder .*a.* holds no images"),
    "test/ missing a class": (lambda root: _split_folders(root, {"a": 2, "b": 2}), r"class folder .*test/c.* is missing"),
    "test/ with an extra class": (lambda root: _split_folders(root, {"a": 2, "b": 2, "c": 2, "d": 2}), r"class folder\(s\) \['d'\]"),
    "a decompression bomb": (_bomb, r"bomb\.png.* too large to decode safely"),
}


@pytest.mark.parametrize("fault", IMAGE_FOLDER_FAULTS, ids=list(IMAGE_FOLDER_FAULTS))
def test_a_faulty_image_folder_is_refused_naming_the_folder_or_file(fault: str, tmp_path: Path):
    make, message = IMAGE_FOLDER_FAULTS[fault]
    root = make(tmp_path / "images")
    with pytest.raises(InputError, match=message):
        load_data("imagefolder", seed=0, root=str(root), options={"image_size": 8})


def factory_without_root(n: int = 40):
    """A dataset factory with the wrong signature (no root=)."""
    return RNG.random((n, 4, 4)), np.arange(n) % 2, None, None


def test_a_dataset_factory_with_the_wrong_signature_is_bad_input():
    with pytest.raises(InputError, match=r"data.dataset 'tests.test_data_checks:factory_without_root' cannot be called as factory\(root=…"):
        load_data("tests.test_data_checks:factory_without_root", seed=0)


def test_the_teacher_cache_key_covers_the_data_contents(tmp_path: Path, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, x=GOOD_X, y=GOOD_Y)
    recipe = tiny_recipe(tmp_path / "run", data={"dataset": "npz", "root": str(path)},
                         teacher={"model": "cnn(width=4)", "train": {"epochs": 1}}, stages=[])
    edgekd.compress(recipe, console=None)
    np.savez(path, x=GOOD_X[::-1].copy(), y=GOOD_Y)  # new contents, same path and settings
    edgekd.compress(recipe, console=None)
    assert "reusing the trained teacher" not in capsys.readouterr().out
    assert len(list((tmp_path / "run").glob("teacher-*.pt"))) == 2
    edgekd.compress(recipe, console=None)
    assert "reusing the trained teacher" in capsys.readouterr().out


def test_a_damaged_soft_label_file_is_computed_again_and_named(make_recipe, capsys):
    from edgekd.recipe import load_recipe
    from edgekd.run import Run

    run = Run(load_recipe(make_recipe(stages=[])), quiet=True)
    run.prepare()
    expected = run.soft_labels().all_logits(None)
    (stored,) = run.workdir.glob("soft-labels-*/plain.npy")
    stored.write_bytes(b"\x93NUMPY damaged")
    again = Run(load_recipe(make_recipe(stages=[])), console=None)
    again.prepare()
    assert torch.equal(again.soft_labels().all_logits(None), expected)
    printed = "".join(capsys.readouterr().out.split())  # rich folds long paths at any character
    assert f"softlabels{stored}aredamaged" in printed
