"""Data-parallel training with real torchrun (gloo, two processes on this CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import edgekd

TWO_STEPS = [{"distill": {"epochs": 5}}, {"distill": {"epochs": 3}}]


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edgekd", *arguments], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path, make_recipe):
    recipe = make_recipe(stages=TWO_STEPS, workdir=str(tmp_path / "ddp"), student="cnn(width=8)")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    single = edgekd.compress({**recipe, "workdir": str(tmp_path / "single")}, quiet=True).to_json()

    result = run_cli("compress", str(path), "--nproc", "2", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert report["world_size"] == 2 and report["complete"]
    assert len(report["steps"]) == len(single["steps"]) == 2
    assert report["teacher"]["accuracy"] == pytest.approx(single["teacher"]["accuracy"], abs=0.05)
    assert report["student"]["accuracy"] == pytest.approx(single["student"]["accuracy"], abs=0.03)
    assert not list((tmp_path / "ddp").glob(".*.tmp"))  # one writer: no half-written files left

    # Resume under torchrun: everything is finished, so it restores and rewrites the same report.
    progress = json.loads((tmp_path / "ddp" / "progress.json").read_text())
    assert progress["done"] == [[0, 1], [1, 1]]
    again = run_cli("compress", str(path), "--nproc", "2", "--resume", "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert [s["accuracy"] for s in resumed["steps"]] == [s["accuracy"] for s in report["steps"]]


@pytest.mark.slow
def test_a_failing_rank_brings_the_job_down_with_a_message(tmp_path, make_recipe):
    recipe = make_recipe(stages=[{"distill": {"epochs": 1, "lr": 1e6, "optimizer": {"momentum": 0}}}], workdir=str(tmp_path / "ddp"))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli("compress", str(path), "--nproc", "2", "--quiet")
    assert result.returncode != 0
    assert "loss became" in result.stdout + result.stderr
