"""A dataset as edgekd uses it: train/val/test tensors, normalized with the
training split's statistics, with deterministic splits from the seed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from edgekd.data.checks import check_arrays, check_classes


@dataclass
class DataBundle:
    """Three splits of images (N, C, H, W, float32, normalized) and labels (N, int64)."""

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    def digest(self) -> str:
        """A hash of every split's images and labels as the models see them: caches keyed by the
        data's settings alone would reuse a teacher trained on an old file at the same path."""
        if self._digest is None:
            hasher = hashlib.sha256()
            for split in ("train", "val", "test"):
                for tensor in getattr(self, split).tensors:
                    array = np.ascontiguousarray(tensor.numpy())
                    hasher.update(f"{split}:{array.dtype}:{array.shape}".encode())
                    hasher.update(memoryview(array).cast("B"))
            self._digest = hasher.hexdigest()[:16]
        return self._digest

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        return tuple(self.train.tensors[0].shape[1:])

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def loader(
        self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0, indexed: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> DataLoader:
        """A loader whose shuffle order depends only on `seed`, so resumed runs see the same batches.

        `indexed` adds each sample's position in its split as a third item, the key of
        per-sample caches (the teacher's logits). `shard=(rank, world_size)` gives a rank its
        part of every epoch and of every `batch_size` batch (data-parallel training)."""
        dataset = getattr(self, split)
        if indexed:
            dataset = TensorDataset(*dataset.tensors, torch.arange(len(dataset)))
        rank, world_size = shard
        if world_size > 1:
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
            return DataLoader(dataset, batch_size=max(1, batch_size // world_size), sampler=sampler)
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "sizes": {s: len(getattr(self, s)) for s in ("train", "val", "test")},
            "mean": self.mean,
            "std": self.std,
        }


def split_indices(n: int, fraction: float, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically split range(n) into (kept, held out); stratified by label when given."""
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
        held = int(round(n * fraction))
        return np.sort(order[held:]), np.sort(order[:held])
    kept, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * fraction))
        held.append(members[:cut])
        kept.append(members[cut:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def make_bundle(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    *,
    seed: int,
    val_split: float,
    test_split: float,
    num_classes: int | None = None,
    limit: int | None = None,
    source: str | None = None,
) -> DataBundle:
    """Check (`edgekd.data.checks`), split, normalize with training statistics, and wrap arrays as tensors.

    `limit` keeps N training samples (after a seeded shuffle) — for smoke runs. When the source
    has no test split of its own, `test_split` of the data is held out (stratified); `val_split`
    of the remaining training data becomes the validation split. `source` names the data in errors."""
    source = source or f"dataset {name!r}"
    x_train, y_train, x_test, y_test = check_arrays(source, x_train, y_train, x_test, y_test)
    if limit is not None and limit < len(y_train):
        keep, _ = split_indices(len(y_train), 1 - limit / len(y_train), seed)
        x_train, y_train = x_train[keep], y_train[keep]
    if x_test is None or y_test is None:
        keep, held = split_indices(len(y_train), test_split, seed, y_train)
        x_test, y_test = x_train[held], y_train[held]
        x_train, y_train = x_train[keep], y_train[keep]
    keep, held = split_indices(len(y_train), val_split, seed + 1, y_train)
    x_val, y_val = x_train[held], y_train[held]
    x_train, y_train = x_train[keep], y_train[keep]

    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(((x - mean) / std).astype(np.float32)), torch.from_numpy(y))

    classes = check_classes(source, y_train, y_test, num_classes)
    return DataBundle(
        name,
        tensors(x_train, y_train),
        tensors(x_val, y_val),
        tensors(x_test, y_test),
        classes,
        mean.ravel().tolist(),
        std.ravel().tolist(),
    )
