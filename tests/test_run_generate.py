"""Causal language models through `edgekd compress`: token-level KD recovery, prune → qat → export
(decoder graph, parity, exact match of greedy answers in ONNX Runtime) → bench, and what the recipe refuses."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import onnx
from onnx import helper
import onnxruntime
import pytest
import torch
from rich.console import Console

import edgekd
from edgekd.distill.losses import kd_loss, token_kd_loss
from edgekd.distill.sequence import DIVERGENCES, token_divergence
from edgekd.errors import InputError
from edgekd.recipe import load_recipe

from tests.conftest import text_pipeline_recipe

WORDS = "open read write file close socket send host port sqrt floor ceil".split()


def write_jsonl(path: Path, rows: int = 160, seed: int = 0) -> Path:
    """Prompts of three words whose answer is the same words reversed: learnable in a few epochs."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(rows):
            words = rng.sample(WORDS, 3)
            handle.write(json.dumps({"prompt": " ".join(words), "answer": " ".join(reversed(words))}) + "\n")
    return path


def generate_recipe(tmp_path: Path, model: str = "gpt_s(dim=32, depth=2, heads=4, mlp_ratio=2)", **extra: Any) -> dict[str, Any]:
    return text_pipeline_recipe(
        tmp_path / "run", write_jsonl(tmp_path / "rows.jsonl"), {"task": "generate", "input": "prompt", "target": "answer"},
        **{"teacher": {"model": model, "train": {"epochs": 12, "lr": 0.01, "optimizer": {"name": "adamw"}}}, **extra},
    )


def test_a_causal_lm_is_pruned_quantized_exported_and_benchmarked(tmp_path):
    console = Console(file=io.StringIO(), width=200)
    recipe = generate_recipe(tmp_path)
    recipe["data"]["eval_batch_size"] = 8  # exact match reads its 20 rows from three test batches
    next(stage for stage in recipe["stages"] if "export" in stage)["export"]["exact_match_rows"] = 20
    report = edgekd.compress(recipe, console=console).to_json()
    said = console.file.getvalue()
    assert "bytes/token; recovery reads it, not the teacher" in said and "token accuracy" in said
    assert report["teacher_cache"]["k"] == 32 and report["teacher_cache"]["bytes_per_token"] > 0  # auto: the top 32 per token
    assert report["dataset"]["task"] == "causal-lm"
    teacher = report["teacher"]
    assert teacher["accuracy"] > 0.5 and teacher["perplexity"] < 8  # token accuracy; the answer is the prompt reversed
    prune, qat = report["steps"]
    assert prune["macs"] < teacher["macs"] and prune["params"] < teacher["params"]
    assert qat["int8"] and all(step["perplexity"] > 1 for step in report["steps"])
    files = report["student"]["onnx"]
    for entry in files.values():  # the decoder graph, checked per token and decoded greedily in ONNX Runtime
        assert entry["parity"]["agreement"] >= entry["parity"]["min_agreement"]
        assert 0 <= entry["exact_match"] <= 1 and entry["exact_match_rows"] == 20 and entry["perplexity"] > 1
    assert files["int8"]["accuracy"] == pytest.approx(report["student"]["accuracy"], abs=0.02)
    assert teacher["onnx"]["exact_match"] > 0  # the teacher's greedy answers, decoded from its ONNX file, are right
    assert set(report["latency"]["models"]) >= {"teacher", "student", "student.int8"}
    generation = report["generation"]  # the files timed generating, side by side with the teacher
    assert {(c["model"], c["batch"]) for c in generation["cases"]} == {("teacher", 1), ("student", 1), ("student.int8", 1)}
    assert all(c["tokens_per_s"] > 0 and c["first_token_ms"]["median"] > 0 and c["prompt_length"] + c["new_tokens"] <= 24
               for c in generation["cases"])  # fmt: skip
    assert {(r["model"], r["batch"]) for r in generation["speedups"]} == {("student", 1), ("student.int8", 1)}
    assert "## Generation" in (tmp_path / "run" / "report.md").read_text()


def test_a_hugging_face_gpt2_runs_through_prune_and_qat_into_a_decoder_file(tmp_path):
    recipe = generate_recipe(tmp_path, model="hf-config:gpt2(n_embd=32, n_layer=2, n_head=4, n_positions=32)")
    recipe["stages"] = recipe["stages"][:3]
    report = edgekd.compress(recipe, quiet=True).to_json()
    assert report["steps"][0]["params"] < report["teacher"]["params"]
    int8 = report["student"]["onnx"]["int8"]
    assert int8["parity"]["agreement"] >= int8["parity"]["min_agreement"] and "exact_match" in int8


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_each_divergence_recovers_a_pruned_language_model(tmp_path, divergence):
    recipe = generate_recipe(tmp_path, stages=[{"prune": {"target_macs": 0.6, "steps": 1}}])
    recipe["distill"] |= {"divergence": divergence, "beta": 0.3, "epochs": 2}
    report = edgekd.compress(recipe, quiet=True).to_json()
    step = report["steps"][0]
    assert step["accuracy_before_recovery"] is not None and step["perplexity"] < 60  # far below a uniform guess over 80


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"divergence": "kl"}, "distill.divergence"),
        ({"beta": 1.5}, "distill.beta"),
        ({"method": "dml"}, "distill.method"),
    ],
)
def test_bad_distill_settings_for_generation_are_refused_naming_the_field(tmp_path, change, field):
    recipe = generate_recipe(tmp_path)
    recipe["distill"] |= change
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        load_recipe(recipe_file)
    assert not (tmp_path / "run").exists()


def test_token_kd_reads_only_real_target_tokens():
    """(1-α)·CE + α·divergence over the tokens whose target is set; the rest of the teacher is never read."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    targets = torch.tensor([[-100, 3, 4, -100, -100], [-100, -100, 1, 2, 6]])
    mask = targets != -100
    for divergence in DIVERGENCES:
        loss = token_kd_loss(student, teacher, targets, 2.0, 0.25, divergence, 0.3)
        ce = torch.nn.functional.cross_entropy(student[mask], targets[mask])
        expected = 0.75 * ce + 0.25 * token_divergence(student, teacher, mask, divergence=divergence, beta=0.3, temperature=2.0)
        assert torch.isclose(loss, expected)
        elsewhere = teacher.masked_fill(~mask.unsqueeze(-1), 99.0)
        assert torch.isclose(token_kd_loss(student, elsewhere, targets, 2.0, 0.25, divergence, 0.3), loss)


def test_the_classify_loss_takes_a_divergence_too():
    """forward_kl is today's KD; reverse KL and JSD replace its soft term per sample."""
    student, teacher, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([0])
    for divergence in DIVERGENCES:
        expected = 0.5 * torch.nn.functional.cross_entropy(student, y) + 0.5 * token_divergence(
            student, teacher, divergence=divergence, beta=0.3, temperature=2.0
        )
        assert torch.isclose(kd_loss(student, teacher, y, 2.0, 0.5, divergence, 0.3), expected)


def test_int4_weight_only_decoder_exports_matmul_nbits_with_parity(tmp_path):
    stages = [
        {"prune": {"target_macs": 0.6, "steps": 1}},
        {"qat": {"profile": "int4", "block_size": 16, "accuracy_level": 1}, "recover": {"epochs": 1, "lr": 0.0005}},
        {"export": {}},
    ]
    report = edgekd.compress(generate_recipe(tmp_path, stages=stages), quiet=True).to_json()
    qat = report["steps"][1]
    assert qat["quant_profile"] == "int4-weight-only" and qat["int8"] is False
    assert qat["int4_block_size"] == 16 and qat["int4_accuracy_level"] == 1
    assert qat["size_bytes"] < report["steps"][0]["size_bytes"]  # half a byte per Linear weight; embeddings stay float
    int4 = report["student"]["onnx"]["int4"]
    assert int4["size_bytes"] < report["student"]["onnx"]["fp32"]["size_bytes"]
    assert int4["parity"]["agreement"] >= int4["parity"]["min_agreement"] and 0 <= int4["exact_match"] <= 1
    model = onnx.load(tmp_path / "run" / int4["path"])
    ops = {node.op_type for node in model.graph.node}
    assert "MatMulNBits" in ops and "DequantizeLinear" not in ops
    assert {p.key: p.value for p in model.metadata_props}["quant_profile"] == "int4-weight-only"
    attributes = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert {(a["accuracy_level"], a["block_size"]) for a in attributes} == {(1, 16)}  # the recipe's, on every node


@pytest.mark.parametrize(
    ("qat", "field"),
    [
        ({"profile": "int4", "block_size": 24}, "block_size"),
        ({"profile": "ort-x86", "block_size": 32}, "block_size"),
        ({"profile": "int4", "accuracy_level": 5}, "accuracy_level"),
        ({"profile": "tensorrt", "accuracy_level": 4}, "accuracy_level"),
        ({"profile": "int5"}, "profile"),
    ],
)
def test_bad_int4_settings_are_refused_naming_the_field(tmp_path, qat, field):
    recipe = generate_recipe(tmp_path)
    recipe["stages"][1]["qat"] = qat
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    with pytest.raises(InputError, match=rf"stages\[1\]\.qat.*{field}"):
        load_recipe(recipe_file)


def test_int4_is_refused_for_an_image_recipe_before_training(tmp_path, make_recipe):
    recipe = make_recipe(stages=[{"qat": {"profile": "int4"}}])
    with pytest.raises(InputError, match=r"stages\[0\]\.qat\.profile: int4"):
        edgekd.compress(recipe, quiet=True)
    assert not list(Path(recipe["workdir"]).glob("teacher-*.pt"))


def test_a_seq2seq_model_is_pruned_quantized_exported_and_benchmarked(tmp_path):
    recipe = generate_recipe(tmp_path, model="t5_s(dim=32, depth=2, heads=4, mlp_ratio=2)")
    recipe["data"]["options"]["layout"] = "seq2seq"
    report = edgekd.compress(recipe, quiet=True).to_json()
    assert report["dataset"]["task"] == "seq2seq" and report["teacher"]["accuracy"] > 0.3
    assert report["steps"][0]["params"] < report["teacher"]["params"]
    int8 = report["student"]["onnx"]["int8"]  # the seq2seq graph: source, its mask and decoder inputs in
    assert int8["parity"]["agreement"] >= int8["parity"]["min_agreement"] and 0 <= int8["exact_match"] <= 1
    session = onnxruntime.InferenceSession(str(tmp_path / "run" / int8["path"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "decoder_input_ids"]
    assert {c["model"] for c in report["generation"]["cases"]} == {"teacher", "student", "student.int8"}
