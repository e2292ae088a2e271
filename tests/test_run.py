"""The runner end to end: real training on digits, report contract, resume after a kill, lock, divergence."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import edgekd
from edgekd.distill import TrainingDiverged
from edgekd.errors import InputError
from edgekd.recipe import load_recipe
from edgekd.run import Run, workdir_lock

THREE_STEPS = [{"distill": {"epochs": 1}}, {"distill": {"epochs": 2}}, {"distill": {"epochs": 6}}]


def comparable(report: dict) -> list[tuple]:
    return [(r["stage_index"], r["step"], r["accuracy"], r["accuracy_before_recovery"], r["macs"], r["params"]) for r in report["steps"]]


def test_quickstart_shaped_run_writes_the_report_contract(make_recipe):
    report = edgekd.compress(make_recipe(), quiet=True)
    workdir = Path(report.workdir)
    on_disk = json.loads((workdir / "report.json").read_text())
    assert on_disk == report.to_json()
    assert on_disk["schema"] == "edgekd.report/1" and on_disk["complete"] is True
    for section in ("teacher", "student"):
        entry = on_disk[section]
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert entry["macs"] > 0 and entry["params"] > 0 and entry["size_bytes"] > 0
    assert on_disk["teacher"]["accuracy"] > 0.8
    assert on_disk["student"]["macs"] < on_disk["teacher"]["macs"] / 4
    (step,) = on_disk["steps"]
    assert {"stage", "step", "accuracy", "macs", "params", "size_bytes", "seconds"} <= step.keys()
    assert step["accuracy_before_recovery"] < step["accuracy"]  # a fresh student learns from the teacher
    assert on_disk["environment"]["python"] and on_disk["environment"]["versions"]["torch"]
    assert (workdir / "report.html").is_file() and (workdir / "report.md").is_file()


def test_second_run_reuses_the_cached_teacher(make_recipe, capsys):
    recipe = make_recipe(stages=[])
    first = edgekd.compress(recipe, console=None)
    cached = list(Path(first.workdir).glob("teacher-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = edgekd.compress(recipe)
    assert "reusing the trained teacher" in capsys.readouterr().out
    assert cached[0].stat().st_mtime_ns == stamp
    assert second.teacher.accuracy == first.teacher.accuracy


def _start(recipe_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "edgekd", "compress", str(recipe_path), "--quiet", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def test_resume_after_a_kill_reaches_the_same_numbers(tmp_path, make_recipe):
    reference = edgekd.compress(make_recipe(stages=THREE_STEPS, workdir=str(tmp_path / "reference")), quiet=True).to_json()

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(make_recipe(stages=THREE_STEPS, workdir=str(tmp_path / "killed"))))
    progress = tmp_path / "killed" / "progress.json"
    process = _start(recipe_path)
    deadline = time.monotonic() + 120
    while not progress.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = json.loads(progress.read_text())["done"]
    assert 1 <= len(done) < 3, "the run must be killed between its first and last step"
    assert (tmp_path / "killed" / ".lock").exists()  # a stale lock from the killed process

    resumed = _start(recipe_path, "--resume")
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, output
    assert "resume:" in output
    final = json.loads((tmp_path / "killed" / "report.json").read_text())
    assert comparable(final) == comparable(reference)
    assert final["student"]["accuracy"] == reference["student"]["accuracy"]


def test_resume_refuses_a_changed_recipe(make_recipe):
    recipe = make_recipe()
    edgekd.compress(recipe, quiet=True)
    with pytest.raises(InputError, match="recipe changed"):
        edgekd.compress(recipe, set=["distill.temperature=2"], resume=True, quiet=True)


def test_a_finished_run_extended_with_stages_resumes_and_matches_a_fresh_run(tmp_path, make_recipe, capsys):
    first, both = [{"distill": {"epochs": 1}}], [{"distill": {"epochs": 1}}, {"distill": {"epochs": 2, "alpha": 0.5}}]
    short = edgekd.compress(make_recipe(str(tmp_path / "extended"), stages=first), quiet=True).to_json()
    extended = edgekd.compress(make_recipe(str(tmp_path / "extended"), stages=both), resume=True, console=None).to_json()
    assert "resume: 1 finished step(s) restored" in capsys.readouterr().out
    assert comparable(extended)[0] == comparable(short)[0]
    fresh = edgekd.compress(make_recipe(str(tmp_path / "fresh"), stages=both), quiet=True).to_json()
    assert comparable(extended) == comparable(fresh)
    saved = json.loads((tmp_path / "extended" / "recipe.json").read_text())
    assert len(saved["stages"]) == 2  # `edgekd export RUN` rebuilds from the recipe that ran last
    with pytest.raises(InputError, match="first 2 stage"):
        edgekd.compress(make_recipe(str(tmp_path / "extended"), stages=[first[0], {"distill": {"epochs": 3}}]), resume=True, quiet=True)


def test_a_second_run_on_the_same_workdir_is_refused(tmp_path):
    with workdir_lock(tmp_path):
        with pytest.raises(InputError, match="in use by another edgekd run"):
            with workdir_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_checkpoint(make_recipe):
    recipe = make_recipe(stages=[{"distill": {"epochs": 1}}, {"distill": {"epochs": 1, "lr": 1e6, "optimizer": {"momentum": 0}}}])
    with pytest.raises(TrainingDiverged, match=r"stages\[1\]|distill") as error:
        edgekd.compress(recipe, quiet=True)
    assert "last good checkpoint is intact" in str(error.value)
    workdir = Path(recipe["workdir"])
    progress = json.loads((workdir / "progress.json").read_text())
    assert progress["done"] == [[0, 1]]
    report = json.loads((workdir / "report.json").read_text())
    assert report["complete"] is False and len(report["steps"]) == 1
    assert not (workdir / ".lock").exists()
    # The finished step survives: resuming with a sane learning rate continues from it.
    resumed = edgekd.compress(load_recipe(recipe, ["stages[1].distill.lr=0.05"]), resume=False, quiet=True)
    assert len(resumed.steps) == 2


def test_a_recovery_that_collapses_to_chance_stops_like_a_divergence(make_recipe):
    # lr 30 with clipped gradients: the loss stays finite, but every input lands in one class.
    collapsing = {"distill": {"epochs": 1, "lr": 30, "grad_clip": 1.0, "optimizer": {"momentum": 0}}}
    recipe = make_recipe(stages=[{"distill": {"epochs": 2}}, collapsing])
    with pytest.raises(TrainingDiverged, match=r"collapsed the student to chance accuracy .* with 10 classes") as error:
        edgekd.compress(recipe, quiet=True)
    assert "stages[1].distill.lr" in str(error.value)
    report = json.loads((Path(recipe["workdir"]) / "report.json").read_text())
    assert report["complete"] is False and len(report["steps"]) == 1  # the collapsed step was not kept


def test_cli_runtime_failure_exits_1_without_traceback(tmp_path, make_recipe):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(make_recipe(stages=[{"distill": {"epochs": 1, "lr": 1e6, "optimizer": {"momentum": 0}}}])))
    process = _start(recipe_path)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 1
    assert "loss became" in output and "Traceback" not in output


def test_run_helpers_are_deterministic(make_recipe):
    run = Run(load_recipe(make_recipe()), quiet=True)
    assert run.phase_seed(1, 2) == run.phase_seed(1, 2) != run.phase_seed(2, 1)


def test_export_rebuilds_a_pruned_quantized_student_from_its_run_folder(make_recipe, capsys):
    stages = [
        {"prune": {"target_macs": 0.5, "steps": 1, "round_to": 2}, "recover": {"epochs": 1}},
        {"qat": {"profile": "ort-x86", "calibration_batches": 2}, "recover": {"epochs": 1, "lr": 0.001}},
        {"export": {"opset": 17, "stem": "int8"}},  # pinned: the re-export below must give the same file
    ]
    report = edgekd.compress(make_recipe(student="teacher", stages=stages), quiet=True).to_json()
    workdir = Path(report["workdir"])
    for kind in ("fp32", "int8"):
        (workdir / report["student"]["onnx"][kind]["path"]).unlink()
    from edgekd.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(workdir)])
    assert exit_info.value.code == 0
    output = " ".join(capsys.readouterr().out.split())
    for kind in ("fp32", "int8"):
        entry = report["student"]["onnx"][kind]
        assert (workdir / entry["path"]).is_file()
        assert f"ONNX Runtime test accuracy {entry['accuracy']:.2%}" in output
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(workdir / "nope")])
    assert exit_info.value.code == 2


def test_cached_teacher_logits_match_the_live_teacher(make_recipe):
    from edgekd.distill import Batch, DistillConfig, Objective, Phase

    run = Run(load_recipe(make_recipe()), quiet=True)
    run.prepare()
    cache = run.soft_labels()
    logits = cache.all_logits(None)
    assert logits.shape == (len(run.data.train), run.data.num_classes)
    assert cache.summary()["precision"] == ["float16"] and cache.summary()["views"] == 1
    assert len(list(run.workdir.glob("soft-labels-*/plain.npy"))) == 1
    x, y = run.data.train.tensors[0][:64], run.data.train.tensors[1][:64]
    phase = Phase(DistillConfig(), run.teacher, run.teacher, run.device, soft_labels=run.soft_labels)
    with Objective(phase, x[:4]) as objective:
        cached = Batch(objective, x, y, torch.arange(64)).teacher_logits
        live = Batch(objective, x, y).teacher_logits
    assert torch.equal(cached, live.half().float())
    again = Run(load_recipe(make_recipe()), quiet=True)
    again.prepare()
    assert torch.equal(again.soft_labels().all_logits(None), logits)  # reused from the workdir, not recomputed
    next(again.workdir.glob("soft-labels-*/plain.npy")).write_bytes(b"truncated")
    rebuilt = Run(load_recipe(make_recipe()), quiet=True)
    rebuilt.prepare()
    assert torch.equal(rebuilt.soft_labels().all_logits(None), logits)  # a corrupt file is built again


def test_bf16_autocast_and_channels_last_train_a_student(make_recipe):
    report = edgekd.compress(make_recipe(runtime={"precision": "bf16", "channels_last": True}, student="cnn(width=8)",
                                         stages=[{"distill": {"epochs": 3}}]), quiet=True)
    (step,) = report.steps
    assert step.accuracy > step.accuracy_before_recovery and step.accuracy > 0.5
