"""report.json through its typed records: an old report (edgekd.report/1, written by edgekd at
commit 9ec839a from tests/data/report-v1.yaml, raw latency samples cut to their first 40 values
to keep the file small) reads back unchanged, still gates and still renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgekd.gate import CHECKS, evaluate_gates, load_report
from edgekd.records import Artefacts, GatesConfig, Report, StepRecord
from edgekd.report import write_reports
from tests.test_gate import run_cli
from tests.test_report import IMG_TAG

OLD_REPORT = Path(__file__).parent / "data" / "report-v1.json"


def old_report() -> dict:
    return json.loads(OLD_REPORT.read_text())


def test_an_old_report_reads_into_records_and_writes_back_byte_for_byte_the_same_json():
    report = Report.from_json(old_report())
    assert report.to_json() == old_report()
    assert report.latency is not None and sorted(report.latency.speedup) == [1, 8]  # batches are integers
    assert [step.stage for step in report.steps] == ["prune", "prune", "qat"]
    assert report.steps[-1].int8 and report.steps[0].target_metric == "macs"
    assert report.deployed().latency_key == "student.int8"


def test_an_old_report_still_gates_with_its_stored_and_with_new_thresholds(tmp_path: Path):
    stored = load_report(OLD_REPORT)
    again = evaluate_gates(stored, stored.gates_config)

    def verdicts(gates):
        return [(g.name, g.measured, g.threshold, g.passed, g.unit) for g in gates]

    assert verdicts(again) == verdicts(stored.gates)  # the same verdicts the run wrote
    speedup = next(g for g in again if g.name == "min_speedup")
    assert "(paired mode, 95% CI" in speedup.reason  # reports from before deployment mode were timed paired
    code, _ = run_cli(["gate", str(OLD_REPORT)])
    assert code == (0 if all(g.passed for g in again) else 1)
    assert run_cli(["gate", str(OLD_REPORT), "--max-size-mb", "0.5", "--min-speedup", "0.1", "--speedup-batch", "8"])[0] == 0


def test_an_old_report_still_renders(tmp_path: Path):
    markdown_path, html_path = write_reports(tmp_path, load_report(OLD_REPORT))
    assert html_path.read_text().count(IMG_TAG) == 3
    text = markdown_path.read_text()
    assert "| stages[1] qat (int8) | 1/1 |" in text and "student.int8.onnx" in text


def test_a_report_that_does_not_fit_the_schema_is_an_input_error(tmp_path: Path):
    broken = old_report()
    broken["steps"][0]["accuracy"] = "high"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(broken))
    code, error = run_cli(["gate", str(path), "--min-accuracy", "0.5"])
    assert code == 2 and "steps.0.accuracy" in error and str(path) in error


def test_records_refuse_unknown_fields():
    with pytest.raises(ValidationError):
        StepRecord(stage="prune", stage_index=0, step=1, steps=1, accuracy=0.9, accuracy_before_recovery=None,
                   macs=1, params=1, size_bytes=4, taget=3)  # fmt: skip


def test_later_artefacts_join_earlier_files_and_replace_timings():
    raw = old_report()
    both = Artefacts.from_json({"student": {"onnx": raw["student"]["onnx"]}, "latency": raw["latency"]})
    fp32_only = Artefacts.from_json({"student": {"onnx": {"fp32": raw["student"]["onnx"]["fp32"]}}, "latency": raw["latency"]})
    int8_timed = Artefacts.from_json({"student": {"onnx": {"int8": raw["student"]["onnx"]["int8"]}}, "latency": {"models": {}}})
    merged = fp32_only.merged(int8_timed)
    assert set(merged.student.onnx) == {"fp32", "int8"} and merged.latency.models == {}
    assert merged.merged(both).latency == both.latency


@pytest.mark.parametrize("gate", GatesConfig.gate_names())
def test_every_gate_of_the_recipe_block_has_a_check(gate: str):
    assert gate in CHECKS
    assert set(CHECKS) == set(GatesConfig.gate_names())
