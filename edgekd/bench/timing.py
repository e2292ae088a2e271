"""The timing core: warm-up, then interleaved blocks of timed runs. Backend-independent —
it times zero-argument callables.

Rules, in order:
1. Warm-up, per model, by time: run until `warmup_s` has passed (at least twice). The first
   call is timed on its own and reported as the first-inference time.
2. Each model's mean warm-up latency estimates its latency; from it, a block size k per model is
   chosen so that the run ends after about `target_rounds` rounds.
3. Measure in rounds. A round runs a block of k timed calls of every model, the starting
   model rotating from round to round, so slow drift of the machine (clocks, heat, other
   load) hits every model alike and no model always runs right after the same neighbour.
   Blocks rather than single runs: switching models evicts caches, and a session's idle
   threads may still be busy-waiting for work when the next model starts.
4. Stop after the first round in which every model has both `min_iterations` runs and
   `min_duration_s` of measured time (trtexec's rule, applied per model), and at least
   `min_rounds` rounds are done (the block bootstrap of a ratio resamples rounds).

The garbage collector is paused while measuring (as `timeit` does)."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import InputError


@dataclass(frozen=True)
class TimingSettings:
    warmup_s: float = 0.2
    min_iterations: int = 20
    min_duration_s: float = 1.0
    target_rounds: int = 10
    min_rounds: int = 5

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.min_duration_s < 0:
            raise InputError(
                f"warm-up ({self.warmup_s} s) and minimum duration ({self.min_duration_s} s) must not be negative"
            )
        if min(self.min_iterations, self.target_rounds, self.min_rounds) < 1:
            raise InputError(f"minimum iterations ({self.min_iterations}) and rounds must be ≥ 1")

    def to_json(self) -> dict[str, Any]:
        return {
            "warmup_s": self.warmup_s,
            "min_iterations": self.min_iterations,
            "min_duration_s": self.min_duration_s,
            "target_rounds": self.target_rounds,
            "min_rounds": self.min_rounds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimingSettings:
        return cls(**data)


@dataclass(frozen=True)
class Target:
    """One thing to time. `drain_device_ms`, for accelerators, returns the device-side time
    of every call since it was last drained (read after each block, outside the timed region)."""

    call: Callable[[], object]
    drain_device_ms: Callable[[], list[float]] | None = None


@dataclass(frozen=True)
class Timing:
    """What was measured for one target. `blocks_s[r]` holds the block of round r, in run order."""

    first_call_s: float
    warmup_runs: int
    block_size: int
    blocks_s: np.ndarray
    device_blocks_ms: np.ndarray | None

    @property
    def runs(self) -> int:
        return int(self.blocks_s.size)

    @property
    def measured_s(self) -> float:
        return float(self.blocks_s.sum())

    def to_json(self) -> dict[str, Any]:
        """Everything measured, for a fresh process to hand its timing back."""
        device = self.device_blocks_ms.tolist() if self.device_blocks_ms is not None else None
        return {
            "first_call_s": self.first_call_s, "warmup_runs": self.warmup_runs, "block_size": self.block_size,
            "blocks_s": self.blocks_s.tolist(), "device_blocks_ms": device,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timing:
        device = data["device_blocks_ms"]
        return cls(
            data["first_call_s"], data["warmup_runs"], data["block_size"], np.array(data["blocks_s"], dtype=np.float64),
            np.array(device, dtype=np.float64) if device is not None else None,
        )  # fmt: skip


def measure(targets: Sequence[Target], settings: TimingSettings) -> list[Timing]:
    """Warm every target up, then time them interleaved in rotating blocks."""
    warmups = [_warm_up(target, settings.warmup_s) for target in targets]
    block_sizes = [_block_size(estimate, settings) for _, _, estimate in warmups]
    with _gc_paused():
        blocks, device_blocks = _run_rounds(targets, block_sizes, settings)
    return [
        Timing(first, runs, k, np.array(host), np.array(device) if target.drain_device_ms else None)
        for (first, runs, _), k, host, device, target in zip(warmups, block_sizes, blocks, device_blocks, targets)
    ]


def time_block(call: Callable[[], object], runs: int) -> list[float]:
    """Latency in seconds of each of `runs` back-to-back calls: the whole timed region."""
    clock = time.perf_counter
    latencies = [0.0] * runs
    for i in range(runs):
        start = clock()
        call()
        latencies[i] = clock() - start
    return latencies


def _warm_up(target: Target, warmup_s: float) -> tuple[float, int, float]:
    """Returns (first call's latency, warm-up runs, latency estimate)."""
    first = time_block(target.call, 1)[0]
    # At least one run after the first: first calls are often far slower (lazy init, allocation).
    latencies = time_block(target.call, 1)
    deadline = time.perf_counter() + max(warmup_s - first - latencies[0], 0.0)
    while time.perf_counter() < deadline:
        latencies += time_block(target.call, 1)
    if target.drain_device_ms:
        target.drain_device_ms()
    # The mean, not the median: the stop rule sums latencies, outliers included.
    return first, 1 + len(latencies), float(np.mean(latencies))


def _block_size(estimate_s: float, settings: TimingSettings) -> int:
    runs_needed = max(settings.min_iterations, math.ceil(settings.min_duration_s / max(estimate_s, 1e-9)))
    return max(1, math.ceil(runs_needed / settings.target_rounds))


def _run_rounds(
    targets: Sequence[Target], block_sizes: Sequence[int], settings: TimingSettings
) -> tuple[list[list[list[float]]], list[list[list[float]]]]:
    blocks: list[list[list[float]]] = [[] for _ in targets]
    device: list[list[list[float]]] = [[] for _ in targets]
    runs = [0] * len(targets)
    spent = [0.0] * len(targets)
    round_index = 0
    while round_index < settings.min_rounds or not _enough(runs, spent, settings):
        for i in rotation(len(targets), round_index):
            block = time_block(targets[i].call, block_sizes[i])
            blocks[i].append(block)
            runs[i] += len(block)
            spent[i] += sum(block)
            if targets[i].drain_device_ms:
                device[i].append(targets[i].drain_device_ms())
        round_index += 1
    return blocks, device


def _enough(runs: list[int], spent: list[float], settings: TimingSettings) -> bool:
    return all(n >= settings.min_iterations for n in runs) and all(s >= settings.min_duration_s for s in spent)


def rotation(count: int, round_index: int) -> list[int]:
    """The order of `count` models in round `round_index`: round r starts with model r mod count."""
    start = round_index % count
    return [*range(start, count), *range(start)]


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
