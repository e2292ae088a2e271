"""The teacher's soft labels on the training split, computed once and reused.

The teacher never changes during a run, so its outputs for a training sample are computed once
per view — the samples as stored (`plain`), or augmented pool view v — and kept in a folder of
the workdir, where every later recovery phase and every resumed run reads them (FKD's idea:
store the soft labels together with the augmentation that produced them, here the seeded view).
A view is built the first time a phase reads it.

Stored compactly: fp16 logits (fp32 for a view whose values exceed fp16's range), or for many
classes the top-k logits plus one *tail logit* standing for all other classes, chosen so that
the teacher's top-k probabilities and the remaining mass are exact at temperature 1
(tail = logsumexp(rest) - log(C - k)). Reading rebuilds full logits, so every loss works unchanged;
at other temperatures the remaining mass is spread evenly over the other classes.

Generation data has a distribution per target token instead: `TokenSoftLabels` serves them from a
top-k cache (`edgekd.distill.topk_cache`), one sequence per training sample, read with the batch's
targets (the real target tokens are the stored ones). A phase reads either kind through
`logits(view, index, targets)`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from edgekd.distill.topk_cache import TopKCache
from edgekd.facts import IGNORE_INDEX

Writer = Callable[[Path, Callable[[BinaryIO], Any]], None]

# Up to this many classes full logits are small enough (fp16: 200 bytes a sample); beyond, the top 20.
FULL_LOGITS_UP_TO = 100
AUTO_TOP_K = 20
# Per target token of a vocabulary: the top 32 (132 bytes a token with a vocabulary up to 65,536, where
# DistillKit stores ~300); the rest of a language model's next-token mass is mostly in its top few.
AUTO_TOKEN_TOP_K = 32


def storage_top_k(requested: int | str, num_classes: int) -> int | None:
    """How many logits to keep per sample: None for all of them."""
    top_k = (None if num_classes <= FULL_LOGITS_UP_TO else AUTO_TOP_K) if requested == "auto" else int(requested)
    return top_k if top_k is not None and top_k < num_classes else None


def token_top_k(requested: int | str, vocab_size: int) -> int:
    """How many log-probabilities to keep per target token (at most the whole vocabulary)."""
    return min(AUTO_TOKEN_TOP_K if requested == "auto" else int(requested), vocab_size)


class SoftLabelCache:
    """`logits(view, index)`: the teacher's logits (float32, CPU) for training samples `index` in
    view `view` (None: the samples as stored). `compute(view)` runs the teacher over the whole
    split in order; `write(path, save)` writes what `save(handle)` writes, atomically (the runner's, rank 0 only); `say` tells the user of a damaged file.
    A stored view that cannot be read or has the wrong shape is built again."""

    def __init__(
        self, folder: Path, compute: Callable[[int | None], torch.Tensor], *, num_samples: int, num_classes: int,
        top_k: int | None, precision: str, write: Writer, say: Callable[[str], None],
    ):
        self.folder = folder
        self.compute = compute
        self.num_samples = num_samples
        self.num_classes = num_classes
        self.top_k = top_k
        self.precision = precision
        self.write = write
        self.say = say
        self._views: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self.built_seconds = 0.0  # spent building views in this process

    @staticmethod
    def name(view: int | None) -> str:
        return "plain" if view is None else f"view{view}"

    def logits(self, view: int | None, index: torch.Tensor, targets: torch.Tensor | None = None, student: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, classes) logits of samples `index` (`targets` and `student` are for token caches: one row per sample here)."""
        values, classes = self._load(view)
        rows = index.cpu().numpy()
        stored = torch.from_numpy(np.asarray(values[rows], dtype=np.float32))
        if classes is None:
            return stored
        full = stored[:, -1:].expand(-1, self.num_classes).clone()
        return full.scatter_(1, torch.from_numpy(np.asarray(classes[rows], dtype=np.int64)), stored[:, :-1])

    def all_logits(self, view: int | None) -> torch.Tensor:
        return self.logits(view, torch.arange(self.num_samples))

    def _load(self, view: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        name = self.name(view)
        if name not in self._views:
            values_path, classes_path = self.folder / f"{name}.npy", self.folder / f"{name}.classes.npy"
            stored = self._read(values_path, classes_path)
            if stored is None and values_path.exists():
                self.say(f"soft labels {values_path} are damaged or do not fit this run; computing them again")
            self._views[name] = stored if stored is not None else self._build(view, name)
        return self._views[name]

    def _read(self, values_path: Path, classes_path: Path) -> tuple[np.ndarray, np.ndarray | None] | None:
        """A stored view, or None when it is missing, unreadable, of the wrong shape or not finite (then it is rebuilt)."""
        width = self.num_classes if self.top_k is None else self.top_k + 1
        try:
            values = np.load(values_path, mmap_mode="r")
            classes = np.load(classes_path, mmap_mode="r") if self.top_k is not None else None
        except (OSError, ValueError, EOFError):
            return None
        if values.shape != (self.num_samples, width) or (classes is not None and classes.shape != (self.num_samples, self.top_k)):
            return None
        if not np.isfinite(values).all():
            return None
        return values, classes

    def _build(self, view: int | None, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        started = time.perf_counter()
        values, classes = self.compress(self.compute(view))
        seconds = time.perf_counter() - started
        self.built_seconds += seconds
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write(self.folder / f"{name}.npy", lambda handle: np.save(handle, values))
        if classes is not None:
            self.write(self.folder / f"{name}.classes.npy", lambda handle: np.save(handle, classes))
        meta = self._meta()
        meta["views"][name] = {"seconds": round(seconds, 3)}
        self.write(self.folder / "meta.json", lambda handle: handle.write((json.dumps(meta, indent=2) + "\n").encode()))
        return values, classes

    def compress(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Full logits → what is stored: (values, None) or (top-k values + tail logit, top-k classes)."""
        logits = logits.float()
        classes = None
        if self.top_k is not None:
            top, top_classes = logits.topk(self.top_k, dim=1)
            rest = logits.scatter(1, top_classes, float("-inf"))
            tail = torch.logsumexp(rest, dim=1, keepdim=True) - math.log(self.num_classes - self.top_k)
            logits = torch.cat([top, tail], dim=1)
            classes = top_classes.numpy().astype(np.int16 if self.num_classes <= np.iinfo(np.int16).max else np.int32)
        fits_fp16 = float(logits.abs().max()) < torch.finfo(torch.float16).max / 2
        dtype = np.float16 if self.precision == "fp16" and fits_fp16 else np.float32
        return logits.numpy().astype(dtype), classes

    def _meta(self) -> dict[str, Any]:
        path = self.folder / "meta.json"
        try:
            meta = json.loads(path.read_text())
            if isinstance(meta, dict) and isinstance(meta.get("views"), dict):
                return meta
        except (OSError, ValueError):
            pass
        return {"views": {}}

    def summary(self) -> dict[str, Any]:
        """For report.json: the storage format, and the views stored so far with their bytes and build time."""
        views = self._meta()["views"]
        files = [p for p in self.folder.glob("*.npy")] if self.folder.is_dir() else []
        precisions = sorted({str(np.load(p, mmap_mode="r").dtype) for p in files if not p.name.endswith(".classes.npy")})
        return {
            "folder": self.folder.name,
            "format": "logits" if self.top_k is None else f"top-{self.top_k} logits + tail",
            "precision": precisions,
            "views": len(views),
            "bytes": sum(p.stat().st_size for p in files),
            "build_seconds": round(sum(float(v.get("seconds", 0)) for v in views.values()), 3),
        }


class TokenSoftLabels:
    """The teacher's next-token distributions on the training split, from a top-k cache written with
    each sample's real target tokens (targets ≠ IGNORE_INDEX) in order. The reconstruction
    (`TopKCache.log_probs`) is exact on the top k; temperature, `kd_on` and every divergence
    apply to it as to live logits."""

    def __init__(self, cache: TopKCache):
        self.cache = cache

    def logits(self, view: int | None, index: torch.Tensor, targets: torch.Tensor | None = None, student: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, length, vocab) teacher log-probabilities, real at the target tokens of `targets`; the
        mass outside the top k spread as the `student` logits spread theirs (see `topk_cache.tail_shape`)."""
        assert view is None and targets is not None, "text has no augmented views; token soft labels need the targets"
        return self.cache.log_probs(index.tolist(), targets.cpu() != IGNORE_INDEX, tail_like=student)

    def summary(self) -> dict[str, Any]:
        """For report.json (a `TeacherCache` record)."""
        info, files = self.cache.info, list(self.cache.path.iterdir())
        return {
            "folder": self.cache.path.name,
            "format": f"top-{info.k} log-probs + tail per token",
            "precision": [self.cache.meta.get("value_dtype", "float16")],
            "views": 1,
            "bytes": sum(f.stat().st_size for f in files),
            "build_seconds": round(float(self.cache.meta.get("build_seconds", 0.0)), 3),
            "k": info.k,
            "tokens": info.tokens,
            "bytes_per_token": round(self.cache.bytes_per_token(), 2),
        }


__all__ = ["SoftLabelCache", "TokenSoftLabels", "storage_top_k", "token_top_k"]
