"""Text classification and models with non-tensor outputs through `edgekd compress`: prune → qat →
export (parity) → bench, and what the runner refuses before anything trains."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch

import edgekd
from edgekd.data import TextData
from edgekd.errors import InputError
from edgekd.recipe import load_recipe

from tests.conftest import text_pipeline_recipe

WORDS = {
    "io": "open read write file close buffer stream seek",
    "net": "socket connect send recv host port address bind",
    "math": "sqrt floor ceil sin cos log pow exp",
}


def write_jsonl(path: Path, rows: int = 150, seed: int = 0) -> Path:
    """Rows whose class shows in their words, with shared noise words: learnable in a few epochs."""
    rng = random.Random(seed)
    noise = "def return self value args if else for in".split()
    with path.open("w") as handle:
        for i in range(rows):
            label = list(WORDS)[i % len(WORDS)]
            words = rng.sample(WORDS[label].split(), 3) + rng.sample(noise, 4)
            rng.shuffle(words)
            handle.write(json.dumps({"code": " ".join(words), "package": label}) + "\n")
    return path


def text_recipe(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return text_pipeline_recipe(
        tmp_path / "run", write_jsonl(tmp_path / "rows.jsonl"), {"task": "classify", "input": "code", "label": "package"},
        **{"teacher": {"model": "bert_s(dim=32, depth=2, heads=4, mlp_ratio=2)", "train": {"epochs": 4, "lr": 0.003, "optimizer": {"name": "adamw"}}},
           **extra},
    )


def test_a_text_classifier_is_pruned_quantized_exported_and_benchmarked(tmp_path):
    report = edgekd.compress(text_recipe(tmp_path), quiet=True).to_json()
    assert report["dataset"]["task"] == "classify" and report["dataset"]["labels"] == sorted(WORDS)
    assert report["teacher"]["accuracy"] > 0.6  # the words give the class away
    prune, qat = report["steps"][0], report["steps"][1]
    assert prune["macs"] < report["teacher"]["macs"] and prune["params"] < report["teacher"]["params"]
    run = tmp_path / "run"
    checkpoint = json.loads((run / "progress.json").read_text())["checkpoint"]
    student = torch.load(run / "checkpoints" / checkpoint, weights_only=True)["student"]
    heads_width = [v.shape[0] for k, v in student.items() if re.search(r"attn\.q\.(\w+\.)?weight$", k)]
    mlp_width = [v.shape[0] for k, v in student.items() if re.search(r"mlp\.fc1\.(\w+\.)?weight$", k)]
    assert len(heads_width) == len(mlp_width) == 2
    assert min(heads_width) < 32 and all(w % 8 == 0 for w in heads_width)  # whole heads of 8 went
    assert min(mlp_width) < 64
    assert qat["int8"] and qat["quant_profile"] == "ort-x86"
    files = report["student"]["onnx"]
    assert set(files) == {"fp32", "int8"}
    for entry in files.values():
        assert entry["parity"]["agreement"] >= entry["parity"]["min_agreement"]
        assert 0 <= entry["accuracy"] <= 1
    assert len(report["latency"]["models"]) == 3  # the teacher and both student files, timed at batch 1


def test_a_hugging_face_text_classifier_runs_and_its_pruned_config_stays_consistent(tmp_path):
    transformers = pytest.importorskip("transformers")
    bert = ("hf-config:bert(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, "
            "hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)")  # fmt: skip
    recipe = text_recipe(tmp_path, teacher={"model": bert, "train": {"epochs": 3, "lr": 0.003, "optimizer": {"name": "adamw"}}},
                         stages=[{"prune": {"target_macs": 0.6, "steps": 1}}, {"export": {}}])
    report = edgekd.compress(recipe, quiet=True).to_json()
    assert report["steps"][0]["macs"] < report["teacher"]["macs"]
    assert report["student"]["onnx"]["fp32"]["parity"]["agreement"] >= 0.999
    # The pruned student reloads with from_pretrained and computes what the exported student computes.
    run = tmp_path / "run"
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(run / report["student"]["pretrained"], local_files_only=True).eval()
    config = reloaded.config
    assert config.num_attention_heads * config.intermediate_size < 4 * 64
    ids = torch.randint(3, 80, (4, 10))
    with torch.no_grad():
        expected = reloaded(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.numpy()
    sess = onnxruntime.InferenceSession(str(run / "student.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_model_output_image_classifier_runs_through_prune_qat_and_export(tmp_path, make_recipe):
    transformers = pytest.importorskip("transformers")
    vit = ("hf-config:vit(image_size=8, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, "
           "num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)")  # fmt: skip
    recipe = make_recipe(
        teacher={"model": vit, "train": {"epochs": 2, "lr": 0.003, "optimizer": {"name": "adamw"}}}, student="teacher",
        distill={"epochs": 1, "lr": 0.001, "optimizer": {"name": "adamw"}},
        stages=[{"prune": {"target_macs": 0.6, "steps": 1}}, {"qat": {"calibration_batches": 2}, "recover": {"epochs": 1}}, {"export": {"opset": 18}}],
    )
    report = edgekd.compress(recipe, quiet=True).to_json()
    assert report["steps"][0]["macs"] < report["teacher"]["macs"]
    assert set(report["student"]["onnx"]) == {"fp32", "int8"}
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "run" / report["student"]["pretrained"])
    assert reloaded.config.num_attention_heads * reloaded.config.intermediate_size < 4 * 64  # the float weights, pruned
    assert report["student"]["onnx"]["fp32"]["exporter"] == "dynamo"  # opset 18: the logits wrapper exports there too
    assert report["student"]["onnx"]["int8"]["parity"]["agreement"] >= report["student"]["onnx"]["int8"]["parity"]["min_agreement"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"distill.method": [{"method": "kd"}, {"method": "cross-modal"}]}, "distill.method"),
        ({"data.views": {"low": {"resize": 4}}}, "data.views"),
    ],
)
def test_what_the_runner_cannot_do_with_text_is_refused_before_training(tmp_path, change, field):
    recipe = text_recipe(tmp_path)
    for path, value in change.items():
        *parents, key = path.split(".")
        node = recipe
        for part in parents:
            node = node[part]
        node[key] = value
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        load_recipe(recipe_file)
    assert not (tmp_path / "run").exists()


def test_a_quantized_text_student_resumes_into_a_later_export(tmp_path):
    """Resume rebuilds the pruned widths and the module-swap quantizers before the saved weights load."""
    stages = text_recipe(tmp_path)["stages"]
    first = edgekd.compress(text_recipe(tmp_path, stages=stages[:2]), quiet=True).to_json()
    extended = edgekd.compress(text_recipe(tmp_path, stages=stages[:3]), resume=True, quiet=True).to_json()
    assert extended["steps"] == first["steps"]
    int8 = extended["student"]["onnx"]["int8"]
    assert int8["parity"]["agreement"] >= int8["parity"]["min_agreement"]
    assert abs(int8["accuracy"] - first["student"]["accuracy"]) <= 1 / 30  # one of the 30 test rows at most


def generation_rows(root: str | None = None) -> TextData:
    """A dataset factory giving seq2seq generation text, which no recipe field announces."""
    rows = [{"prompt": f"say {i}", "answer": str(i)} for i in range(40)]
    return TextData(train=rows, options={"task": "generate", "layout": "seq2seq", "input": "prompt", "target": "answer",
                                         "tokenizer": {"kind": "wordpiece", "vocab_size": 60}})  # fmt: skip


def test_a_factory_giving_generation_text_refuses_methods_not_defined_per_token_before_the_teacher_trains(tmp_path):
    recipe = text_recipe(tmp_path, data={"dataset": "tests.test_run_text:generation_rows"}, distill={"method": "dml", "epochs": 1})
    with pytest.raises(InputError, match="data.dataset: .* gives generation text; distill.method: 'dml' is not defined per token"):
        edgekd.compress(recipe, quiet=True)
    assert not list((tmp_path / "run").glob("teacher-*.pt"))
