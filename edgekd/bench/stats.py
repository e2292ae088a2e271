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
widened by a relative `resolution` on each side; both are kept."""

from __future__ import annotations

from dataclasses import dataclass

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
