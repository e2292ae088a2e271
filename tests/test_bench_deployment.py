"""Deployment mode: each model alone in a fresh process per round, real subprocesses and real
ONNX Runtime sessions. Each process start costs about half a second, so rounds and models are few."""

import json
import os

import numpy as np
import pytest
from rich.console import Console

from edgekd.bench import benchmark, render
from edgekd.bench.stage import BenchConfig, latency_section
from edgekd.bench.stats import median_interval_rank, multimodality, ratio_over_rounds
from edgekd.errors import InputError
from tests.test_bench_run import TinyNet, cli, export

QUICK = dict(threads=1, warmup_s=0.05, min_iterations=10, min_duration_s=0.05, roofline=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deployment_models")
    return {
        "small": export(TinyNet(width=8), folder / "small.onnx", 16),
        "large": export(TinyNet(width=32, depth=3), folder / "large.onnx", 32),
    }


@pytest.fixture(scope="module")
def deployed(models):
    """Two models, two batch sizes, spinning on and off, two rounds: 8 fresh processes."""
    return benchmark(
        [models["small"], models["large"]], rounds=2, batch_sizes=(1, 2), spinning="both", memory=False, **QUICK
    )


def test_one_fresh_process_per_model_condition_and_round(deployed):
    processes = deployed.processes
    assert deployed.mode == "deployment" and len(processes) == 2 * 2 * 2
    pids = [p.pid for p in processes]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    assert all(p.machine["others_busy_cores"] >= 0 and p.machine["steal_cores"] >= 0 for p in processes)
    placed = {(p.model, p.condition, p.round) for p in processes}
    assert placed == {(m, c, r) for m in ("small", "large") for c in ("on", "off") for r in (0, 1)}
    # The order rotates: round 0 starts with the first model, round 1 with the second.
    first = {p.round: p.model for p in processes if p.position == 0}
    assert first == {0: "small", 1: "large"}
    for case in deployed.cases:
        mine = [p for p in processes if p.model == case.model and p.condition == case.condition]
        assert [p.pid for p in case.processes] == [p.pid for p in mine]
        assert case.median_ms == pytest.approx(np.median([p.median_ms(case.batch) for p in mine]))
        assert all(set(p.timings) == {1, 2} and p.timings[case.batch].runs >= QUICK["min_iterations"] for p in mine)
    data = json.loads(json.dumps(deployed.to_json()))
    assert data["mode"] == "deployment" and data["settings"]["spinning_conditions"] == ["on", "off"]
    assert sorted(p["pid"] for p in data["processes"]) == sorted(pids)
    assert {r["condition"] for r in data["results"]} == {"on", "off"}
    assert all(len(r["pids"]) == 2 and len(r["process_medians_ms"]) == 2 for r in data["results"])
    assert data["models"][0]["description"]["session_options"] == "ONNX Runtime defaults except intra_op_num_threads=1"
    console = Console(record=True, width=200, markup=False)  # as edgekd's own console
    render(deployed, console)
    text = console.export_text()
    assert "[/]" not in text and "[dim]" not in text and "[bold]" not in text  # styles, not printed tags
    assert "batch 2 · spinning off" in text and "spinning off / spinning on (latency ratio, median over rounds): small b1" in text


def test_ratios_and_intervals_are_taken_over_rounds(deployed):
    for condition in ("on", "off"):
        for batch in (1, 2):
            small, large = (deployed.case(name, batch, condition) for name in ("small", "large"))
            expected = [
                mine.median_ms(batch) / theirs.median_ms(batch)
                for mine, theirs in zip(sorted(large.processes, key=lambda p: p.round), sorted(small.processes, key=lambda p: p.round))
            ]
            ratio = deployed.ratio("large", batch, condition)
            assert list(ratio.per_round) == pytest.approx(expected)
            assert ratio.median_ratio == pytest.approx(np.median(expected))
            assert (ratio.ci_low, ratio.ci_high) == pytest.approx((min(expected), max(expected)))
            assert ratio.coverage == pytest.approx(0.5)  # two rounds: [min, max] covers the median half the time
            assert ratio.median_ratio > 1  # the large net does more work per sample
            speedup = ratio.inverted()
            assert list(speedup.per_round) == pytest.approx([1 / r for r in expected])


@pytest.mark.parametrize(
    ("n", "rank", "coverage"), [(1, 1, 0.0), (2, 1, 0.5), (5, 1, 0.9375), (6, 1, 0.96875), (10, 2, 0.978515625)]
)
def test_order_statistic_interval_for_the_median(n, rank, coverage):
    assert median_interval_rank(n, 0.95) == (rank, pytest.approx(coverage))


def test_ratio_over_rounds_of_an_odd_and_an_even_count():
    odd = ratio_over_rounds([3.0, 1.0, 2.0])
    assert (odd.median_ratio, odd.ci_low, odd.ci_high) == (2.0, 1.0, 3.0)
    ten = ratio_over_rounds(list(range(1, 11)))
    assert (ten.median_ratio, ten.ci_low, ten.ci_high) == (5.5, 2.0, 9.0)


@pytest.mark.parametrize(
    ("medians", "finding"),
    [
        ([6.0, 6.1, 3.4, 5.9, 3.4, 6.0], "bimodal: 4/6 processes at 6.00 ms, 2/6 at 3.40 ms"),
        ([1.0, 1.01, 2.0, 2.02, 4.0], "multimodal (3 modes): 2/5 processes at 1.00 ms, 2/5 at 2.01 ms, 1/5 at 4.00 ms"),
        ([1.0, 1.08, 1.16, 1.25, 1.35], "spread: process medians from 1.00 to 1.35 ms (1.35×) without a gap between modes"),
        ([3.40, 3.45, 3.52, 3.38], None),
    ],
)
def test_multimodality_findings(medians, finding):
    assert multimodality(medians) == finding


def test_a_model_slow_in_every_other_process_is_flagged_bimodal(models, tmp_path, monkeypatch):
    """A real plug-in backend that sleeps after each inference in every second process that loads it."""
    monkeypatch.setenv("EDGEKD_TEST_SLEEPY_COUNT", str(tmp_path / "count"))
    result = benchmark([models["small"]], backend="tests.bench_plugins:SleepyBackend", rounds=4, memory=False, **QUICK)
    case = result.case("small", 1)
    slow = [m > 2.0 for m in case.process_medians_ms]  # sleeps 2 ms per call; the model itself takes µs
    assert slow.count(True) == 2 and slow.count(False) == 2
    assert case.finding.startswith("bimodal: 2/4 processes at ") and [m.count for m in case.modes] == [2, 2]
    assert "(other processes' load, cores: " in case.finding
    assert result.findings == [f"small at batch 1, spinning on: {case.finding}"]
    console = Console(record=True, width=200)
    render(result, console)
    assert "finding: small at batch 1, spinning on: bimodal" in console.export_text()


def test_cli_deployment_json_names_mode_and_pids(models, tmp_path):
    out = tmp_path / "bench.json"
    code, result = cli(
        [str(models["small"]), "--rounds", "2", "--threads", "1", "--warmup", "0.02", "--min-iterations", "5",
         "--min-duration", "0.02", "--no-memory", "--json", str(out)]
    )  # fmt: skip
    assert code == 0, result.output
    data = json.loads(out.read_text())
    assert data["mode"] == "deployment" and len(data["processes"]) == 2
    assert "deployment mode: each model alone in a fresh process" in result.output
    assert "[/]" not in result.output and "[dim]" not in result.output


def test_deployment_mode_refuses_modules_and_single_rounds(models):
    with pytest.raises(InputError, match="in-process module"):
        benchmark([models["small"], TinyNet()], rounds=2, **QUICK)
    with pytest.raises(InputError, match="at least 2 rounds"):
        benchmark([models["small"]], rounds=1, **QUICK)
    code, result = cli([str(models["small"]), "--mode", "sideways"])
    assert code == 2 and "bench mode 'sideways'" in str(result.exception)


def test_report_latency_section_from_a_deployment_run(deployed):
    section = latency_section(deployed, ["small", "large"], "onnxruntime", 1).to_json()  # as report.json holds it
    assert section["mode"] == "deployment" and section["spinning"] == "on"
    entry = section["models"]["large"]["2"]
    assert entry["median_ms"] == deployed.case("large", 2).median_ms and len(entry["pids"]) == 2
    assert len(entry["samples_ms"]) == deployed.case("large", 2).runs
    speedup = section["speedup"]["2"]  # teacher (first) / deployed (last), round by round: here small / large
    assert speedup["ratio"] == pytest.approx(np.median([1 / r for r in deployed.ratio("large", 2).per_round]))
    assert speedup["ci"][0] <= speedup["ratio"] <= speedup["ci"][1] and len(speedup["per_round"]) == 2
    other = section["conditions"]["off"]
    assert "samples_ms" not in other["models"]["large"]["2"] and other["speedup"]["2"]["model"] == "large"


def test_bench_config_spinning_and_mode():
    assert BenchConfig().mode == "deployment" and BenchConfig().spinning is None
    assert BenchConfig(spinning="both").spinning == ["on", "off"]
    assert BenchConfig(spinning="off").spinning == ["off"]
    with pytest.raises(ValueError, match="paired mode times one setting"):
        BenchConfig(mode="paired", spinning="both")
    with pytest.raises(ValueError):
        BenchConfig(rounds=1)
