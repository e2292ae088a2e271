"""Hugging Face families through `edgekd compress` (prune → qat → export with parity) whose structure
differs most from BERT/GPT-2/ViT (tests/test_run_text.py, test_run_generate.py):

- ConvNeXt: depthwise convs, LayerNorm over channels, layer scale; its config holds one width per
  stage and builds MLPs 4× as wide, so stage widths are pruned and the MLPs follow them.
- T5: encoder and decoder, relative attention bias (one column per head, in each stack's first
  layer, shared by its other layers), embeddings tied to the LM head: heads go together everywhere.

Both int8 files are quantized for TensorRT and pass its check; the pruned float students reload with
`from_pretrained` and compute what their fp32 ONNX files compute."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

import edgekd
from edgekd.export import lint_tensorrt
from tests.test_run_generate import generate_recipe

transformers = pytest.importorskip("transformers")

CONVNEXT = "hf-config:convnext(hidden_sizes=[16, 32], depths=[2, 1], num_stages=2, patch_size=2, num_channels=1, image_size=8)"
T5 = "hf-config:t5(d_model=32, d_kv=8, num_layers=2, num_decoder_layers=1, num_heads=4, d_ff=64, dropout_rate=0.0)"
STAGES = [
    {"prune": {"target_macs": 0.6, "steps": 1}},
    {"qat": {"profile": "tensorrt", "calibration_batches": 2}, "recover": {"epochs": 1}},
    {"export": {}},
]


def onnx_logits(path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def check_int8_file(run, report) -> None:
    int8 = report["student"]["onnx"]["int8"]
    assert int8["parity"]["agreement"] >= int8["parity"]["min_agreement"]
    assert lint_tensorrt(run / int8["path"]) == []


def test_a_convnext_loses_stage_widths_its_mlps_follow_and_it_reloads(tmp_path, make_recipe):
    recipe = make_recipe(
        teacher={"model": CONVNEXT, "train": {"epochs": 1, "lr": 0.003, "optimizer": {"name": "adamw"}}}, student="teacher",
        distill={"epochs": 1, "lr": 0.001, "optimizer": {"name": "adamw"}}, stages=STAGES,
        data={"dataset": "digits", "batch_size": 64, "limit": 600},
    )
    report = edgekd.compress(recipe, quiet=True).to_json()
    run = tmp_path / "run"
    assert report["steps"][0]["macs"] <= 0.6 * report["teacher"]["macs"]
    check_int8_file(run, report)
    student = transformers.AutoModelForImageClassification.from_pretrained(run / report["student"]["pretrained"]).eval()
    widths = student.config.hidden_sizes
    assert all(new < old for new, old in zip(widths, [16, 32]))
    for stage, width in zip(student.convnext.encoder.stages, widths):  # what the config builds: MLPs 4 × the stage
        assert all(layer.dwconv.out_channels == width and layer.pwconv1.out_features == 4 * width for layer in stage.layers)
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        expected = student(images).logits.numpy()
    np.testing.assert_allclose(onnx_logits(run / "student.onnx", {"input": images.numpy()}), expected, atol=1e-4)


def test_a_t5_loses_the_same_heads_in_encoder_decoder_and_position_bias_and_reloads(tmp_path):
    recipe = generate_recipe(tmp_path, model=T5, stages=STAGES)
    recipe["data"]["options"]["layout"] = "seq2seq"
    recipe["teacher"]["train"]["epochs"] = 2
    report = edgekd.compress(recipe, quiet=True).to_json()
    run = tmp_path / "run"
    assert report["dataset"]["task"] == "seq2seq" and report["steps"][0]["params"] < report["teacher"]["params"]
    check_int8_file(run, report)
    assert 0 <= report["student"]["onnx"]["int8"]["exact_match"] <= 1
    student = transformers.T5ForConditionalGeneration.from_pretrained(run / report["student"]["pretrained"]).eval()
    config = student.config
    assert 1 <= config.num_heads < 4 and config.d_kv == 8
    attentions = [m for m in student.modules() if type(m).__name__ == "T5Attention"]
    assert len(attentions) == 2 + 2 * 1  # encoder self-attention; decoder self- and cross-attention
    for attention in attentions:
        assert attention.n_heads == config.num_heads and attention.q.out_features == attention.o.in_features == config.num_heads * 8
        if attention.has_relative_attention_bias:  # one column per kept head
            assert attention.relative_attention_bias.weight.shape == (config.relative_attention_num_buckets, config.num_heads)
    assert student.lm_head.weight is student.shared.weight  # still tied
    ids = torch.randint(3, config.vocab_size, (2, 7))
    decoder_ids = torch.randint(3, config.vocab_size, (2, 4))
    with torch.no_grad():
        expected = student(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=decoder_ids).logits.numpy()
    inputs = {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy()), "decoder_input_ids": decoder_ids.numpy()}
    np.testing.assert_allclose(onnx_logits(run / "student.onnx", inputs), expected, atol=1e-4)
