"""Recipes and run folders are code; `--no-user-code` (or EDGEKD_NO_USER_CODE=1) refuses every pkg.module: spec
before anything runs, and `edgekd export RUN` checks the recipe hash before it builds anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from edgekd.models import build_model
from edgekd.registry import NO_USER_CODE_ENV
from tests.conftest import copy_run, tiny_recipe
from tests.test_exit_codes import assert_bad_input, edgekd_cli

CANARY_ENV = "EDGEKD_TEST_CANARY"


def canary_model(in_channels: int = 1, num_classes: int = 10):
    """User code that leaves a trace when it runs (a recipe's 'tests.test_trust:canary_model')."""
    Path(os.environ[CANARY_ENV]).write_text("user code ran")
    return build_model("cnn(width=4)", in_channels=in_channels, num_classes=num_classes)


@pytest.fixture
def canary(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "canary"
    monkeypatch.setenv(CANARY_ENV, str(path))
    monkeypatch.setenv(NO_USER_CODE_ENV, "")  # unset at teardown, even after --no-user-code set it in this process
    return path


def user_code_recipe(tmp_path: Path) -> str:
    recipe = tiny_recipe(tmp_path / "run", teacher={"model": "tests.test_trust:canary_model", "train": {"epochs": 1}},
                         data={"dataset": "digits", "views": {"mine": {"function": "tests.test_trust:canary_model"}}})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return str(tmp_path / "r.yaml")


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_no_user_code_refuses_every_user_spec_before_anything_runs(how: str, canary: Path, tmp_path: Path, capsys, monkeypatch):
    recipe = user_code_recipe(tmp_path)
    flag = ["--no-user-code"] if how == "flag" else []
    if how == "environment":
        monkeypatch.setenv(NO_USER_CODE_ENV, "1")
    for command in (["validate", recipe], ["compress", recipe, "--quiet"]):
        code, output = edgekd_cli([*flag, *command], capsys)
        assert_bad_input(code, output, "teacher.model: 'tests.test_trust:canary_model' names user code",
                         "data.views.mine.function", "--no-user-code")
    assert not canary.exists() and not (tmp_path / "run").exists()


def test_without_the_flag_user_code_is_allowed(canary: Path, tmp_path: Path, capsys):
    code, output = edgekd_cli(["validate", user_code_recipe(tmp_path)], capsys)
    assert code == 0, output


def test_export_of_a_run_folder_with_an_edited_recipe_builds_nothing(finished_run: Path, canary: Path, tmp_path: Path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    recipe = json.loads((run / "recipe.json").read_text())
    recipe["teacher"]["model"] = "tests.test_trust:canary_model"  # e.g. a downloaded run folder
    (run / "recipe.json").write_text(json.dumps(recipe))
    code, output = edgekd_cli(["export", str(run)], capsys)
    assert_bad_input(code, output, "recipe.json", "does not match the run", "Nothing was built")
    assert not canary.exists()


def test_the_trust_model_is_in_edgekd_help(capsys):
    code, output = edgekd_cli(["--help"], capsys)
    assert code == 0
    for text in ("Trust:", "are code, like a Makefile", "--no-user-code", "EDGEKD_NO_USER_CODE=1", "loading them never runs code"):
        assert text in output
