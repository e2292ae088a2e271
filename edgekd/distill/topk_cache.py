"""A compact, memory-mapped cache of a teacher's next-token distributions: per target token the
top-k log-probabilities with their token indices and the log of the remaining mass — what
recovery phases read instead of running the teacher.

On disk, a folder (streamed into `<name>.partial`, synced, then renamed, so a half-written
cache never exists under its name):

    meta.json      format, k, vocab size, dtypes, counts (and the writer's notes, e.g. build seconds)
    values.bin     (tokens, k) float16   top-k log-probabilities, largest first
    indices.bin    (tokens, k) uint16    their token ids (int32 when the vocabulary exceeds 65,536)
    tail.bin       (tokens,)   float16   log of the probability outside the top k (-inf when k = vocab)
    offsets.bin    (sequences + 1,) int64  where each sequence's tokens start

`TopKCache.open` checks the files against meta.json (sizes, offsets, finite log-probabilities,
token ids inside the vocabulary) and refuses a damaged folder with an InputError saying what is
wrong, so a reader never trains on garbage. Only target tokens are stored (the positions a `mask` selects, in row-major order), so a
sequence is read back with the same mask it was written with; the reader checks the counts.
Log-probabilities rather than probabilities: fp16 keeps a relative precision of ~0.1% on
every probability, where fp16 probabilities would lose the small ones.

Reconstruction gives the tail mass to the other vocab − k tokens in the proportions of the
student's own logits (`tail_shape`; evenly when none are given), which makes a full distribution
any divergence accepts and equal, under every divergence, to comparing k + 1 outcomes (the top k
and "the rest"). A temperature T applies to the reconstructed log-probabilities (softmax(log p / T));
that is exact on the top k and treats the tail as one block — the price of not storing it.

>>> import tempfile
>>> logits = torch.tensor([[[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 0.0, 0.0]]])
>>> mask = torch.tensor([[True, True]])
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "teacher"
>>> with TopKCacheWriter(folder, k=2, vocab_size=4) as writer:
...     writer.add(logits, mask)
>>> cache = TopKCache.open(folder)
>>> bytes_per_token(k=2, vocab_size=4), cache.info.tokens  # 2 × (2 + 2) + 2
(10, 2)
>>> cache.log_probs([0], mask).exp().sum(-1)
tensor([[1.0000, 1.0000]])
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.errors import InputError
from edgekd.files import write_atomic

FORMAT = "edgekd.topk/1"
VALUE_DTYPE = np.dtype(np.float16)
OFFSET_DTYPE = np.dtype(np.int64)
FILES = ("values", "indices", "tail")
CHECK_ROWS = 1 << 20  # tokens per chunk when `open` checks the values
ROUNDING = 1e-3  # how far above 0 a stored log-probability may round


def index_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def bytes_per_token(k: int, vocab_size: int) -> int:
    """Stored bytes per target token: k values and indices, and the tail mass."""
    return k * (VALUE_DTYPE.itemsize + index_dtype(vocab_size).itemsize) + VALUE_DTYPE.itemsize


def top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k log-probabilities, their indices, log of the remaining mass) per row of (..., vocab) logits."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    values, indices = log_probs.topk(k, dim=-1)
    rest = log_probs.scatter(-1, indices, float("-inf"))
    return values, indices, torch.logsumexp(rest, dim=-1)


@dataclass(frozen=True)
class CacheInfo:
    k: int
    vocab_size: int
    sequences: int
    tokens: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "k": self.k, "vocab_size": self.vocab_size, "sequences": self.sequences,
            "tokens": self.tokens, "value_dtype": VALUE_DTYPE.name, "index_dtype": index_dtype(self.vocab_size).name,
        }  # fmt: skip


class TopKCacheWriter:
    """Appends batches of sequences in order; `close()` (or leaving the `with` block) publishes
    the folder. An exception inside the block leaves nothing behind."""

    def __init__(self, path: str | pathlib.Path, *, k: int, vocab_size: int):
        if not 1 <= k <= vocab_size:
            raise InputError(f"top-k cache: k must lie in [1, vocab size {vocab_size}], got {k}")
        self.path = pathlib.Path(path)
        self.k, self.vocab_size = k, vocab_size
        self.staging = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.files = {name: open(self.staging / f"{name}.bin", "wb") for name in FILES}
        self.offsets = [0]

    def add(self, logits: torch.Tensor, mask: torch.Tensor) -> None:
        """Append one batch: logits (batch, length, vocab) and the mask (batch, length) of the tokens to keep."""
        if logits.shape[-1] != self.vocab_size or logits.shape[:-1] != mask.shape:
            raise InputError(f"top-k cache: logits {tuple(logits.shape)} and mask {tuple(mask.shape)} do not fit vocab size {self.vocab_size}")
        mask = mask.bool()
        values, indices, tail = top_k(logits.detach()[mask], self.k)
        self.files["values"].write(values.cpu().numpy().astype(VALUE_DTYPE).tobytes())
        self.files["indices"].write(indices.cpu().numpy().astype(index_dtype(self.vocab_size)).tobytes())
        self.files["tail"].write(tail.cpu().numpy().astype(VALUE_DTYPE).tobytes())
        for count in mask.sum(dim=1).tolist():
            self.offsets.append(self.offsets[-1] + int(count))

    def close(self, notes: dict[str, Any] | None = None) -> TopKCache:
        """Publish the folder; `notes` (JSON values) are kept in meta.json beside the counts."""
        for handle in self.files.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        info = CacheInfo(self.k, self.vocab_size, len(self.offsets) - 1, self.offsets[-1])
        write_atomic(self.staging / "offsets.bin", np.asarray(self.offsets, dtype=OFFSET_DTYPE).tobytes())
        write_atomic(self.staging / "meta.json", json.dumps({**(notes or {}), **info.to_json()}, indent=1))
        shutil.rmtree(self.path, ignore_errors=True)
        self.staging.rename(self.path)
        return TopKCache.open(self.path)

    def abort(self) -> None:
        for handle in self.files.values():
            handle.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> TopKCacheWriter:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class TopKCache:
    """A written cache, memory-mapped: reading a batch touches only its sequences."""

    def __init__(self, path: pathlib.Path, info: CacheInfo, meta: dict[str, Any] | None = None):
        self.path, self.info = path, info
        self.meta = meta or info.to_json()
        k, tokens = info.k, info.tokens
        self.values = _map(path / "values.bin", VALUE_DTYPE, (tokens, k))
        self.indices = _map(path / "indices.bin", index_dtype(info.vocab_size), (tokens, k))
        self.tail = _map(path / "tail.bin", VALUE_DTYPE, (tokens,))
        self.offsets = np.fromfile(path / "offsets.bin", dtype=OFFSET_DTYPE)

    @classmethod
    def open(cls, path: str | pathlib.Path) -> TopKCache:
        """The cache in `path`, checked; InputError saying what is wrong when it is missing or damaged."""
        path = pathlib.Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise InputError(f"{str(path)!r} is not a top-k teacher cache (no meta.json)")
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("format") != FORMAT:
                raise InputError(f"{str(path)!r} holds cache format {meta.get('format')!r}; this edgekd reads {FORMAT!r}")
            info = CacheInfo(int(meta["k"]), int(meta["vocab_size"]), int(meta["sequences"]), int(meta["tokens"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"top-k cache {str(path)!r}: meta.json cannot be read ({exc})") from None
        _check_sizes(path, info)
        cache = cls(path, info, meta)
        cache._check_contents()
        return cache

    def _check_contents(self) -> None:
        """Offsets that cover the tokens in order, finite log-probabilities ≤ 0, ids inside the vocabulary."""
        offsets, info = self.offsets, self.info
        if offsets[0] != 0 or offsets[-1] != info.tokens or (np.diff(offsets) < 0).any():
            raise InputError(f"top-k cache {str(self.path)!r}: offsets.bin does not cover its {info.tokens} tokens in order")
        for start in range(0, info.tokens, CHECK_ROWS):
            values, indices = self.values[start : start + CHECK_ROWS], self.indices[start : start + CHECK_ROWS]
            tail = self.tail[start : start + CHECK_ROWS]
            if not (np.isfinite(values).all() and (values <= ROUNDING).all() and not np.isnan(tail).any() and (tail <= ROUNDING).all()):
                raise InputError(f"top-k cache {str(self.path)!r}: values.bin or tail.bin holds values that are no log-probabilities")
            if len(indices) and int(indices.max()) >= info.vocab_size:
                raise InputError(f"top-k cache {str(self.path)!r}: indices.bin holds token ids beyond the vocabulary ({info.vocab_size})")

    def __len__(self) -> int:
        return self.info.sequences

    def bytes_per_token(self) -> float:
        """Bytes on disk per stored token, everything counted (offsets and metadata included)."""
        total = sum(f.stat().st_size for f in self.path.iterdir())
        return total / max(self.info.tokens, 1)

    def sequence(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, indices, tail) of one sequence's stored tokens."""
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.values[start:end], self.indices[start:end], self.tail[start:end]

    def log_probs(
        self, sequences: Sequence[int], mask: torch.Tensor, device: torch.device | str | None = None, tail_like: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The reconstructed teacher log-probabilities (batch, length, vocab) for these sequences,
        at the positions `mask` selects — the mask they were written with. Other positions hold a
        uniform distribution (the losses mask them out). On `device`, else where `tail_like` is (the CPU without it).

        The tail mass goes to the tokens outside the top k in the proportions of `tail_like`'s softmax
        (the student's own logits, batch × length × vocab), or evenly without it."""
        mask = mask.bool()
        rows = [self.sequence(int(i)) for i in sequences]
        for i, (row, count) in enumerate(zip(rows, mask.sum(dim=1).tolist())):
            if len(row[0]) != count:
                raise InputError(f"top-k cache {self.path.name}: sequence {sequences[i]} has {len(row[0])} stored tokens, the batch selects {count}")
        # Built where the student's logits are (no round trip of batch × length × vocab through the CPU).
        work = tail_like.device if tail_like is not None else torch.device("cpu")
        mask = mask.to(work)
        values = torch.from_numpy(np.concatenate([r[0] for r in rows]).astype(np.float32)).to(work)
        indices = torch.from_numpy(np.concatenate([r[1] for r in rows]).astype(np.int64)).to(work)
        tail = torch.from_numpy(np.concatenate([r[2] for r in rows]).astype(np.float32)).to(work)
        vocab, k = self.info.vocab_size, self.info.k
        dense = torch.full((len(values), vocab), float("-inf"), device=work)
        if k < vocab:
            shape = None if tail_like is None else tail_shape(tail_like.detach()[mask].float(), indices)
            dense[:] = tail[:, None] + (shape if shape is not None else torch.full((1, vocab), -math.log(vocab - k), device=work))
        dense.scatter_(1, indices, values)
        out = torch.full((*mask.shape, vocab), -math.log(vocab), device=work)
        out[mask] = F.log_softmax(dense, dim=-1)  # renormalised: fp16 rounding leaves the sum a little off 1
        return out if device is None else out.to(device)


def tail_shape(logits: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """log(q_j / Q) for every token j outside each row's top-k indices `top`, where q = softmax(logits)
    and Q is q's mass outside the top k: the shape the teacher's tail mass takes. With the student's own
    shape, every divergence of the reconstruction equals that divergence over k + 1 outcomes (the top k
    and "the rest"): the cache teaches how much mass the tail holds, never how it spreads, which it does
    not know. Rows whose tail underflows (Q = 0) fall back to an even spread."""
    log_q = F.log_softmax(logits, dim=-1).scatter(-1, top, float("-inf"))
    log_rest = torch.logsumexp(log_q, dim=-1, keepdim=True)
    even = torch.full_like(log_q, -math.log(logits.shape[-1] - top.shape[-1]))
    return torch.where(torch.isfinite(log_rest), log_q - log_rest, even)


def _check_sizes(path: pathlib.Path, info: CacheInfo) -> None:
    """Every file as long as meta.json's counts make it (a cut or missing file is refused, not mapped)."""
    expected = {
        "values.bin": info.tokens * info.k * VALUE_DTYPE.itemsize,
        "indices.bin": info.tokens * info.k * index_dtype(info.vocab_size).itemsize,
        "tail.bin": info.tokens * VALUE_DTYPE.itemsize,
        "offsets.bin": (info.sequences + 1) * OFFSET_DTYPE.itemsize,
    }
    for name, size in expected.items():
        file = path / name
        actual = file.stat().st_size if file.is_file() else None
        if actual != size:
            found = "it is missing" if actual is None else f"it holds {actual}"
            raise InputError(f"top-k cache {str(path)!r}: {name} should hold {size} bytes for {info.tokens} tokens; {found}")


def _map(path: pathlib.Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if shape[0] == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)
