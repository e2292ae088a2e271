"""Bench statistics on samples whose values are worked out by hand."""

import math

import numpy as np
import pytest

from edgekd.bench.stats import MIN_PAIRED_ROUNDS, median_ratio, percentile, summarize

ONE_TO_TEN = np.arange(1.0, 11.0)


def test_summary_of_one_to_ten_matches_hand_computed_values():
    # Type-7 percentile: position h = (n - 1) q in the sorted sample, interpolated.
    # n = 10: p90 → h = 8.1 → 9 + 0.1 × (10 - 9) = 9.1; p95 → h = 8.55 → 9.55; p99 → 9.91.
    # Sample std: Σ(x - 5.5)² = 82.5, / 9 → 9.1667, √ → 3.02765; CV = 3.02765 / 5.5.
    summary = summarize(ONE_TO_TEN)
    assert (summary.n, summary.min, summary.max, summary.mean, summary.median) == (10, 1.0, 10.0, 5.5, 5.5)
    assert summary.p90 == pytest.approx(9.1)
    assert summary.p95 == pytest.approx(9.55)
    assert summary.p99 == pytest.approx(9.91)
    assert summary.std == pytest.approx(math.sqrt(82.5 / 9))
    assert summary.cv == pytest.approx(math.sqrt(82.5 / 9) / 5.5)
    assert summary.unstable  # CV 55% > 10%


def test_percentile_interpolates_between_order_statistics():
    # Four samples: h = 3 × 0.25 = 0.75 → 10 + 0.75 × (20 - 10) = 17.5.
    assert percentile(np.array([40.0, 10.0, 30.0, 20.0]), 25) == pytest.approx(17.5)


def test_tight_sample_is_stable_and_single_sample_has_zero_spread():
    assert not summarize(np.array([10.0, 10.1, 9.9, 10.0])).unstable
    single = summarize(np.array([3.0]))
    assert (single.std, single.cv, single.p99) == (0.0, 0.0, 3.0)


def test_ratio_of_constant_samples_is_exact():
    ratio = median_ratio(np.full((10, 4), 1.0), np.full((10, 4), 2.0))
    assert (ratio.median_ratio, ratio.ci_low, ratio.ci_high) == (0.5, 0.5, 0.5)


def drifting_rounds(rounds: int = 20, runs: int = 8) -> np.ndarray:
    """Latencies whose level drifts from round to round (the machine got slower), with jitter."""
    drift = np.linspace(1.0, 3.0, rounds)[:, None]
    jitter = 1 + 0.01 * np.random.default_rng(1).standard_normal((rounds, runs))
    return drift * jitter


@pytest.mark.parametrize("runs", [8, 1000])  # long rounds are bootstrapped from quantile summaries
def test_pairing_by_round_cancels_drift_shared_by_both_models(runs):
    reference = drifting_rounds(runs=runs)
    candidate = 0.5 * reference  # exactly twice as fast in every round
    paired = median_ratio(candidate, reference)
    assert paired.method.startswith("paired")
    assert paired.median_ratio == pytest.approx(0.5)
    assert paired.ci_high - paired.ci_low == pytest.approx(0.0, abs=1e-12)
    unpaired = median_ratio(candidate.reshape(1, -1), reference.reshape(1, -1), resamples=200)
    assert unpaired.method.startswith("iid")
    assert unpaired.ci_high - unpaired.ci_low > 0.01  # drift looks like noise without pairing


def test_bootstrap_is_seeded_and_covers_the_true_ratio():
    rng = np.random.default_rng(7)
    reference = rng.normal(10.0, 0.5, (12, 30))
    candidate = rng.normal(10.0, 0.5, (12, 30))
    first, again = median_ratio(candidate, reference, seed=3), median_ratio(candidate, reference, seed=3)
    assert first == again
    assert first.contains(1.0)
    assert first.ci_low < first.median_ratio < first.ci_high


def test_few_rounds_fall_back_to_iid_bootstrap():
    rounds = MIN_PAIRED_ROUNDS - 1
    ratio = median_ratio(np.full((rounds, 5), 2.0), np.full((rounds, 5), 1.0))
    assert ratio.method.startswith("iid") and ratio.median_ratio == 2.0


def test_resolution_widens_the_bootstrap_interval_on_each_side():
    ratio = median_ratio(np.full((10, 4), 1.02), np.full((10, 4), 1.0), resolution=0.05)
    assert (ratio.bootstrap_ci_low, ratio.bootstrap_ci_high) == (pytest.approx(1.02), pytest.approx(1.02))
    assert (ratio.ci_low, ratio.ci_high) == (pytest.approx(1.02 * 0.95), pytest.approx(1.02 * 1.05))
    assert ratio.contains(1.0)  # a 2% session-to-session difference is within resolution
