"""Every statistic the bench reports, computed here and nowhere else.

Percentiles use numpy's 'linear' method, Hyndman & Fan (1996) type 7 (numpy's and R's
default): for n sorted samples x[0..n-1], the q-quantile is x at position h = (n-1)·q,
interpolated linearly between its neighbours. The standard deviation is the sample one
(n-1 in the denominator).

A ratio of medians gets a seeded percentile-bootstrap confidence interval; when the samples
come in blocks measured side by side (rounds of the interleaved timing), whole rounds are
resampled for both models together, so drift shared by the two models cancels instead of
widening the interval. That interval covers sampling noise only. Two sessions of the very
same model differ systematically (memory layout of weights and arenas): up to 3% on the
development machine (bench/RESULTS_bench.md), so the reported interval is the bootstrap one
widened by a relative `resolution` on each side; both are kept.

Deployment mode (each model in a fresh process per round) reports a different ratio: the median
over rounds of each round's ratio of per-process medians, with a distribution-free confidence
interval for that median from order statistics (a binomial argument, no resampling: with n
rounds, the interval between the k-th smallest and k-th largest round covers the true median
with probability 1 - 2·P(Binomial(n, 1/2) < k)). Six rounds give [min, max] at 96.9%; fewer than
six cannot reach 95%, and the interval then states the coverage it has. Session-to-session
variation is inside each round's ratio here, so no resolution is added.

Modes: per-process medians of one model that split into groups separated by more than
`MODE_GAP` are distinct modes of the deployed process, reported as a finding, never averaged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PERCENTILE_METHOD = "linear"
PERCENTILE_METHOD_NAME = "numpy 'linear' = Hyndman-Fan type 7"
# Above this coefficient of variation a latency distribution is flagged as unstable.
CV_UNSTABLE = 0.10
# With fewer rounds than this, resampling rounds gives too few distinct replicates.
MIN_PAIRED_ROUNDS = 5
# Bound on samples held at once while bootstrapping (replicates × samples per replicate).
BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000
# The block bootstrap draws whole rounds, so a round only has to carry its distribution: longer
# rounds are summarised by this many evenly spaced quantiles (keeps 50k-run samples fast).
ROUND_SUMMARY_SIZE = 128
# Per-process medians further apart than this (max / min) are flagged: four times the ±5% that two
# sessions of one model may differ by (bench/RESULTS.md, harness overhead).
SPREAD_FLAG = 1.20
# Sorted per-process medians split into modes where one is more than this above the previous.
MODE_GAP = 1.10


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one sample of latencies (any unit; the bench uses ms)."""

    n: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv: float

    @property
    def unstable(self) -> bool:
        return self.cv > CV_UNSTABLE

    def to_json(self) -> dict[str, float]:
        return {
            "min": self.min, "mean": self.mean, "median": self.median, "p90": self.p90, "p95": self.p95,
            "p99": self.p99, "max": self.max, "std": self.std,
        }  # fmt: skip


def percentile(samples: np.ndarray, q: float) -> float:
    """The q-th percentile (0–100) by PERCENTILE_METHOD."""
    return float(np.percentile(samples, q, method=PERCENTILE_METHOD))


def summarize(samples: np.ndarray) -> Summary:
    values = np.asarray(samples, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("cannot summarize an empty sample")
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99], method=PERCENTILE_METHOD)
    return Summary(
        n=int(values.size), min=float(values.min()), mean=mean, median=float(p50), p90=float(p90),
        p95=float(p95), p99=float(p99), max=float(values.max()), std=std, cv=std / mean if mean else 0.0,
    )  # fmt: skip


@dataclass(frozen=True)
class Ratio:
    """median(candidate) / median(reference); ci_* = bootstrap_ci_* widened by `resolution`."""

    median_ratio: float
    ci_low: float
    ci_high: float
    bootstrap_ci_low: float
    bootstrap_ci_high: float
    resolution: float
    confidence: float
    method: str
    resamples: int
    seed: int

    def contains(self, value: float) -> bool:
        return self.ci_low <= value <= self.ci_high

    def inverted(self) -> Ratio:
        """reference / candidate (a speedup when the reference is the slower model)."""
        return Ratio(
            1 / self.median_ratio, 1 / self.ci_high, 1 / self.ci_low, 1 / self.bootstrap_ci_high,
            1 / self.bootstrap_ci_low, self.resolution, self.confidence, self.method, self.resamples, self.seed,
        )  # fmt: skip

    def to_json(self) -> dict[str, float | int | str]:
        return {
            "median_ratio": self.median_ratio, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "bootstrap_ci_low": self.bootstrap_ci_low, "bootstrap_ci_high": self.bootstrap_ci_high,
            "resolution": self.resolution, "confidence": self.confidence, "method": self.method,
            "resamples": self.resamples, "seed": self.seed,
        }  # fmt: skip


def median_ratio(
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    resolution: float = 0.0,
    seed: int = 0,
) -> Ratio:
    """Ratio of medians of two block-structured samples, shape (rounds, runs per round).

    Both arrays must have the same number of rounds for pairing (runs per round may differ).
    With at least MIN_PAIRED_ROUNDS rounds, rounds are resampled jointly (paired block
    bootstrap); otherwise each sample's runs are resampled independently (iid bootstrap)."""
    candidate, reference = np.atleast_2d(candidate), np.atleast_2d(reference)
    rng = np.random.default_rng(seed)
    paired = candidate.shape[0] == reference.shape[0] >= MIN_PAIRED_ROUNDS
    if paired:
        picks = rng.integers(0, candidate.shape[0], size=(resamples, candidate.shape[0]))
        cand, ref = _summarised(candidate), _summarised(reference)
        replicates = _bootstrap_medians(cand, picks) / _bootstrap_medians(ref, picks)
        method = "paired block bootstrap (interleaved rounds resampled jointly), percentile interval"
    else:
        cand, ref = candidate.reshape(-1, 1), reference.reshape(-1, 1)
        cand_picks = rng.integers(0, cand.shape[0], size=(resamples, cand.shape[0]))
        ref_picks = rng.integers(0, ref.shape[0], size=(resamples, ref.shape[0]))
        replicates = _bootstrap_medians(cand, cand_picks) / _bootstrap_medians(ref, ref_picks)
        method = "iid bootstrap (too few rounds to pair), percentile interval"
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], method=PERCENTILE_METHOD)
    point = float(np.median(candidate) / np.median(reference))
    widened = float(low) * (1 - resolution), float(high) * (1 + resolution)
    return Ratio(point, *widened, float(low), float(high), resolution, confidence, method, resamples, seed)


def _summarised(blocks: np.ndarray) -> np.ndarray:
    if blocks.shape[1] <= ROUND_SUMMARY_SIZE:
        return blocks
    levels = np.linspace(0, 1, ROUND_SUMMARY_SIZE)
    return np.quantile(blocks, levels, axis=1, method=PERCENTILE_METHOD).T


def _bootstrap_medians(blocks: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Median of each replicate; replicate i concatenates the blocks (rows) listed in picks[i]."""
    per_replicate = picks.shape[1] * blocks.shape[1]
    chunk = max(1, BOOTSTRAP_CHUNK_ELEMENTS // per_replicate)
    medians = [
        np.median(blocks[picks[i : i + chunk]].reshape(-1, per_replicate), axis=1) for i in range(0, len(picks), chunk)
    ]
    return np.concatenate(medians)


@dataclass(frozen=True)
class RoundRatio:
    """Median over rounds of per-round ratios (candidate / reference), with the order-statistic
    interval for that median and its exact coverage."""

    per_round: tuple[float, ...]
    median_ratio: float
    ci_low: float
    ci_high: float
    coverage: float
    confidence: float
    method: str = "median over rounds of per-round ratios of per-process medians; order-statistic interval"

    def contains(self, value: float) -> bool:
        return self.ci_low <= value <= self.ci_high

    def inverted(self) -> RoundRatio:
        """reference / candidate, round by round."""
        return ratio_over_rounds([1 / r for r in self.per_round], self.confidence)

    def to_json(self) -> dict[str, Any]:
        return {
            "median_ratio": self.median_ratio, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "coverage": self.coverage, "confidence": self.confidence, "rounds": len(self.per_round),
            "per_round": list(self.per_round), "method": self.method,
        }  # fmt: skip


def ratio_over_rounds(per_round: Sequence[float], confidence: float = 0.95) -> RoundRatio:
    """The median of `per_round` ratios and its distribution-free interval (module docstring).

    >>> r = ratio_over_rounds([2.0, 2.2, 1.9, 2.1, 2.05, 2.3])
    >>> r.median_ratio, (r.ci_low, r.ci_high), round(r.coverage, 3)
    (2.075, (1.9, 2.3), 0.969)"""
    values = np.sort(np.asarray(per_round, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no rounds to take a ratio over")
    k, coverage = median_interval_rank(values.size, confidence)
    low, high = values[k - 1], values[values.size - k]
    return RoundRatio(
        tuple(float(v) for v in per_round), float(np.median(values)), float(low), float(high), coverage, confidence
    )


def median_interval_rank(n: int, confidence: float) -> tuple[int, float]:
    """(k, coverage): the narrowest [x(k), x(n+1-k)] covering the median with ≥ `confidence`, or
    k = 1 and the coverage of [min, max] when n is too small for it."""
    best = (1, _coverage(n, 1))
    for k in range(2, (n + 1) // 2 + 1):
        if (coverage := _coverage(n, k)) < confidence:
            break
        best = (k, coverage)
    return best


def _coverage(n: int, k: int) -> float:
    """P(x(k) ≤ median ≤ x(n+1-k)) = 1 − 2·P(Binomial(n, ½) ≤ k − 1); 0 for a single value."""
    if n < 2:
        return 0.0
    tail = sum(math.comb(n, i) for i in range(k)) / 2**n
    return max(0.0, 1 - 2 * tail)


@dataclass(frozen=True)
class Mode:
    """A group of processes whose medians sit together."""

    count: int
    median_ms: float
    low_ms: float
    high_ms: float

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "median_ms": self.median_ms, "low_ms": self.low_ms, "high_ms": self.high_ms}


def modes(process_medians_ms: Sequence[float], gap: float = MODE_GAP) -> list[Mode]:
    """Groups of sorted per-process medians, split where one exceeds the previous by more than `gap`."""
    groups: list[list[float]] = []
    for value in sorted(float(v) for v in process_medians_ms):
        if groups and value <= groups[-1][-1] * gap:
            groups[-1].append(value)
        else:
            groups.append([value])
    return [Mode(len(g), float(np.median(g)), g[0], g[-1]) for g in groups]


def multimodality(process_medians_ms: Sequence[float], spread_flag: float = SPREAD_FLAG) -> str | None:
    """A finding when per-process medians spread by more than `spread_flag` (max / min), else None.

    >>> multimodality([6.0, 6.1, 3.4, 5.9, 3.4, 6.0])
    'bimodal: 4/6 processes at 6.00 ms, 2/6 at 3.40 ms'
    >>> multimodality([3.40, 3.45, 3.42]) is None
    True"""
    values = [float(v) for v in process_medians_ms]
    if len(values) < 2 or max(values) <= min(values) * spread_flag:
        return None
    found = sorted(modes(values), key=lambda m: (-m.count, m.median_ms))
    if len(found) == 1:
        return (
            f"spread: process medians from {min(values):#.3g} to {max(values):#.3g} ms "
            f"({max(values) / min(values):.2f}×) without a gap between modes"
        )
    name = "bimodal" if len(found) == 2 else f"multimodal ({len(found)} modes)"
    parts = [f"{m.count}/{len(values)}{' processes' if i == 0 else ''} at {m.median_ms:#.3g} ms" for i, m in enumerate(found)]
    return f"{name}: {', '.join(parts)}"
