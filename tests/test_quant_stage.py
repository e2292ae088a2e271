"""The qat and export stages driven end to end through edgekd.compress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgekd
import edgekd.export  # noqa: F401  (registers the export stage)
import edgekd.prune  # noqa: F401  (registers the prune stage)
import edgekd.quant  # noqa: F401  (registers the qat stage)
from edgekd.errors import InputError
from edgekd.export import read_metadata

TEACHER = "resnet_s(width=8)"


def recipe(workdir: Path, teacher: dict, stages: list) -> dict:
    return {
        "name": "qat-test",
        "seed": 0,
        "device": "cpu",
        "workdir": str(workdir),
        "data": {"dataset": "digits", "batch_size": 64},
        "teacher": teacher,
        "student": "teacher",
        "stages": stages,
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> dict:
    """A trained resnet_s teacher checkpoint, shared by the runs below."""
    workdir = tmp_path_factory.mktemp("teacher")
    edgekd.compress(recipe(workdir, {"model": TEACHER, "train": {"epochs": 3, "lr": 0.05}}, []), quiet=True)
    return {"model": TEACHER, "checkpoint": str(next(workdir.glob("teacher-*.pt")))}


def test_qat_then_export_writes_checked_onnx_files_and_resumes(teacher, tmp_path):
    stages = [
        {"qat": {"profile": "ort-x86", "calibration_batches": 4}, "recover": {"epochs": 1, "lr": 0.001}},
        {"export": {"opset": 17, "dynamic_batch": True, "stem": "int8"}},  # pinned: the resume below compares files
    ]
    config = recipe(tmp_path / "run", teacher, stages)
    report = edgekd.compress(config, quiet=True).to_json()

    step = report["steps"][0]
    assert step["int8"] is True and step["recovery_epochs"] == 1
    assert step["size_bytes"] < report["teacher"]["size_bytes"] / 3
    assert step["macs"] == report["teacher"]["macs"]
    files = report["student"]["onnx"]
    assert set(files) == {"fp32", "int8"}
    assert set(files["int8"]) == {"path", "size_bytes", "accuracy", "parity", "exporter", "stem", "placement"}
    assert files["int8"]["stem"] == "int8" and files["int8"]["placement"] == {"choice": "int8", "reason": "export.stem"}
    assert files["int8"]["parity"]["agreement"] >= 0.99 and files["fp32"]["parity"]["agreement"] >= 0.999
    assert abs(files["int8"]["accuracy"] - step["accuracy"]) <= 0.01  # ONNX Runtime runs what was trained
    assert files["int8"]["size_bytes"] < files["fp32"]["size_bytes"] / 2
    assert report["teacher"]["onnx"]["accuracy"] == pytest.approx(report["teacher"]["accuracy"], abs=0.003)
    metadata = read_metadata(tmp_path / "run" / files["int8"]["path"])
    assert metadata["quant_profile"] == "ort-x86" and metadata["exporter"] == "torchscript"
    assert float(metadata["test_accuracy"]) == pytest.approx(files["int8"]["accuracy"], abs=1e-6)

    # Resume as after a crash during export: the student is rebuilt, re-quantized by restore(), reloaded.
    progress_file = tmp_path / "run" / "progress.json"
    progress = json.loads(progress_file.read_text())
    progress["done"] = progress["done"][:-1]
    progress_file.write_text(json.dumps(progress))
    resumed = edgekd.compress(config, resume=True, quiet=True).to_json()
    assert resumed["student"]["onnx"]["int8"]["accuracy"] == files["int8"]["accuracy"]
    assert resumed["student"]["onnx"]["int8"]["parity"]["max_abs_diff"] == pytest.approx(files["int8"]["parity"]["max_abs_diff"])


def test_stem_auto_times_both_candidates_in_deployment_mode_and_ships_the_choice(teacher, tmp_path):
    timing = {"rounds": 2, "batch_sizes": [1, 8], "threads": 1, "warmup_s": 0.02, "min_duration_s": 0.05}
    stages = [
        {"qat": {"profile": "ort-x86", "calibration_batches": 2}, "recover": {"epochs": 0}},
        {"export": {"stem": "auto", "stem_timing": timing}},
    ]
    report = edgekd.compress(recipe(tmp_path / "run", teacher, stages), quiet=True).to_json()
    int8 = report["student"]["onnx"]["int8"]
    placement = int8["placement"]
    assert int8["stem"] == placement["choice"] in ("int8", "float") and placement["mode"] == "deployment"
    assert placement["rotation"] == ["teacher", "student.int8.stem-int8", "student.int8.stem-float"]
    assert set(placement["timings"]) == {"spinning on, batch 1", "spinning on, batch 8"}
    for entry in placement["timings"].values():
        ratio = entry["float_vs_int8"]
        assert ratio["rounds"] == 2 and ratio["median_ratio"] == pytest.approx(sum(ratio["per_round"]) / 2)
        assert entry["int8_ms"] > 0 and entry["float_ms"] > 0
    wins = all(entry["float_vs_int8"]["ci_high"] < 1 for entry in placement["timings"].values())
    assert placement["choice"] == ("float" if wins else "int8")
    assert placement["layout_changes"]["float"] > placement["layout_changes"]["int8"]
    assert read_metadata(tmp_path / "run" / int8["path"])["int8_stem"] == placement["choice"]
    assert sorted(p.name for p in (tmp_path / "run").glob("*.onnx")) == ["student.int8.onnx", "student.onnx", "teacher.onnx"]


def test_qat_with_zero_recovery_epochs_only_calibrates(teacher, tmp_path):
    stages = [{"qat": {"profile": "tensorrt", "calibration_batches": 2}, "recover": {"epochs": 0}}]
    report = edgekd.compress(recipe(tmp_path / "ptq", teacher, stages), quiet=True).to_json()
    step = report["steps"][0]
    assert step["int8"] is True and step["recovery_epochs"] == 0 and step["accuracy_before_recovery"] is None
    assert step["accuracy"] > report["teacher"]["accuracy"] - 0.05


def test_pruning_after_quantization_is_refused(teacher, tmp_path):
    stages = [{"qat": {}, "recover": {"epochs": 0}}, {"prune": {"ratio": 0.3}, "recover": {"epochs": 0}}]
    with pytest.raises(InputError, match=r"stages\[1\] prune comes after stages\[0\] qat.*prune first, then quantize"):
        edgekd.compress(recipe(tmp_path / "order", teacher, stages), quiet=True)
