"""Distilling step by step through `edgekd compress`: rationales from the data and from a teacher,
the label task through distill → prune → qat → export (label exact match in ONNX Runtime), α = 1 as
label-only training, and the bad input the recipe refuses before anything is written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

import edgekd
from edgekd.data import load_data
from edgekd.data.rationales import RationaleExample, normalize_label
from edgekd.data.tokenizer import TokenizerTraining, load_tokenizer, train_tokenizer
from edgekd.distill.prompting import TeacherPrompting
from edgekd.distill.stepbystep_train import text_tokens, train_prompted_teacher
from edgekd.errors import InputError
from edgekd.facts import DataFacts
from edgekd.models import build_model
from edgekd.recipe import load_recipe

from tests.stepbystep_support import STUDENT, step_by_step_recipe, sum_rows
from tests.test_exit_codes import assert_bad_input, edgekd_cli, write_recipe


def test_rationales_from_the_data_train_a_student_that_is_pruned_quantized_and_exported(tmp_path):
    stages = [
        {"distill": {"epochs": 20}},
        {"prune": {"target_macs": 0.8, "steps": 1}, "recover": {"epochs": 4}},
        {"qat": {"profile": "ort-x86", "calibration_batches": 2}, "recover": {"epochs": 2, "lr": 0.002}},
        {"export": {"exact_match_rows": 64}},
    ]
    console = Console(file=io.StringIO(), width=240)
    report = edgekd.compress(step_by_step_recipe(tmp_path, stages), console=console).to_json()
    assert report["rationales"] == {"source": "data", "examples": report["dataset"]["sizes"]["train"]}
    distill, prune, qat = report["steps"]
    assert distill["label_exact_match"] > 0.6  # from 0: sums of two digits, learned with their rationales
    assert prune["macs"] < distill["macs"] and qat["int8"]
    assert "label exact match" in console.file.getvalue()
    int8 = report["student"]["onnx"]["int8"]
    # The int8 file answers `predict:` prompts in ONNX Runtime; its labels score as the quantized student's do.
    assert int8["exact_match"] == pytest.approx(qat["label_exact_match"], abs=0.1)
    assert int8["parity"]["agreement"] >= int8["parity"]["min_agreement"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## Distilling step by step" in markdown and f"| {int8['exact_match']:.2%} |" in markdown


@pytest.mark.parametrize("position", ["separate", "after_label", "before_label"])
def test_a_seq2seq_student_learns_each_rationale_position_and_its_file_answers_the_label(position, tmp_path):
    seq2seq = "t5_s(dim=32, depth=1, heads=4, mlp_ratio=2)"
    recipe = step_by_step_recipe(
        tmp_path, stages=[{"distill": {"epochs": 15}}, {"export": {"exact_match_rows": 1000}}],
        term={"rationale_position": position} if position != "separate" else {}, student=seq2seq,
    )  # fmt: skip
    recipe["teacher"]["model"] = seq2seq
    recipe["data"]["options"]["layout"] = "seq2seq"
    report = edgekd.compress(recipe, quiet=True).to_json()
    (step,) = report["steps"]
    assert step["label_exact_match"] > 0.3  # the label read back from `<label> Explanation: …` or `… Answer: <label>`
    # Every test row, answered by the fp32 file in ONNX Runtime: the same labels as in PyTorch.
    assert report["student"]["onnx"]["fp32"]["exact_match"] == pytest.approx(step["label_exact_match"], abs=0.02)


def test_alpha_one_through_the_runner_is_label_only_training(tmp_path):
    rows = sum_rows(tmp_path / "sums.jsonl")
    tokenizer = train_tokenizer(
        [line for row in map(json.loads, rows.read_text().splitlines()) for line in row.values()] + ["predict: ", "explain: "],
        TokenizerTraining(kind="wordpiece", vocab_size=80),
    )
    tokenizer.save(tmp_path / "tokenizer")
    options = {"tokenizer": str(tmp_path / "tokenizer"), "max_length": 20}
    step_by_step = step_by_step_recipe(tmp_path, term={"alpha": 1.0}, stages=[{"distill": {"epochs": 3}}])
    step_by_step["data"]["options"].update(options)
    # Label-only: the same rows with the prefix written into the input, trained with plain cross-entropy.
    prefixed = tmp_path / "prefixed.jsonl"
    prefixed.write_text("".join(json.dumps({"input": "predict: " + r["input"], "label": r["label"]}) + "\n"
                                for r in map(json.loads, rows.read_text().splitlines())))  # fmt: skip
    label_only = {**step_by_step, "workdir": str(tmp_path / "ce"), "distill": {**step_by_step["distill"], "method": "ce"}}
    label_only = {key: value for key, value in label_only.items() if key != "rationales"}
    label_only["data"] = {**step_by_step["data"], "root": str(prefixed)}
    for recipe in (step_by_step, label_only):
        edgekd.compress(recipe, quiet=True)
    weights = [torch.load(Path(r["workdir"]) / "checkpoints" / "stage00-step001.pt")["student"] for r in (step_by_step, label_only)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], msg=name)


PROMPTING = TeacherPrompting(max_new_tokens=12)
ONE_DIGIT = r"(?s)^\s*(?P<rationale>.*?)\s*The answer is\s*(?P<label>\d)\s*\."


def prompted_teacher(tmp_path: Path, rows: Path) -> tuple[str, Path]:
    """A decoder teacher trained in seconds to answer `Q: 3 plus 4 A:` with ` 3 and 4 make 7 The answer is 7.`
    (imperfectly), on the tokenizer the run will read; returns its state_dict file and the tokenizer folder."""
    records = [json.loads(line) for line in rows.read_text().splitlines()]
    seed = [RationaleExample(r["input"], r["label"], f"{r['input'].replace('plus', 'and')} make {r['label']}") for r in records[:80]]
    corpus = [PROMPTING.prompt(e.input) + PROMPTING.answer.format(rationale=e.rationale, label=e.label) for e in seed]
    tokenizer = train_tokenizer(corpus + ["predict: ", "explain: "], TokenizerTraining(kind="wordpiece", vocab_size=90))
    tokenizer.save(tmp_path / "tokenizer")
    tokenizer = load_tokenizer(tmp_path / "tokenizer")
    facts = DataFacts(inputs="tokens", task="causal-lm", vocab_size=tokenizer.vocab_size, max_length=32, pad_id=tokenizer.pad_id,
                      eos_id=tokenizer.eos_id)  # fmt: skip
    torch.manual_seed(0)
    teacher = build_model(STUDENT, facts)
    train_prompted_teacher(teacher, seed, PROMPTING, text_tokens(tokenizer), "decoder", epochs=6, batch_size=16, lr=0.01)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    return str(tmp_path / "teacher.pt"), tmp_path / "tokenizer"


def cached_outputs(workdir: Path) -> list[str]:
    (folder,) = (workdir / "rationales").iterdir()
    items = {}
    for shard in sorted(folder.glob("items-*.jsonl")):
        items.update((row["index"], row["output"]) for row in map(json.loads, shard.read_text().splitlines()))
    return [items[i] for i in sorted(items)]


def test_a_teacher_writes_the_rationales_and_the_report_counts_what_failed(tmp_path):
    rows = sum_rows(tmp_path / "sums.jsonl", rationale=False)
    checkpoint, tokenizer = prompted_teacher(tmp_path, rows)
    recipe = step_by_step_recipe(tmp_path, stages=[{"distill": {"epochs": 2}}])
    recipe["data"].update(root=str(rows))
    recipe["data"]["options"].update(tokenizer=str(tokenizer), max_length=32)
    recipe["teacher"] = {"model": STUDENT, "checkpoint": checkpoint}
    # A pattern that reads one-digit answers only: the teacher's two-digit ones do not parse.
    recipe["rationales"] = {"source": "teacher", "generation": {"max_new_tokens": 12, "batch_size": 64}, "parse": ONE_DIGIT}
    kept = edgekd.compress(recipe, quiet=True).to_json()
    summary = kept["rationales"]
    # Every training input once, in the order of the training split (which the data gives again here).
    data = recipe["data"]
    train = load_data("text", seed=0, root=data["root"], val_split=data["val_split"] if "val_split" in data else 0.1,
                      test_split=0.2, options=data["options"]).rows["train"]  # fmt: skip
    assert summary["source"] == "teacher" and summary["generated"] == len(train) and summary["reused"] == 0
    # The report's counts are what the cached outputs give when parsed again here.
    parsing = TeacherPrompting(parse=ONE_DIGIT)
    parsed = [parsing.parse_output(output) for output in cached_outputs(Path(recipe["workdir"]))]
    disagreeing = sum(p is not None and normalize_label(p.label) != normalize_label(row["label"]) for p, row in zip(parsed, train))
    assert (summary["unparsed"], summary["disagreeing"]) == (sum(p is None for p in parsed), disagreeing)
    assert summary["unparsed"] > 0 and disagreeing > 0  # a teacher trained for seconds errs; sums reach 18
    assert summary["kept"] == kept["dataset"]["sizes"]["train"] == len(train) - summary["unparsed"]

    recipe["rationales"]["disagreeing"] = "drop"  # neither the parse nor keep/drop is in the cache key: nothing is generated
    report = edgekd.compress(recipe, quiet=True).to_json()
    dropped = report["rationales"]
    assert dropped["generated"] == 0 and dropped["reused"] == len(train)
    assert dropped["dropped"] == dropped["disagreeing"] == disagreeing
    assert dropped["kept"] == report["dataset"]["sizes"]["train"] == len(train) - summary["unparsed"] - disagreeing


BAD_INPUT = {
    "a template without the input placeholder": (
        lambda r: r.update(rationales={"source": "teacher", "prompt": {"template": "Q: A:"}}), ["prompt.template", "{input}"]),
    "a parse pattern without a label group": (
        lambda r: r.update(rationales={"source": "teacher", "parse": "(?P<rationale>.*)"}), ["parse", "label"]),
    "an unknown rationale_position": (
        lambda r: r["distill"]["method"][0].update(rationale_position="middle"), ["rationale_position", "after_label"]),
    "an unknown label_source": (lambda r: r["distill"]["method"][0].update(label_source="oracle"), ["label_source", "ground_truth"]),
    "step-by-step on classify data": (
        lambda r: r["data"]["options"].update(task="classify", label="label"), ["data.options.task", "generate"]),
    "step-by-step on images": (lambda r: r.update(data={"dataset": "digits"}), ["step-by-step", "images"]),
    "a teacher that is trained, to write rationales": (lambda r: r.update(rationales={"source": "teacher"}), ["rationales.source", "teacher.checkpoint"]),
    "sequence-level targets from the teacher beside step-by-step": (
        lambda r: r["distill"].update(targets="teacher"), ["distill.targets", "label_source: teacher"]),
    "rationales without the step-by-step method": (lambda r: r["distill"].update(method="kd"), ["rationales", "step-by-step"]),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
@pytest.mark.parametrize("command", ["validate", "compress"])
def test_bad_step_by_step_input_is_exit_2_before_anything_is_written(case, command, tmp_path, capsys):
    recipe = step_by_step_recipe(tmp_path)
    change, named = BAD_INPUT[case]
    change(recipe)
    code, output = edgekd_cli([command, write_recipe(tmp_path / "recipe.yaml", recipe)], capsys)
    assert_bad_input(code, output, *named)
    assert not Path(recipe["workdir"]).exists()


@pytest.mark.parametrize("command", ["validate", "compress"])
def test_an_empty_rationale_in_the_data_is_named_by_file_line_and_field(command, tmp_path, capsys):
    recipe = step_by_step_recipe(tmp_path)
    rows = Path(recipe["data"]["root"])
    lines = rows.read_text().splitlines()
    lines[6] = json.dumps({**json.loads(lines[6]), "rationale": "  "})
    rows.write_text("\n".join(lines) + "\n")
    code, output = edgekd_cli([command, write_recipe(tmp_path / "recipe.yaml", recipe)], capsys)
    assert_bad_input(code, output, "rationales.field", f"{rows} line 7", "'rationale'")
    assert not Path(recipe["workdir"]).exists()


def test_the_readme_example_is_a_valid_recipe_block(tmp_path):
    import re

    import yaml

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Distilling step by step\n") :]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    recipe = step_by_step_recipe(tmp_path, distill={**example["distill"], "epochs": 1}, rationales=example["rationales"])
    validated = load_recipe(recipe)
    assert validated.rationales.source == "data" and [t.method for t in validated.distill.terms] == ["step-by-step", "kd"]
    assert validated.rationales.prompting().parse == TeacherPrompting().parse  # the commented pattern is the default
    assert yaml.safe_load(re.search(r"# parse: (.*)\n", section).group(1)) == TeacherPrompting().parse


def test_kd_beside_step_by_step_refuses_a_teacher_with_another_vocabulary(tmp_path):
    recipe = step_by_step_recipe(tmp_path, stages=[{"distill": {"epochs": 1}}])
    recipe["distill"]["method"].append({"method": "kd"})
    recipe["teacher"]["model"] = STUDENT.replace(")", ", vocab_size=200)")  # writes 200 tokens; the data's tokenizer has 80
    with pytest.raises(InputError, match=r"distill.method: token-level kd beside step-by-step needs teacher and student to share a vocabulary"):
        edgekd.compress(recipe, quiet=True)
    recipe["distill"]["method"].pop()  # step-by-step alone reads no teacher logits
    assert edgekd.compress(recipe, quiet=True).steps[0].label_exact_match is not None


def test_the_shipped_recipe_runs_small_on_data_the_wordproblems_command_writes(tmp_path, capsys):
    import yaml

    from edgekd.data.wordproblems import main as write_wordproblems

    write_wordproblems([str(tmp_path / "data"), "--train", "60", "--test", "12", "--unseen", "4", "--max-value", "20"])
    assert "train.jsonl" in capsys.readouterr().out
    recipe = yaml.safe_load((Path(__file__).parent.parent / "recipes" / "step-by-step.yaml").read_text())
    tiny = "gpt_s(dim=32, depth=1, heads=4, mlp_ratio=2)"
    recipe |= {"workdir": str(tmp_path / "run"), "teacher": {"model": tiny, "train": {"epochs": 1}}, "student": tiny}
    recipe["data"] |= {"root": str(tmp_path / "data"), "limit": None}
    recipe["data"]["options"]["tokenizer"]["vocab_size"] = 300
    recipe["distill"]["epochs"] = 1
    for stage in recipe["stages"]:
        for body in ([stage["distill"]] if "distill" in stage else []) + ([stage["recover"]] if "recover" in stage else []):
            body["epochs"] = 1
        if "bench" in stage:
            stage["bench"] = {"rounds": 2, "batch_sizes": [1], "warmup_s": 0.0, "min_iterations": 2, "min_duration_s": 0.01,
                              "memory": False, "mode": "paired", "new_tokens": 4}  # fmt: skip
    report = edgekd.compress(recipe, quiet=True).to_json()
    assert report["rationales"] == {"source": "data", "examples": report["dataset"]["sizes"]["train"]}
    assert report["steps"][-1]["int8"] and report["student"]["macs"] < report["teacher"]["macs"]
    assert 0 <= report["student"]["onnx"]["int8"]["exact_match"] <= 1 and report["generation"]["cases"]
