"""The plan is checked as a whole before anything trains: each case below passed `edgekd validate`
once and failed only at run time, after the teacher and every earlier recovery had trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekd.cli import main
from edgekd.errors import RecipeError
from edgekd.recipe import load_recipe
from edgekd.records import GatesConfig
from edgekd.stage import stages
from tests.conftest import tiny_recipe

EXPORT = {"export": {}}
QAT = {"qat": {"calibration_batches": 2}, "recover": {"epochs": 0}}

REFUSED = {
    "bench without an export before it": (
        {"stages": [{"bench": {}}]},
        "stages[0] bench needs `onnx` from an earlier stage, and none provides it: put an export stage before it",
    ),
    "prune after qat": (
        {"stages": [QAT, {"prune": {"ratio": 0.3}}]},
        "stages[1] prune comes after stages[0] qat, which made the student `quantized`",
    ),
    "a bench batch size of 0": (
        {"stages": [EXPORT, {"bench": {"batch_sizes": [0]}}]},
        "stages[1].bench.batch_sizes[0]: must be ≥ 1 (got 0)",
    ),
    "an unknown bench backend": (
        {"stages": [EXPORT, {"bench": {"backends": ["onnxrt"]}}]},
        "stages[1].bench.backends[0]: unknown bench backend 'onnxrt'. Did you mean 'onnxruntime'? Known: onnxruntime, tensorrt, torch.",
    ),
    "a speed gate with nothing to measure it": (
        {"gates": {"min_speedup": 2}},
        "gates.min_speedup reads `latency`, which no stage of the recipe provides: add a bench stage (after an export stage)",
    ),
    "two qat stages with different profiles": (
        {"stages": [QAT, {"qat": {"profile": "tensorrt"}, "recover": {"epochs": 0}}]},
        "stages[1] qat: a recipe holds at most one quantization stage, and stages[0] qat is one",
    ),
    # Rules added with the plan:
    "a compressing stage after export": (
        {"stages": [EXPORT, {"distill": {"epochs": 1}}]},
        "stages[1] distill changes the student after stages[0] export",
    ),
    "a gate reading a batch the bench does not measure": (
        {"stages": [EXPORT, {"bench": {"batch_sizes": [1, 64]}}], "gates": {"max_latency_ms": 5, "latency_batch": 8}},
        "gates.latency_batch: stages[1] bench measures batch sizes 1, 64, not 8",
    ),
    "a bench backend that cannot time ONNX files": (
        {"stages": [EXPORT, {"bench": {"backends": ["torch"]}}]},
        "bench backend 'torch' times Python models (its Python API), not the exported ONNX files",
    ),
    "paired bench with spinning on": (
        {"stages": [EXPORT, {"bench": {"mode": "paired", "spinning": "on"}}]},
        "stages[1].bench: spinning: 'on' in paired mode lets the teacher's idle threads busy-wait",
    ),
    "paired bench with two spinning settings": (
        {"stages": [EXPORT, {"bench": {"mode": "paired", "spinning": "both"}}]},
        "stages[1].bench: spinning: paired mode times one setting",
    ),
    "an unknown bench mode": (
        {"stages": [EXPORT, {"bench": {"mode": "deploy"}}]},
        "stages[1].bench.mode: Input should be 'deployment' or 'paired' (got 'deploy')",
    ),
    "a stem timing batch size of 0": (
        {"stages": [QAT, {"export": {"stem_timing": {"batch_sizes": [0]}}}]},
        "stages[1].export.stem_timing.batch_sizes[0]: must be ≥ 1 (got 0)",
    ),
    "an unknown augmentation": (
        {"data": {"dataset": "digits", "augment": ["horizontal_flip", "horizntal_flip"]}},
        "data.augment[1]: unknown augmentation 'horizntal_flip'. Did you mean 'horizontal_flip'?",
    ),
    "an augmentation listed twice": (
        {"data": {"dataset": "digits", "augment": ["horizontal_flip", {"horizontal_flip": {"p": 0.2}}]}},
        "data.augment: horizontal_flip listed more than once",
    ),
    "an unknown model": ({"student": "resnt_s(width=4)"}, "student.model: unknown model 'resnt_s'. Did you mean 'resnet_s'"),
    "an unknown dataset": ({"data": {"dataset": "digit"}}, "data.dataset: unknown dataset 'digit'. Did you mean 'digits'?"),
}


def write_recipe(tmp_path: Path, change: dict) -> tuple[Path, Path]:
    workdir = tmp_path / "run"
    recipe = tiny_recipe(workdir, **change)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, workdir


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, " ".join((captured.out + captured.err).split())


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize("command", ["validate", "compress"])
def test_a_plan_that_cannot_run_exits_2_before_anything_trains(case: str, command: str, tmp_path: Path, capsys):
    change, message = REFUSED[case]
    path, workdir = write_recipe(tmp_path, change)
    code, output = run_cli([command, str(path)], capsys)
    assert code == 2
    assert message in output
    assert "Traceback" not in output
    assert not workdir.exists()  # no teacher trained, not even a folder made


def test_every_problem_of_a_plan_is_reported_at_once():
    recipe = tiny_recipe(Path("unused"), stages=[{"bench": {"batch_sizes": [0]}}, QAT, {"prune": {"ratio": 0.3}}], gates={"min_speedup": 2})
    recipe["distill"]["alpha"] = 2
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe)
    problems = error.value.problems
    assert any(p.startswith("distill.alpha") for p in problems)
    assert any(p.startswith("stages[0].bench.batch_sizes[0]") for p in problems)
    assert any(p.startswith("stages[0] bench needs `onnx`") for p in problems)  # its kind's facts count though its settings failed
    assert any(p.startswith("stages[2] prune comes after stages[1] qat") for p in problems)
    assert len(problems) == len(set(problems))


def test_a_plan_that_runs_is_a_field_of_the_recipe():
    recipe = load_recipe(tiny_recipe(Path("unused"), stages=[{"prune": {"ratio": 0.3}}, QAT, EXPORT, {"bench": {}}], gates={"min_speedup": 1}))
    assert [p.key for p in recipe.plan] == ["prune", "qat", "export", "bench"]
    assert recipe.plan[0].stage.recover == recipe.plan[0].recover  # each stage holds its own recover block
    assert "plan" not in recipe.model_dump()  # the recipe's data is `stages`; the plan is built from it
    with pytest.raises(RecipeError, match="plan: unknown field"):
        load_recipe({**tiny_recipe(Path("unused")), "plan": []})


@pytest.mark.parametrize("kind", stages.names())
def test_every_fact_a_stage_kind_requires_or_refuses_is_provided_by_some_stage_kind(kind: str):
    provided = {fact for _, cls in stages.items() for fact in cls.provides}
    cls = stages.get(kind)
    assert set(cls.requires) <= provided and set(cls.refuses) <= provided


@pytest.mark.parametrize("gate", GatesConfig.gate_names())
def test_every_gate_reads_something_a_stage_kind_provides(gate: str):
    fact, batch_field = GatesConfig.requirement(gate)
    assert fact is None or any(fact in cls.provides for _, cls in stages.items())
    assert batch_field is None or batch_field in GatesConfig.model_fields
