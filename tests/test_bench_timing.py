"""The timing core on plain Python callables: warm-up, stop rule, rotating blocks."""

import itertools
import time

import pytest

from edgekd.bench.timing import Target, TimingSettings, measure
from edgekd.errors import InputError

QUICK = TimingSettings(warmup_s=0.02, min_iterations=30, min_duration_s=0.05, target_rounds=6)


def busy(microseconds: float):
    def call():
        end = time.perf_counter() + microseconds / 1e6
        while time.perf_counter() < end:
            pass

    return call


def logged(log: list[int], index: int, call):
    def wrapper():
        log.append(index)
        call()

    return wrapper


def test_every_model_meets_both_minimums_in_the_same_rounds():
    timings = measure([Target(busy(50)), Target(busy(400))], QUICK)
    for timing in timings:
        assert timing.runs >= QUICK.min_iterations
        assert timing.measured_s >= QUICK.min_duration_s
    assert timings[0].blocks_s.shape[0] == timings[1].blocks_s.shape[0]
    # The faster model runs bigger blocks, so both take about the same time per round.
    assert timings[0].block_size > timings[1].block_size


def test_blocks_rotate_which_model_starts_each_round():
    log: list[int] = []
    targets = [Target(logged(log, i, busy(100))) for i in range(3)]
    timings = measure(targets, TimingSettings(warmup_s=0.0, min_iterations=6, min_duration_s=0.0, target_rounds=3))
    measured = log[len(log) - sum(t.runs for t in timings) :]  # drop the warm-up calls
    blocks = [model for model, _ in itertools.groupby(measured)]
    rounds = [blocks[i : i + 3] for i in range(0, len(blocks), 3)]
    assert [r[0] for r in rounds] == [i % 3 for i in range(len(rounds))]
    assert all(sorted(r) == [0, 1, 2] for r in rounds)


def test_first_call_is_timed_apart_from_the_warm_run():
    calls = itertools.count()

    def slow_first():
        time.sleep(0.03 if next(calls) == 0 else 0.0)

    [timing] = measure([Target(slow_first)], QUICK)
    assert timing.first_call_s >= 0.03
    assert timing.blocks_s.max() < 0.03 and timing.warmup_runs > 1


def test_device_times_are_collected_per_block():
    pending: list[float] = []

    def call():
        pending.append(0.5)

    def drain():
        drained = list(pending)
        pending.clear()
        return drained

    [timing] = measure([Target(call, drain)], QUICK)
    assert timing.device_blocks_ms is not None
    assert timing.device_blocks_ms.shape == timing.blocks_s.shape


@pytest.mark.parametrize(
    "settings",
    [dict(min_iterations=0), dict(warmup_s=-1.0), dict(min_duration_s=-0.1), dict(target_rounds=0)],
)
def test_impossible_settings_are_input_errors(settings):
    with pytest.raises(InputError):
        TimingSettings(**settings)
