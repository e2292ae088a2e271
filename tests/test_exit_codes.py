"""Bad input is exit 2 with one paragraph naming the field or file — never "internal error" (exit 1, which CI
reads as a failed gate). One test per case; cases of one shape share a parametrised test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml

import edgekd
from edgekd.cli import main
from tests.conftest import copy_run, tiny_recipe
from tests.test_gate import sample_report


def edgekd_cli(args: list[str], capsys) -> tuple[int, str]:
    """Run the `edgekd` entry point in this process: (exit code, everything it printed)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, " ".join((captured.out + captured.err).split())


def assert_bad_input(code: int, output: str, *named: str) -> None:
    assert code == 2, output
    assert "internal error" not in output and "Traceback" not in output
    for text in named:
        assert text in output, f"{text!r} not in {output!r}"


def write_recipe(path: Path, recipe: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


# ---------------------------------------------------------------- a damaged run folder

PROGRESS_DAMAGE = {
    "truncated": b'{"stage_hashes": ["ab',
    "empty": b"",
    "a list": b"[]",
    "an empty mapping": b"{}",
    "binary": bytes(range(256)),
    "a checkpoint outside the folder": json.dumps({"stage_hashes": ["x"], "checkpoint": "../../etc/passwd", "done": [[0, 1]]}).encode(),
}


@pytest.mark.parametrize("damage", PROGRESS_DAMAGE, ids=list(PROGRESS_DAMAGE))
def test_resume_from_a_damaged_progress_file_is_bad_input(damage: str, finished_run: Path, tmp_path: Path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "progress.json").write_bytes(PROGRESS_DAMAGE[damage])
    code, output = edgekd_cli(["compress", str(run / "recipe.json"), "--resume", "--quiet"], capsys)
    assert_bad_input(code, output, "progress file", "progress.json", "Run without --resume")


@pytest.fixture(scope="module")
def other_run(tmp_path_factory) -> Path:
    """A finished run of another recipe (another seed and student), whose checkpoint is foreign to `finished_run`."""
    workdir = tmp_path_factory.mktemp("other") / "run"
    recipe = tiny_recipe(workdir, seed=1, student="cnn(width=8)", teacher={"model": "resnet_s(width=8)", "train": {"epochs": 1}},
                         stages=[{"distill": {"epochs": 1}}])
    edgekd.compress(recipe, quiet=True)
    return workdir


def _checkpoint(run: Path) -> Path:
    return run / "checkpoints" / json.loads((run / "progress.json").read_text())["checkpoint"]


def _without_fingerprint(source: Path, target: Path) -> None:
    """A checkpoint as edgekd wrote it before checkpoints carried their recipe's hash."""
    saved = torch.load(source, weights_only=True)
    del saved["recipe"]
    torch.save(saved, target)


@pytest.mark.parametrize(
    ("plant", "message"),
    [(shutil.copyfile, "belongs to another run"), (_without_fingerprint, "does not fit this run's student")],
    ids=["from another run", "from another run of an earlier edgekd"],
)
def test_resume_from_a_foreign_checkpoint_is_bad_input(plant: Callable[[Path, Path], Any], message: str, finished_run: Path,
                                                       other_run: Path, tmp_path: Path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    plant(_checkpoint(other_run), _checkpoint(run))
    code, output = edgekd_cli(["compress", str(run / "recipe.json"), "--resume", "--quiet"], capsys)
    assert_bad_input(code, output, message, _checkpoint(run).name)


def test_a_lock_that_is_a_folder_is_bad_input(finished_run: Path, tmp_path: Path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    (run / ".lock").mkdir()
    code, output = edgekd_cli(["compress", str(run / "recipe.json"), "--quiet"], capsys)
    assert_bad_input(code, output, "lock file", ".lock", "is a folder")


def test_a_workdir_that_is_a_file_is_bad_input(tmp_path: Path, capsys):
    (tmp_path / "run").write_text("a file")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run"))
    code, output = edgekd_cli(["compress", recipe, "--quiet"], capsys)
    assert_bad_input(code, output, "workdir", "is a file, not a folder")


# ---------------------------------------------------------------- data (the faults themselves: test_data_checks.py)


def _npz(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    np.savez(tmp_path / "data.npz", x=x, y=y)
    return {"dataset": "npz", "root": str(tmp_path / "data.npz")}


DATA_CASES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "npz negative labels": lambda tmp: _npz(tmp, np.zeros((30, 4, 4)), np.arange(30) % 3 - 1),
    "npz string arrays": lambda tmp: _npz(tmp, np.array(["a"] * 30), np.arange(30) % 3),
    "npz wrong rank": lambda tmp: _npz(tmp, np.zeros((30, 16)), np.arange(30) % 3),
    "npz empty": lambda tmp: _npz(tmp, np.zeros((0, 4, 4)), np.zeros(0, int)),
    "npz one-hot labels": lambda tmp: _npz(tmp, np.zeros((30, 4, 4)), np.eye(3)[np.arange(30) % 3]),
    "a dataset factory with the wrong signature": lambda tmp: {"dataset": "tests.test_data_checks:factory_without_root"},
}


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_bad_data_exits_2_before_training(case: str, tmp_path: Path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run", data=DATA_CASES[case](tmp_path)))
    code, output = edgekd_cli(["compress", recipe, "--quiet"], capsys)
    assert_bad_input(code, output, "dataset")
    assert not list((tmp_path / "run").glob("teacher-*.pt"))  # refused before the teacher trained


# ---------------------------------------------------------------- recipes and models


RECIPE_CASES: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    "cnn(width=0)": ({"teacher": {"model": "cnn(width=0)", "train": {"epochs": 1}}}, [], ["model spec 'cnn(width=0)'", "does not run"]),
    "a seed beyond 2**32": ({"seed": 10**20}, [], ["seed:", "must be < 4294967296"]),
    "--set into a string": ({}, ["--set", "name.first=1"], ["--set 'name.first=1'", "name is a str"]),
    "**{…} in a model spec": ({"student": "cnn(**{'width': 64})"}, [], ["**{…} unpacking is not read"]),
}


@pytest.mark.parametrize("case", RECIPE_CASES, ids=list(RECIPE_CASES))
def test_a_bad_recipe_value_exits_2_naming_it(case: str, tmp_path: Path, capsys):
    change, extra, named = RECIPE_CASES[case]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run", **change))
    code, output = edgekd_cli(["compress", recipe, "--quiet", *extra], capsys)
    assert_bad_input(code, output, *named)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_device_mps_without_mps_is_bad_input(tmp_path: Path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run", device="mps"))
    code, output = edgekd_cli(["compress", recipe, "--quiet"], capsys)
    assert_bad_input(code, output, "device: 'mps'", "not available")


def test_duplicate_recipe_keys_are_refused(tmp_path: Path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path / "run")) + "seed: 3\n")
    code, output = edgekd_cli(["validate", str(recipe)], capsys)
    assert_bad_input(code, output, str(recipe), "duplicate key 'seed'")


def test_a_pickled_teacher_checkpoint_is_refused_in_one_paragraph(tmp_path: Path, capsys):
    from edgekd.models import build_model

    torch.save(build_model("cnn(width=4)", in_channels=1, num_classes=10), tmp_path / "whole.pt")  # a whole pickled model
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "run", teacher={"model": "cnn(width=4)", "checkpoint": str(tmp_path / "whole.pt")}))
    code, output = edgekd_cli(["compress", recipe, "--quiet"], capsys)
    assert_bad_input(code, output, "whole.pt", "holds pickled Python objects", "torch.save(model.state_dict(), path)")
    assert "weights_only=False" not in output and "WeightsUnpickler" not in output


# ---------------------------------------------------------------- reports, gates, outputs

REPORT_DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no teacher": (lambda r: r.pop("teacher"), "teacher: field required"),
    "no student size_bytes": (lambda r: r["student"].pop("size_bytes"), "student.size_bytes: field required"),
    "no speedup ci": (lambda r: r["latency"]["speedup"]["64"].pop("ci"), "latency.speedup.64.ci: field required"),
    "a batch key that is not a number": (lambda r: r["latency"]["speedup"].update({"all": {"ratio": 1.0, "ci": [1, 1]}}),
                                         "latency.speedup.all.[key]"),
    "a timing without its median": (lambda r: r["latency"]["models"]["teacher"]["1"].pop("median_ms"), "median_ms: field required"),
    "an accuracy that is null": (lambda r: r["student"]["onnx"]["int8"].update({"size_bytes": None}), "student.onnx.int8.size_bytes"),
}  # fmt: skip


@pytest.mark.parametrize("damage", REPORT_DAMAGE, ids=list(REPORT_DAMAGE))
def test_a_report_missing_what_the_gates_read_is_bad_input(damage: str, tmp_path: Path, capsys):
    change, named = REPORT_DAMAGE[damage]
    report = sample_report()
    change(report)
    (tmp_path / "report.json").write_text(json.dumps(report))
    for command in (["gate", str(tmp_path / "report.json"), "--min-accuracy", "0.5", "--min-speedup", "1"], ["report", str(tmp_path)]):
        code, output = edgekd_cli(command, capsys)
        assert_bad_input(code, output, "report.json", "is not a complete edgekd report", named)


def test_gate_outputs_that_cannot_be_written_are_refused_before_the_gates_run(tmp_path: Path, capsys, monkeypatch):
    (tmp_path / "report.json").write_text(json.dumps(sample_report()))
    gate = ["gate", str(tmp_path / "report.json"), "--min-accuracy", "0.5"]
    code, output = edgekd_cli([*gate, "--junit", str(tmp_path)], capsys)
    assert_bad_input(code, output, "--junit", "is a folder")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "missing" / "summary.md"))
    code, output = edgekd_cli(gate, capsys)
    assert_bad_input(code, output, "GITHUB_STEP_SUMMARY", "missing", "does not exist")
    assert "gates passed" not in output  # refused before any verdict was printed


def test_bench_json_naming_a_folder_is_refused_before_the_benchmark(tmp_path: Path, capsys):
    # The model does not exist either: the answer says which check ran first.
    code, output = edgekd_cli(["bench", str(tmp_path / "missing.onnx"), "--json", str(tmp_path)], capsys)
    assert_bad_input(code, output, "--json", "is a folder")
