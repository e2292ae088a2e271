"""Where data comes from: the embedded digits set, Fashion-MNIST IDX files,
image folders, .npz arrays, and user callables (`"pkg.module:factory"`)."""

from __future__ import annotations

import gzip
import inspect
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.registry import datasets
from edgekd.errors import InputError

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

Arrays = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


@datasets.register
def digits(root: str | None = None) -> Arrays:
    """scikit-learn's 8×8 handwritten digits (1,797 images, ships with scikit-learn); no test split of its own."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target, None, None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise InputError(f"IDX file {str(path)!r} is corrupt or unreadable: {exc}") from None


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


@datasets.register(name="fashion-mnist")
def fashion_mnist(root: str | None = None) -> Arrays:
    """Fashion-MNIST from its IDX files (60k train / 10k test, 28×28 grey). A `data.root` given is the
    only place looked in: a missing one is an error, never a fallback to another copy."""
    if root and not Path(root).is_dir():
        raise InputError(f"data.root: Fashion-MNIST folder {root!r} does not exist")
    candidates = [Path(root)] if root else [Path(p) for p in (os.environ.get("EDGEKD_DATA"), FASHION_MNIST_SYSTEM_DIR) if p]
    candidates += [c / "fashion-mnist" for c in candidates if c != Path(FASHION_MNIST_SYSTEM_DIR)]
    for folder in candidates:
        found = {key: _find_idx(folder, stem) for key, stem in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            arrays = {key: read_idx(path) for key, path in found.items() if path}
            return (
                arrays["x_train"].astype(np.float32) / 255.0,
                arrays["y_train"],
                arrays["x_test"].astype(np.float32) / 255.0,
                arrays["y_test"],
            )
    looked = ", ".join(str(c) for c in candidates)
    raise InputError(
        f"Fashion-MNIST IDX files ({', '.join(s + '.gz' for s in FASHION_MNIST_FILES.values())}) were not found; "
        f"looked in: {looked}. Set data.root or $EDGEKD_DATA to a folder holding them, or on Debian/Ubuntu run "
        "`apt-get install dataset-fashion-mnist` (installs them in /usr/share/datasets/fashion-mnist)."
    )


@datasets.register
def npz(root: str | None = None) -> Arrays:
    """A .npz file with arrays `x` and `y` (and optionally `x_test`, `y_test`); `data.root` is its path."""
    if not root:
        raise InputError("data.root: the npz dataset needs the path of a .npz file")
    path = Path(root)
    if not path.is_file():
        raise InputError(f"data.root: npz file {root!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except Exception as exc:
        raise InputError(f"data.root: {root!r} is not a readable .npz file: {exc}") from None
    missing = {"x", "y"} - arrays.keys()
    if missing:
        raise InputError(f"data.root: npz file {root!r} lacks array(s) {sorted(missing)}; it has {sorted(arrays)}")
    return arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@datasets.register
def imagefolder(root: str | None = None, image_size: int = 32, grayscale: bool = False) -> Arrays:
    """`root/<class>/<image>` (and optionally `root/train/…`, `root/test/…`), resized to image_size²."""
    if not root or not Path(root).is_dir():
        raise InputError(f"data.root: image folder {root!r} does not exist")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise InputError(f"data.options.image_size must be a positive whole number of pixels (got {image_size!r})")
    base = Path(root)

    def read(folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label, name in enumerate(classes):
            if not (folder / name).is_dir():
                raise InputError(f"data.root: class folder {str(folder / name)!r} is missing; every split needs one folder per class ({', '.join(classes)})")
            files = [f for f in sorted((folder / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
            if not files:  # an empty class would train a class no image shows, or vanish when it is the last
                raise InputError(f"data.root: class folder {str(folder / name)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for file in files:
                images.append(_read_image(file, image_size, grayscale))
                labels.append(label)
        return np.stack(images), np.asarray(labels)

    has_splits = (base / "train").is_dir() and (base / "test").is_dir()
    train_dir = base / "train" if has_splits else base
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"data.root: {root!r} has no class sub-folders (expected root/<class>/<image>)")
    x, y = read(train_dir, classes)
    if has_splits:
        extra = sorted(p.name for p in (base / "test").iterdir() if p.is_dir() and p.name not in classes)
        if extra:
            raise InputError(f"data.root: {str(base / 'test')!r} has class folder(s) {extra} that {str(train_dir)!r} lacks")
        x_test, y_test = read(base / "test", classes)
        return x, y, x_test, y_test
    return x, y, None, None


def _read_image(file: Path, image_size: int, grayscale: bool) -> np.ndarray:
    """One image, resized; PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) is a hard limit here."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                img = img.convert("L" if grayscale else "RGB").resize((image_size, image_size))
                return np.asarray(img, dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"image {str(file)!r} is too large to decode safely (a decompression bomb?): {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's decoders raise all three for damaged files
        raise InputError(f"image {str(file)!r} cannot be read: {exc}") from None


def load_arrays(name: str, root: str | None, options: dict[str, Any]) -> Arrays:
    """Arrays for a dataset name: a registered one or a `"pkg.module:factory"` returning the same 4-tuple."""
    from edgekd.registry import load_callable

    factory = load_callable(name) if ":" in name else datasets.get(name)
    try:
        inspect.signature(factory).bind(root=root, **options)
    except TypeError as exc:
        option_names = ", ".join(sorted(options)) or "no options"
        raise InputError(
            f"data.dataset {name!r} cannot be called as factory(root=…, **data.options) with {option_names}: {exc}. "
            "A dataset factory is `def factory(root=None, **options)` returning (x_train, y_train, x_test or None, y_test or None)"
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call say
        pass
    result = factory(root=root, **options)
    if not (isinstance(result, tuple) and len(result) == 4):
        raise InputError(f"dataset {name!r} must return (x_train, y_train, x_test or None, y_test or None)")
    return result
