"""Quality gates: verdicts on hand-made reports, baseline regressions, JUnit XML, exit codes, step summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from edgekd.errors import EdgekdError, InputError
from edgekd.cli.gate import gate_command, report_command
from edgekd.gate import BaselineLimits, GatesConfig, deployed_artefact, evaluate_gates, parse_fraction
from edgekd.report import write_junit


def _latency(rng: np.random.Generator, median_ms: float, n: int = 200) -> dict[str, Any]:
    samples = (median_ms * rng.lognormal(0.0, 0.08, n)).tolist()
    return {"median_ms": float(np.median(samples)), "p90_ms": float(np.percentile(samples, 90)), "samples_ms": samples}


def sample_report() -> dict[str, Any]:
    """A finished run as the runner writes it: 4 prune steps, QAT, int8 export, interleaved bench."""
    rng = np.random.default_rng(0)
    prune = [  # (macs, params, accuracy before recovery, accuracy after)
        (1_000_000, 19_000, 0.91, 0.970), (800_000, 15_000, 0.88, 0.966),
        (600_000, 11_000, 0.84, 0.962), (400_000, 7_000, 0.79, 0.958),
    ]  # fmt: skip
    steps = [
        {"stage": "prune", "stage_index": 0, "step": i + 1, "steps": 4, "accuracy": after, "accuracy_before_recovery": before,
         "macs": macs, "params": params, "size_bytes": params * 4, "seconds": 12.0 + i}
        for i, (macs, params, before, after) in enumerate(prune)
    ]  # fmt: skip
    steps.append({"stage": "qat", "stage_index": 1, "step": 1, "steps": 1, "accuracy": 0.955, "accuracy_before_recovery": 0.94,
                  "macs": 400_000, "params": 7_000, "size_bytes": 7_000, "seconds": 5.0, "int8": True,
                  "val_accuracy": 0.961, "teacher_val_accuracy": 0.958, "passes_teacher": True})  # fmt: skip
    return {
        "schema": "edgekd.report/1",
        "name": "quickstart",
        "recipe_hash": "ab12cd34ef56ab78",
        "created": "2026-11-27T18:30:00+00:00",
        "dataset": {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "sizes": {"train": 1295, "val": 143, "test": 359}},
        "teacher": {"model": "resnet_s(width=16)", "accuracy": 0.975, "macs": 1_234_567, "params": 23_456, "size_bytes": 93_824},
        "student": {
            "model": "resnet_s(width=16)", "accuracy": 0.955, "macs": 400_000, "params": 7_000, "size_bytes": 28_000,
            "onnx": {"fp32": {"path": "student.onnx", "size_bytes": 30_000, "accuracy": 0.956},
                     "int8": {"path": "student.int8.onnx", "size_bytes": 9_000, "accuracy": 0.953}},
        },  # fmt: skip
        "steps": steps,
        "latency": {
            "backend": "onnxruntime", "threads": 2,
            "models": {
                name: {"1": _latency(rng, ms), "64": _latency(rng, ms * 20)}
                for name, ms in (("teacher", 0.52), ("student", 0.24), ("student.int8", 0.2))
            },
            "speedup": {"1": {"ratio": 2.6, "ci": [2.4, 2.8]}, "64": {"ratio": 3.4, "ci": [3.2, 3.6]}},
            "device": "Intel Xeon Platinum 8375C (2 threads)",
        },  # fmt: skip
        "gates": [],
        "environment": {"python": "3.11.7", "torch": "2.13.0", "onnxruntime": "1.32.0", "cpu": "Intel Xeon Platinum 8375C", "gpu": None},
    }


ALL_GATES = {"min_accuracy": 0.9, "max_accuracy_drop": 3, "max_size_mb": 0.5, "min_speedup": 3, "max_latency_ms": 1.0}


def verdicts(results) -> dict[str, bool]:
    return {r.name: r.passed for r in results}


# ---------------------------------------------------------------- verdicts


def test_every_gate_passes_on_a_good_run():
    results = evaluate_gates(sample_report(), GatesConfig(**ALL_GATES))
    assert verdicts(results) == {name: True for name in ALL_GATES}
    by_name = {r.name: r for r in results}
    assert by_name["min_accuracy"].measured == 0.953  # the int8 ONNX file is what ships
    assert by_name["max_size_mb"].measured == pytest.approx(0.009)
    assert by_name["min_speedup"].measured == 3.4  # largest batch by default
    assert by_name["max_latency_ms"].measured < 0.25  # smallest batch by default: per-request latency


@pytest.mark.parametrize(
    ("gate", "threshold", "reason"),
    [
        ("min_accuracy", 0.96, "student.int8.onnx accuracy: 95.30%, below the minimum 96.00%"),
        ("max_accuracy_drop", 1.0, "drop: 2.20 points, above the maximum 1.00 points"),
        ("max_size_mb", 0.005, "student.int8.onnx size: 0.009 MB, above the maximum 0.005 MB"),
        ("min_speedup", 4.0, "speedup vs teacher at batch 64 (paired mode, 95% CI 3.20–3.60): 3.40×, below the minimum 4.00×"),
        ("max_latency_ms", 0.1, "absolute latency, pinned device only (Intel Xeon Platinum 8375C (2 threads))"),
    ],
)
def test_each_gate_fails_alone(gate: str, threshold: float, reason: str):
    results = evaluate_gates(sample_report(), GatesConfig(**{**ALL_GATES, gate: threshold}))
    failed = [r for r in results if not r.passed]
    assert [r.name for r in failed] == [gate]
    assert reason in failed[0].reason


def test_speedup_and_latency_read_the_chosen_batch():
    results = evaluate_gates(sample_report(), GatesConfig(min_speedup=3, speedup_batch=1, max_latency_ms=1, latency_batch=64))
    assert verdicts(results) == {"min_speedup": False, "max_latency_ms": False}
    missing = evaluate_gates(sample_report(), GatesConfig(min_speedup=1, speedup_batch=8))[0]
    assert (missing.passed, missing.measured) == (False, None)
    assert "no speedup measured at batch 8 (measured batches: 1, 64)" in missing.reason


def test_gates_without_a_bench_stage_fail_and_say_why():
    report = sample_report()
    del report["latency"]
    results = evaluate_gates(report, GatesConfig(min_speedup=2, max_latency_ms=5))
    assert all(not r.passed and r.measured is None for r in results)
    assert all("no bench stage ran" in r.reason for r in results)


def test_the_deployed_artefact_falls_back_from_int8_to_fp32_to_pytorch():
    report = sample_report()
    assert deployed_artefact(report).label == "student.int8.onnx"
    del report["student"]["onnx"]["int8"]
    assert (deployed_artefact(report).size_bytes, deployed_artefact(report).accuracy) == (30_000, 0.956)
    del report["student"]["onnx"]
    assert (deployed_artefact(report).size_bytes, deployed_artefact(report).accuracy) == (28_000, 0.955)


def test_a_threshold_met_exactly_passes_despite_float_rounding():
    report = sample_report()
    report["teacher"]["accuracy"], report["student"]["onnx"]["int8"]["accuracy"] = 0.96, 0.955  # drop 0.5000000000000004
    assert evaluate_gates(report, GatesConfig(max_accuracy_drop=0.5))[0].passed


# ---------------------------------------------------------------- baseline


def regressed(accuracy_points: float = 0.0, size_growth: float = 0.0, speedup_drop: float = 0.0) -> dict[str, Any]:
    report = sample_report()
    int8 = report["student"]["onnx"]["int8"]
    int8["accuracy"] -= accuracy_points / 100
    int8["size_bytes"] = round(int8["size_bytes"] * (1 + size_growth))
    for speedup in report["latency"]["speedup"].values():
        speedup["ratio"] *= 1 - speedup_drop
    return report


LIMITS = BaselineLimits(max_accuracy_drop=1.0, max_size_growth=0.05, max_speedup_drop=0.10)


def test_a_run_within_the_baseline_limits_passes():
    results = evaluate_gates(regressed(0.9, 0.04, 0.09), GatesConfig(), sample_report(), LIMITS)
    assert verdicts(results) == {"baseline.max_accuracy_drop": True, "baseline.max_size_growth": True, "baseline.max_speedup_drop": True}


@pytest.mark.parametrize(
    ("change", "gate", "reason"),
    [
        ({"accuracy_points": 1.5}, "baseline.max_accuracy_drop", "drop: 1.50 points, above the maximum 1.00 points"),
        ({"size_growth": 0.10}, "baseline.max_size_growth", "9,900 B vs baseline student.int8.onnx 9,000 B, growth: 10.00%"),
        ({"speedup_drop": 0.15}, "baseline.max_speedup_drop", "speedup 2.89× at batch 64 vs baseline 3.40×, drop: 15.00%"),
    ],
)
def test_each_baseline_regression_fails(change: dict[str, float], gate: str, reason: str):
    results = evaluate_gates(regressed(**change), GatesConfig(), sample_report(), LIMITS)
    failed = [r for r in results if not r.passed]
    assert [r.name for r in failed] == [gate]
    assert reason in failed[0].reason


def test_baseline_limits_without_a_baseline_are_refused():
    with pytest.raises(InputError, match="need a baseline report"):
        evaluate_gates(sample_report(), GatesConfig(), None, LIMITS)
    with pytest.raises(InputError, match="max_size_growth must be a number ≥ 0"):
        BaselineLimits(max_size_growth=-0.1)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "fields",
    [{"min_accuracy": 1.5}, {"min_accuracy": -0.1}, {"max_accuracy_drop": -1}, {"max_size_mb": 0}, {"min_speedup": 0},
     {"speedup_batch": 0}, {"max_latency_ms": -2}, {"min_acuracy": 0.9}],
)  # fmt: skip
def test_gates_config_refuses_impossible_thresholds(fields: dict[str, float]):
    with pytest.raises(ValidationError):
        GatesConfig(**fields)


def test_gates_config_is_frozen_and_all_optional():
    config = GatesConfig()
    assert not config.has_thresholds()
    assert evaluate_gates(sample_report(), config) == []
    with pytest.raises(ValidationError):
        config.min_accuracy = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("0.05", 0.05), ("12.5%", 0.125), ("0", 0.0)])
def test_parse_fraction_reads_percent_and_fraction(text: str, value: float):
    assert parse_fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5", "five", "%"])
def test_parse_fraction_refuses_ambiguous_or_garbage(text: str):
    with pytest.raises(ValueError):
        parse_fraction(text)


# ---------------------------------------------------------------- JUnit


def test_junit_xml_has_one_testcase_per_gate_and_counts_failures(tmp_path: Path):
    results = evaluate_gates(sample_report(), GatesConfig(**{**ALL_GATES, "min_accuracy": 0.99, "min_speedup": 10}))
    root = ET.parse(write_junit(results, tmp_path / "out" / "gates.xml")).getroot()
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "edgekd gates"
    suite = suites[0]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "2", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == list(ALL_GATES)
    failures = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failures) == {"min_accuracy", "min_speedup"}
    assert failures["min_accuracy"].get("message") == next(r.reason for r in results if r.name == "min_accuracy")


# ---------------------------------------------------------------- the command and its exit codes


def run_cli(args: list[str]) -> tuple[int, str]:
    """The gate/report commands in a tiny app that maps errors to exit codes like edgekd's main CLI."""
    app = typer.Typer()
    app.command("gate")(gate_command)
    app.command("report")(report_command)
    try:
        app(args, standalone_mode=False)
    except (EdgekdError, TyperException) as exc:  # typer's usage errors carry exit code 2
        return exc.exit_code, str(exc)
    return 0, ""


def write(path: Path, report: dict[str, Any]) -> str:
    path.write_text(json.dumps(report))
    return str(path)


def test_gate_command_exits_0_when_all_pass_and_1_when_any_fails(tmp_path: Path, capsys):
    report = write(tmp_path / "report.json", sample_report())
    assert run_cli(["gate", report, "--min-accuracy", "0.9", "--min-speedup", "3", "--max-size-mb", "0.5"])[0] == 0
    assert "all 3 gates passed" in capsys.readouterr().out
    assert run_cli(["gate", report, "--min-accuracy", "0.99", "--max-accuracy-drop", "3"])[0] == 1
    output = capsys.readouterr().out
    assert "FAIL" in output and "1 of 2 gates failed: min_accuracy" in output


def test_gate_command_compares_with_a_baseline(tmp_path: Path):
    baseline = write(tmp_path / "baseline.json", sample_report())
    ok = write(tmp_path / "ok.json", regressed(0.5, 0.03))
    bad = write(tmp_path / "bad.json", regressed(0.5, 0.08))
    limits = ["--max-accuracy-drop", "1", "--max-size-growth", "5%", "--max-speedup-drop", "0.1"]
    assert run_cli(["gate", ok, "--baseline", baseline, *limits])[0] == 0
    assert run_cli(["gate", bad, "--baseline", baseline, *limits])[0] == 1


def test_gate_command_reevaluates_the_recipe_gates_stored_in_the_report(tmp_path: Path):
    report = sample_report()
    report["gates_config"] = {"min_accuracy": 0.9, "min_speedup": 3.0}
    assert run_cli(["gate", write(tmp_path / "pass.json", report)])[0] == 0
    report["gates_config"] = {"min_accuracy": 0.99}
    assert run_cli(["gate", write(tmp_path / "fail.json", report)])[0] == 1
    # Thresholds on the command line replace the stored ones.
    assert run_cli(["gate", str(tmp_path / "fail.json"), "--min-accuracy", "0.9"])[0] == 0


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["--min-accuracy", "0.9"], "does not exist"),
        ("{not json", ["--min-accuracy", "0.9"], "is not JSON"),
        (json.dumps({**sample_report(), "schema": "edgekd.report/0"}), ["--min-accuracy", "0.9"],
         "has schema 'edgekd.report/0'; expected 'edgekd.report/1'"),
        (json.dumps(sample_report()), [], "no gates to evaluate"),
        (json.dumps(sample_report()), ["--min-accuracy", "90"], "--min-accuracy: Input should be less than or equal to 1"),
        (json.dumps(sample_report()), ["--max-size-growth", "5%"], "add --baseline"),
    ],
)  # fmt: skip
def test_gate_command_exits_2_on_bad_input(tmp_path: Path, content: str | None, args: list[str], message: str):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    code, error = run_cli(["gate", str(path), *args])
    assert code == 2
    assert message in error
    if content is None or "schema" in message or "JSON" in message:
        assert str(path) in error  # names the file


def test_an_unreadable_percentage_is_a_usage_error(tmp_path: Path):
    report = write(tmp_path / "report.json", sample_report())
    assert run_cli(["gate", report, "--baseline", report, "--max-size-growth", "lots"])[0] == 2


def test_gate_command_writes_junit_and_appends_to_the_github_step_summary(tmp_path: Path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report = write(tmp_path / "report.json", sample_report())
    junit = tmp_path / "gates.xml"
    assert run_cli(["gate", report, "--min-accuracy", "0.99", "--min-speedup", "3", "--junit", str(junit)])[0] == 1
    text = summary.read_text()
    assert text.startswith("# earlier step\n")
    assert "❌ edgekd gates · quickstart: 1 of 2 gates failed: min_accuracy" in text
    assert "| gate | measured | threshold | result | reason |" in text
    assert "| min_speedup | 3.40× | ≥ 3.00× | pass |" in text
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
