"""Sequence-level KD (`distill.targets: teacher`): the teacher's greedy answers, generated once and
cached, become the training split's targets for recovery; validation and test keep the ground truth;
recipes where there is nothing to replace are refused before anything trains."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from edgekd.data.text import causal_prompts
from edgekd.distill.sequence import greedy_generate_fn
from edgekd.distill.stepbystep import Tokens
from edgekd.errors import InputError
from edgekd.recipe import Recipe
from edgekd.run import Run

from tests.test_exit_codes import assert_bad_input, edgekd_cli
from tests.test_run_generate import generate_recipe
from tests.test_run_topk import LAYOUTS


def seqkd_recipe(tmp_path: Path, layout: str) -> dict[str, Any]:
    recipe = generate_recipe(tmp_path, model=LAYOUTS[layout], stages=[{"prune": {"target_macs": 0.6, "steps": 1}}, {"distill": {"epochs": 1}}])
    recipe["teacher"]["train"]["epochs"] = 4  # a half-trained teacher: some answers differ from the data's
    recipe["data"]["options"]["layout"] = layout
    recipe["distill"] |= {"targets": "teacher"}
    return recipe


def execute(recipe: dict[str, Any], resume: bool = False) -> tuple[dict[str, Any], str]:
    console = Console(file=io.StringIO(), width=300)
    report = Run(Recipe.model_validate(recipe), console=console).execute(resume=resume).to_json()
    return report, console.file.getvalue()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_student_trains_on_the_teachers_greedy_answers(tmp_path, layout):
    recipe = seqkd_recipe(tmp_path, layout)
    report, said = execute(recipe)
    targets = report["teacher_targets"]
    rows = report["dataset"]["sizes"]["train"]
    assert targets["replaced"] == rows and targets["generated"] == rows and targets["reused"] == 0  # once for both phases
    assert said.count("training targets are the teacher's greedy generations") == 1
    folder = tmp_path / "run" / targets["folder"]
    assert targets["bytes"] == sum(f.stat().st_size for f in folder.iterdir()) > 0
    assert len(report["steps"]) == 2 and report["steps"][1]["perplexity"] > 1
    assert "Sequence-level KD: " in (tmp_path / "run" / "report.md").read_text()

    job = Run(Recipe.model_validate(recipe), quiet=True)
    job.prepare()
    data, answers = job.data, job.teacher_answers()
    tokenizer = data.tokenizer
    seq2seq = layout == "seq2seq"
    tokens = Tokens(encode=lambda text: tokenizer.encode([text], special_tokens=False)[0], decode=tokenizer.decode,
                    pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id, decoder_start_id=data.facts.decoder_start_id)
    generate = greedy_generate_fn(job.teacher, tokens, "seq2seq" if seq2seq else "decoder", max_new_tokens=targets["max_new_tokens"])
    prompts = [row["prompt"] for row in data.rows["train"][:4]]
    x, y = answers.train.tensors[0][:4], answers.train.tensors[1][:4]
    if seq2seq:
        trained = [[t for t in row if t >= 0][:-1] for row in y.tolist()]  # the decoder's targets, less the end token
        assert torch.equal(x[:, : data.source_length], data.train.tensors[0][:4, : data.source_length])  # sources as they were
    else:
        prompt_ids, trained = causal_prompts(x, y, tokenizer.eos_id)
        assert prompt_ids == [tokenizer.encode([p], special_tokens=False)[0] for p in prompts]
    assert [tokenizer.decode(ids) for ids in trained] == generate(prompts)  # the student's targets are the teacher's answers
    assert torch.equal(answers.test.tensors[1], data.test.tensors[1]) and torch.equal(answers.val.tensors[1], data.val.tensors[1])
    assert sum(not torch.equal(a, b) for a, b in zip(answers.train.tensors[1], data.train.tensors[1])) == targets["differing"] > 0

    recipe["stages"].append({"distill": {"epochs": 1}})  # resumed: the generations are read, not made again
    resumed, said = execute(recipe, resume=True)
    assert resumed["teacher_targets"] | {"generated": rows, "reused": 0} == targets
    assert resumed["teacher_targets"]["reused"] == rows and len(resumed["steps"]) == 3


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"data": {"dataset": "digits"}}, "distill.targets: teacher replaces generation targets; dataset 'digits' has none"),
        ({"options": {"task": "classify", "label": "prompt"}}, "this text data classifies"),
        ({"options": {"target": None}}, "needs prompts to continue"),
        ({"stage_only": True, "options": {"target": None}}, "stages[1].distill.targets: teacher"),
    ],
)
def test_teacher_targets_without_answers_to_replace_exit_2_from_validate(tmp_path, capsys, change, named):
    recipe = seqkd_recipe(tmp_path, "causal")
    if "data" in change:
        recipe["data"], recipe["teacher"], recipe["student"] = change["data"], {"model": "cnn", "train": {"epochs": 1}}, "teacher"
        recipe["stages"] = [{"distill": {"epochs": 1}}]
    recipe["data"].setdefault("options", {}).update(change.get("options", {}))
    if change.get("options", {}).get("target", "") is None:
        del recipe["data"]["options"]["target"]
    if change.get("stage_only"):
        del recipe["distill"]["targets"]
        recipe["stages"] = [{"prune": {"target_macs": 0.6, "steps": 1}}, {"distill": {"epochs": 1, "targets": "teacher"}}]
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    code, output = edgekd_cli(["validate", str(path)], capsys)
    assert_bad_input(code, output, named)
    assert not (tmp_path / "run").exists()


def test_a_factory_giving_text_without_generation_targets_is_refused_before_the_teacher_trains(tmp_path):
    recipe = seqkd_recipe(tmp_path, "causal")
    recipe["data"] = {"dataset": "tests.test_text_data:user_text_factory", "batch_size": 32}
    recipe["teacher"]["model"] = "bert_s(dim=32, depth=2, heads=4, mlp_ratio=2)"
    recipe["stages"] = [{"distill": {"epochs": 1}}]
    with pytest.raises(InputError, match=r"distill\.targets: teacher replaces generation targets; this text data classifies"):
        Run(Recipe.model_validate(recipe), quiet=True).execute()
    assert not list((tmp_path / "run").glob("teacher-*.pt"))
