"""Every check a dataset gets before anything trains, in one place.

An image source returns `(x_train, y_train, x_test or None, y_test or None)`. What would otherwise
train silently on the wrong thing is refused with an InputError naming the dataset (and its
`data.root`): arrays that are not numbers, images of the wrong rank or with NaN/Inf pixels,
labels that are not class indices (negative, fractional, one-hot), lengths that differ
between images and labels, test images of another size than the training images, and —
after the splits are made — a class with no training sample (an out-of-range label or an
empty class) or missing from the test split.

Text rows (`edgekd.data.text`) are named by file and line: a source without rows, a row
without a named field or whose text field holds a list or an object, a row that tokenizes
to nothing (a sequence of padding only), and for classification the same class coverage
of both splits, by label name. Checks that need the tokenizer's settings (a label outside
the label set, a sequence over max_length with truncation off) stay beside the encoding
in `edgekd.data.text`, where the limit is known.

>>> import numpy as np
>>> x, y = np.zeros((4, 8, 8), np.float32), np.array([0, 1, 0, 1])
>>> check_arrays("demo", x, y, None, None)[0].shape
(4, 1, 8, 8)
>>> check_arrays("demo", x, np.array([0, 1, 0, -1]), None, None)
Traceback (most recent call last):
...
edgekd.errors.InputError: demo: y holds negative labels (-1 at index 3); labels are class indices 0, 1, 2, …
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from edgekd.errors import InputError
from edgekd.registry import unknown_name

Arrays = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


def check_arrays(source: str, x: Any, y: Any, x_test: Any, y_test: Any) -> Arrays:
    """The arrays as float32 images (N, C, H, W) and int64 labels, or an InputError naming `source`."""
    if (x_test is None) != (y_test is None):
        given, missing = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise InputError(f"{source}: gives {given} without {missing}; give both or neither")
    x = _images(source, "x", x)
    y = _labels(source, "y", y, len(x))
    if x_test is not None:
        x_test = _images(source, "x_test", x_test)
        y_test = _labels(source, "y_test", y_test, len(x_test))
        if x_test.shape[1:] != x.shape[1:]:
            raise InputError(
                f"{source}: test images are {_shape(x_test)} but training images are {_shape(x)} (channels × height × width); "
                "a model trained on one size is not measured on another: give both splits one size"
            )
    return x, y, x_test, y_test


def check_classes(
    source: str, y_train: np.ndarray, y_test: np.ndarray, num_classes: int | None = None, names: Sequence[str] | None = None
) -> int:
    """The number of classes: labels are 0…K-1 with every class in the final training and test splits.
    With `names` (text labels), missing classes are named by label."""
    for split, labels in (("training", y_train), ("test", y_test)):
        if len(labels) == 0:
            raise InputError(f"{source}: the {split} split holds no samples; give more data, or a larger data.test_split")
    classes = num_classes or int(max(y_train.max(), y_test.max())) + 1
    for split, labels in (("training", y_train), ("test", y_test)):
        present = np.unique(labels)
        if present[-1] >= classes:
            raise InputError(f"{source}: the {split} labels reach {int(present[-1])}, but there are {classes} classes (0…{classes - 1})")
        if len(present) < classes and names is not None:
            missing = [repr(names[i]) for i in np.setdiff1d(np.arange(classes), present)]
            raise InputError(
                f"{source}: the label{'s' if len(missing) > 1 else ''} {', '.join(missing[:5])}{', …' if len(missing) > 5 else ''} "
                f"of {classes} ha{'ve' if len(missing) > 1 else 's'} no row in the {split} split. Every class needs rows in both "
                "splits: add rows of it, or leave it out of data.options.labels"
            )
        if len(present) < classes:
            missing = np.setdiff1d(np.arange(min(classes, len(present) + 5)), present)[:5]
            shown = ", ".join(str(int(m)) for m in missing) + (", …" if classes - len(present) > len(missing) else "")
            raise InputError(
                f"{source}: {classes - len(present)} of the {classes} classes (0…{classes - 1}, from the largest label "
                f"{classes - 1}) have no sample in the {split} split: {shown}. Labels must be 0…K-1 with every class present; "
                "a label out of range, an empty class, or too few samples of a class to split would train a wrong model"
            )
    return classes


def _shape(images: np.ndarray) -> str:
    return "×".join(str(d) for d in images.shape[1:])


def _array(source: str, name: str, values: Any) -> np.ndarray:
    try:
        return np.asarray(values)
    except ValueError as exc:  # ragged nested lists
        raise InputError(f"{source}: {name} is not a regular array: {exc}") from None


def _images(source: str, name: str, values: Any) -> np.ndarray:
    array = _array(source, name, values)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{source}: {name} holds {array.dtype} values; images must be numbers")
    if array.ndim not in (3, 4):
        raise InputError(f"{source}: {name} has shape {array.shape}; images must be (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if len(array) == 0:
        raise InputError(f"{source}: {name} holds no images")
    images = _channels_first(array.astype(np.float32, copy=False))
    finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"{source}: {name} has NaN or infinite pixels in {int((~finite).sum())} image(s), the first at index {first} "
            "(or values beyond float32's range); fix or drop them"
        )
    return images


def _channels_first(x: np.ndarray) -> np.ndarray:
    """(N, H, W) → (N, 1, H, W); (N, H, W, C) with C ≤ 4 → (N, C, H, W); (N, C, H, W) unchanged."""
    if x.ndim == 3:
        return x[:, None]
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)
    return x


def _labels(source: str, name: str, values: Any, count: int) -> np.ndarray:
    array = _array(source, name, values)
    if array.ndim == 2 and array.shape[1] > 1:
        raise InputError(
            f"{source}: {name} has shape {array.shape}: one-hot vectors or scores? Labels are class indices of shape (N,), "
            f"e.g. {name}.argmax(1)"
        )
    if array.ndim != 1:
        raise InputError(f"{source}: {name} has shape {array.shape}; labels are class indices of shape (N,)")
    if len(array) != count:
        images = "x" if name == "y" else "x_test"
        raise InputError(f"{source}: {images} has {count} images but {name} has {len(array)} labels; they must pair up one to one")
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            raise InputError(f"{source}: {name} holds a label that is not a whole number ({array[first]!r} at index {first}); labels are class indices")
    elif array.dtype.kind not in "biu":
        raise InputError(f"{source}: {name} holds {array.dtype} values; labels are class indices 0, 1, 2, …")
    if array.dtype.kind in "if" and (array < 0).any():
        first = int(np.flatnonzero(array < 0)[0])
        raise InputError(f"{source}: {name} holds negative labels ({array[first]:g} at index {first}); labels are class indices 0, 1, 2, …")
    if array.dtype.kind in "uf" and array.max() > np.iinfo(np.int32).max:
        raise InputError(f"{source}: {name} holds the label {array.max():g}; labels are class indices 0…K-1")
    return array.astype(np.int64)


# Text ---------------------------------------------------------------------------------------------


def check_rows(source: str, rows: Sequence[dict[str, Any]], fields: Sequence[str], text_fields: Sequence[str], where: Callable[[int], str]) -> None:
    """Every row has every named field, and the fields to tokenize hold text: a string or a number
    (tokenized as written), not a list or an object, whose Python text would be learned silently."""
    if not rows:
        raise InputError(f"text data {source!r} holds no rows")
    for index, row in enumerate(rows):
        missing = [name for name in fields if name not in row]
        if missing:
            raise InputError(
                f"{where(index)}: {unknown_name('field', missing[0], row)} Name the row's fields with data.options.input / label "
                "/ target / extras."
            )
        empty = [name for name in fields if row[name] is None]
        if empty:
            raise InputError(f"{where(index)}: field {empty[0]!r} is null; give it a value or drop the row")
        for name in text_fields:
            if not isinstance(row[name], (str, int, float)) or isinstance(row[name], bool):
                raise InputError(f"{where(index)}: field {name!r} holds {type(row[name]).__name__} {row[name]!r}; text fields hold text")


def check_token_rows(sequences: Sequence[Sequence[int]], where: Callable[[int], str], what: str) -> None:
    """Every sequence has a token: a row of padding alone gives attention nothing to read (NaN)."""
    for index, ids in enumerate(sequences):
        if not ids:
            raise InputError(f"{where(index)}: {what} is empty once tokenized (no token to read); drop the row or give it text")
