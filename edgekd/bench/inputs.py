"""Benchmark inputs: shapes from the model, the batch dimension replaced by each batch size,
other dynamic dimensions from `--input-shape name=1x3x224x224`; random data (seeded, the
model's dtype) or real arrays from an .npz file keyed by input name.

The batch dimension is dimension 0 of every input whose dimension 0 is dynamic. A model
without any dynamic dimension 0 has a fixed batch, and only that batch size fits it."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import InputError
from edgekd.registry import unknown_name

Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    """A model input as the model declares it: int dims are fixed, str/None dims are dynamic."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name}


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x3x224x224' → (1, 3, 224, 224)."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise InputError(f"shape {text!r} is not of the form 1x3x224x224 (positive integers separated by 'x')")
    return dims


def parse_input_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """['x=1x3x224x224', ...] (the repeatable --input-shape option) → {'x': (1, 3, 224, 224)}."""
    shapes = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise InputError(f"--input-shape {item!r} is not of the form name=1x3x224x224")
        shapes[name] = parse_shape(text)
    return shapes


def has_dynamic_batch(specs: Sequence[InputSpec]) -> bool:
    return any(spec.shape and not isinstance(spec.shape[0], int) for spec in specs)


@dataclass(frozen=True)
class InputPlan:
    """Where the data fed to every model comes from; JSON-able so a memory probe can rebuild it."""

    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    npz: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shapes and self.npz:
            raise InputError(f"--input-shape and --inputs {self.npz} are both given: the .npz arrays define the shapes")
        if self.npz:
            _load_npz(self.npz)

    def shapes_for(self, specs: Sequence[InputSpec], batch: int, model: str) -> dict[str, tuple[int, ...]]:
        """The shape of every input at `batch`; `model` names the model in error messages."""
        if self.npz:
            return {name: array.shape for name, array in self.make(specs, batch, model).items()}
        dynamic = has_dynamic_batch(specs)
        return {
            s.name: _apply_override(s, _template(s, batch, dynamic, model), self.shapes.get(s.name), model)
            for s in specs
        }

    def make(self, specs: Sequence[InputSpec], batch: int, model: str) -> dict[str, np.ndarray]:
        """One array per input at `batch`."""
        if self.npz:
            arrays = _load_npz(self.npz)
            _require_keys(arrays, specs, self.npz, model)
            dynamic = has_dynamic_batch(specs)
            return {s.name: _fit_array(arrays[s.name], s, _template(s, batch, dynamic, model), self.npz) for s in specs}
        shapes = self.shapes_for(specs, batch, model)
        # Seeded by input name: models that share an input get the same data.
        rngs = {s.name: np.random.default_rng([self.seed, zlib.crc32(s.name.encode())]) for s in specs}
        return {s.name: random_array(shapes[s.name], s.dtype, rngs[s.name]) for s in specs}

    def specs_for_module(self, fallback: Sequence[InputSpec]) -> tuple[InputSpec, ...]:
        """Inputs of an nn.Module, which declares none: from --input-shape, the .npz, or `fallback`."""
        if self.shapes:
            return tuple(InputSpec(n, (None, *s[1:]), np.dtype(np.float32)) for n, s in self.shapes.items())
        if self.npz:
            return tuple(InputSpec(n, (None, *a.shape[1:]), a.dtype) for n, a in _load_npz(self.npz).items())
        if fallback:
            return tuple(fallback)
        raise InputError(
            "an nn.Module declares no inputs: pass input_shapes={'x': (1, 3, 224, 224)}, an .npz file, "
            "or an ONNX model first in the list whose inputs it shares"
        )

    def check_names(self, specs_by_model: Mapping[str, Sequence[InputSpec]]) -> None:
        """Every --input-shape name must be an input of at least one model."""
        known = sorted({spec.name for specs in specs_by_model.values() for spec in specs})
        for name in self.shapes:
            if name not in known:
                raise InputError(f"--input-shape {name}=…: {unknown_name('model input', name, known)}")

    def to_json(self) -> dict[str, Any]:
        shapes = {name: list(shape) for name, shape in self.shapes.items()}
        return {"shapes": shapes, "npz": str(self.npz) if self.npz else None, "seed": self.seed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputPlan:
        shapes = {n: tuple(s) for n, s in data["shapes"].items()}
        return cls(shapes, Path(data["npz"]) if data["npz"] else None, data["seed"])


def random_array(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    if dtype.kind == "f":
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu" and dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    if dtype.kind in "iu":
        # Wider integers are usually indices (token ids, classes): 0 and 1 are valid for any table.
        return rng.integers(0, 2, shape).astype(dtype)
    raise InputError(f"random data for dtype {dtype} is not supported: pass real inputs with --inputs file.npz")


def _template(spec: InputSpec, batch: int, dynamic_batch: bool, model: str) -> list[int | None]:
    """The input's dims with the batch filled in; None where a dynamic dim still needs a value."""
    dims = [d if isinstance(d, int) else None for d in spec.shape]
    if not dims:
        return dims
    if dims[0] is None:
        dims[0] = batch
    elif not dynamic_batch and dims[0] != batch:
        raise InputError(
            f"{model}: input {spec.name!r} has a fixed batch of {dims[0]} (shape {_show(spec.shape)}), so batch "
            f"size {batch} does not fit; re-export it with a dynamic batch axis or bench with --batch {dims[0]}"
        )
    return dims


def _apply_override(
    spec: InputSpec, template: list[int | None], override: tuple[int, ...] | None, model: str
) -> tuple[int, ...]:
    if override is None:
        missing = [i for i, d in enumerate(template) if d is None]
        if missing:
            raise InputError(
                f"{model}: input {spec.name!r} has dynamic dimension(s) {missing} besides the batch "
                f"(shape {_show(spec.shape)}); give them with --input-shape {spec.name}=" + "x".join(
                    str(d) if d is not None else "N" for d in template
                )
            )
        return tuple(int(d) for d in template)  # type: ignore[arg-type]
    if len(override) != len(template):
        raise InputError(
            f"--input-shape {spec.name}={'x'.join(map(str, override))} has rank {len(override)}, but input "
            f"{spec.name!r} of {model} has rank {len(template)} (shape {_show(spec.shape)})"
        )
    dims = [template[0], *override[1:]] if template else []
    for i, (want, got) in enumerate(zip(template, dims)):
        if want is not None and want != got:
            raise InputError(
                f"--input-shape {spec.name}={'x'.join(map(str, override))} does not fit input {spec.name!r} of "
                f"{model} (shape {_show(spec.shape)}): dimension {i} is fixed at {want}"
            )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _fit_array(array: np.ndarray, spec: InputSpec, template: list[int | None], npz: Path) -> np.ndarray:
    where = f"{npz}[{spec.name!r}] (shape {array.shape})"
    if array.ndim != len(template):
        raise InputError(f"{where} has rank {array.ndim}, but the model input has shape {_show(spec.shape)}")
    for i, want in enumerate(template[1:], start=1):
        if want is not None and array.shape[i] != want:
            raise InputError(f"{where} does not fit the model input {_show(spec.shape)}: dimension {i} must be {want}")
    if template and array.shape[0] < template[0]:  # type: ignore[operator]
        raise InputError(f"{where} has {array.shape[0]} samples; batch size {template[0]} needs at least that many")
    if not np.can_cast(array.dtype, spec.dtype, "same_kind"):
        raise InputError(f"{where} has dtype {array.dtype}; the model input wants {spec.dtype}")
    fitted = array[: template[0]] if template else array
    return np.ascontiguousarray(fitted, dtype=spec.dtype)


def _require_keys(arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], npz: Path, model: str) -> None:
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise InputError(
            f"{npz} has no array for input(s) {', '.join(map(repr, missing))} of {model}; "
            f"its arrays: {', '.join(arrays) or 'none'}"
        )


@lru_cache(maxsize=4)
def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"inputs file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"inputs file {str(path)!r} is not a readable .npz archive: {exc}") from None


def _show(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
