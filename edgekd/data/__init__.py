"""Datasets and loaders. `load_data(config, seed)` is the one entry point."""

from __future__ import annotations

from typing import Any

from edgekd.data.bundle import DataBundle, make_bundle, split_indices
from edgekd.data.registry import datasets
from edgekd.data.sources import load_arrays, read_idx


def load_data(
    dataset: str,
    *,
    seed: int,
    root: str | None = None,
    val_split: float = 0.1,
    test_split: float = 0.2,
    limit: int | None = None,
    options: dict[str, Any] | None = None,
) -> DataBundle:
    """Load a dataset by name and split it deterministically from `seed`.

    `limit` keeps N training samples (after a seeded shuffle) — for smoke runs. The arrays are
    checked before anything trains (`edgekd.data.checks`)."""
    x, y, x_test, y_test = load_arrays(dataset, root, options or {})
    source = f"dataset {dataset!r}" + (f" (data.root {root!r})" if root else "")
    return make_bundle(dataset, x, y, x_test, y_test, seed=seed, val_split=val_split, test_split=test_split, limit=limit, source=source)


__all__ = ["DataBundle", "datasets", "load_data", "make_bundle", "read_idx", "split_indices"]
