"""ONNX export of transformer families (float, int8 for both profiles, int4 weight-only) with
parity, the fused kernels ONNX Runtime runs, the TensorRT check on transformer graphs, and
greedy decoding of the exported files against PyTorch."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from edgekd.decoding import exact_match
from edgekd.distill.sequence import generate
from edgekd.errors import EdgekdError, InputError
from edgekd.export.int4 import packed_weights
from edgekd.export.onnx_export import read_metadata
from edgekd.export.runtime import optimized_op_counts
from edgekd.export.transformer import (
    FAMILIES, SpecialTokens, export_sequence_model, onnx_exact_match, onnx_generate, sequence_parity,
)
from edgekd.export.trt_lint import lint_tensorrt
from edgekd.outputs import logits_of
from edgekd.quant.profiles import profiles
from edgekd.quant.swap import calibrate, insert_int4_weights, insert_linear_fake_quant, int4_codes, int4_layers
from tests.hf_tiny import EOS, FAMILY_MODELS, PAD, START, prompts, token_batches

GENERATING = [f for f in FAMILIES if f != "encoder"]


def special_tokens(family: str) -> SpecialTokens:
    return SpecialTokens(PAD, EOS, START if family == "seq2seq" else None)


def quantized(family: str, kind: str, **options):
    model = FAMILY_MODELS[family]()
    if kind == "float":
        return model
    if kind == "int4":
        return insert_int4_weights(model, block_size=16, **options)
    model = insert_linear_fake_quant(model, profiles.get(kind), batches_per_epoch=1, **options)
    calibrate(model, token_batches(family, count=4, seed=1))
    return model


def exported(tmp_path, family: str, kind: str, **options):
    model = quantized(family, kind, **options)
    path = tmp_path / f"{family}-{kind}.onnx"
    export_sequence_model(model, path, family, tokens=special_tokens(family), int4_accuracy_level=0)
    return model, path


def linear_count(model) -> int:
    return sum(type(m).__name__ in ("Linear", "Conv1D") for m in model.modules())


# int4 weight-only is for generating models (decoders and seq2seq), not encoder classifiers.
CASES = [(f, k) for f in FAMILIES for k in ("float", *profiles.names(), "int4") if (f, k) != ("encoder", "int4")]


@pytest.mark.parametrize("family,kind", CASES)
def test_export_matches_pytorch_on_other_shapes(family, kind, tmp_path):
    model, path = exported(tmp_path, family, kind)
    # Batches of 4 × 10 where the graph was traced on 2 × 8: batch and sequence axes are dynamic.
    result = sequence_parity(model, path, token_batches(family), min_agreement=0.99)
    # Real positions: a sequence each (encoder); every unpadded token (decoder, 4 × 10 less 3 padded); every target token (seq2seq).
    assert result["agreement"] >= 0.99 and result["positions"] == {"encoder": 12, "decoder": 3 * 37, "seq2seq": 3 * 20}[family]
    # Float and int4 at accuracy level 0 compute the same float arithmetic; int8 rounds the same grid.
    assert result["max_abs_diff"] < (1e-4 if kind in ("float", "int4") else 5e-3)


def test_ort_profile_fuses_every_linear_into_an_integer_kernel(tmp_path):
    model, path = exported(tmp_path, "encoder", "ort-x86")
    optimized = optimized_op_counts(path)
    # BERT: 12 Linear layers on (batch, length, hidden) → MatMulIntegerToFloat; pooler and classifier on
    # (batch, hidden) → QGemm. No DequantizeLinear is left to run in float.
    assert optimized["MatMulIntegerToFloat"] + optimized["QGemm"] == linear_count(model) == 14
    assert optimized["QGemm"] == 2 and optimized["DequantizeLinear"] == 0
    # The float MatMuls left are attention's activation × activation products (QKᵀ and PV per layer).
    assert optimized["MatMul"] + optimized["FusedMatMul"] == 2 * model.config.num_hidden_layers


@pytest.mark.parametrize("family", GENERATING)
def test_ort_profile_fuses_decoders_too(family, tmp_path):
    model, path = exported(tmp_path, family, "ort-x86")
    optimized = optimized_op_counts(path)
    integer = optimized["MatMulIntegerToFloat"] + optimized["QLinearMatMul"] + optimized["QGemm"]
    assert integer == linear_count(model) and optimized["DequantizeLinear"] == 0


def test_weight_transposes_are_folded_into_the_int8_weights(tmp_path):
    float_ops = Counter(n.op_type for n in onnx.load(exported(tmp_path, "decoder", "float")[1]).graph.node)
    int8_file = exported(tmp_path, "decoder", "tensorrt")[1]
    int8_ops = Counter(n.op_type for n in onnx.load(int8_file).graph.node)
    assert int8_ops["Transpose"] == float_ops["Transpose"]  # only attention's own transposes remain
    assert int8_ops["QuantizeLinear"] == int8_ops["DequantizeLinear"] / 2  # one Q per input, a DQ per input and weight


def test_tensorrt_check_accepts_tensorrt_transformer_graphs_and_names_what_it_rejects(tmp_path):
    for family in FAMILIES:
        assert lint_tensorrt(exported(tmp_path, family, "tensorrt")[1]) == []
    rules = Counter(f.rule for f in lint_tensorrt(exported(tmp_path, "decoder", "ort-x86")[1]))
    assert rules["uint8-qdq"] > 0 and rules["nonzero-zero-point"] > 0
    int4_rules = {f.rule for f in lint_tensorrt(exported(tmp_path, "decoder", "int4")[1])}
    assert int4_rules == {"onnxruntime-only-op"}


def test_tensorrt_check_flags_a_float_linear_and_a_wrong_weight_axis(tmp_path):
    _, path = exported(tmp_path, "decoder", "tensorrt", skip=["lm_head"])
    findings = lint_tensorrt(path)
    assert {(f.rule, f.severity) for f in findings} == {("unquantized-input", "warning"), ("unquantized-weight", "warning")}
    assert len(findings) == 2  # the lm_head MatMul; attention's MatMuls are not weighted layers
    proto = onnx.load(exported(tmp_path, "decoder", "tensorrt")[1])
    weight_dq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and any(a.name == "axis" and a.i == 1 for a in n.attribute)
                     and n.input[0] in {t.name for t in proto.graph.initializer})  # fmt: skip
    next(a for a in weight_dq.attribute if a.name == "axis").i = 0  # scales now run along the input features
    assert "per-channel-axis" in {f.rule for f in lint_tensorrt(proto)}


def test_int4_file_holds_exactly_the_trained_integers(tmp_path):
    model = quantized("decoder", "int4")
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for batch in token_batches("decoder", count=3, seed=5):  # a few steps move weights, codes and block scales
        logits = logits_of(model(**batch))
        F.cross_entropy(logits.flatten(0, 1), batch["input_ids"].roll(-1, 1).flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    path = tmp_path / "trained-int4.onnx"
    export_sequence_model(model, path, "decoder", tokens=special_tokens("decoder"), int4_accuracy_level=0)
    assert sequence_parity(model, path, token_batches("decoder"))["max_abs_diff"] < 1e-4
    in_file = packed_weights(onnx.load(path))
    layers = int4_layers(model)
    assert sorted(in_file) == sorted(layers) and len(layers) == linear_count(model)
    for name, layer in layers.items():
        codes, scales = (t.numpy() for t in int4_codes(layer))
        assert codes.min() >= -8 and codes.max() <= 7
        assert np.array_equal(in_file[name][0], codes) and np.array_equal(in_file[name][1], scales), name


def test_int4_int8_compute_is_recorded_and_close(tmp_path):
    model = quantized("decoder", "int4")
    path = tmp_path / "int4-acc4.onnx"
    export_sequence_model(model, path, "decoder", int4_accuracy_level=4)
    assert read_metadata(path)["int4_accuracy_level"] == "4"
    assert sequence_parity(model, path, token_batches("decoder"), min_agreement=0.9)["max_abs_diff"] > 1e-4  # int8 activations
    with pytest.raises(InputError, match="accuracy level"):
        export_sequence_model(model, path, "decoder", int4_accuracy_level=7)


@pytest.mark.parametrize("family", GENERATING)
@pytest.mark.parametrize("kind", ["float", "ort-x86", "int4"])
def test_onnx_greedy_decoding_agrees_with_pytorch(family, kind, tmp_path):
    model, path = exported(tmp_path, family, kind)
    batch = prompts(6, seed=4)
    tokens = special_tokens(family)
    expected = generate(model, batch, max_new_tokens=6, eos_token_id=tokens.eos_token_id, pad_token_id=PAD,
                        decoder_start_token_id=tokens.decoder_start_token_id)  # fmt: skip
    got = onnx_generate(path, batch, max_new_tokens=6)  # special tokens from the file's metadata
    assert got == expected
    assert onnx_exact_match(path, batch, expected.tokens, max_new_tokens=6) == 1.0
    wrong = [t[:-1] if t else [EOS] for t in expected.tokens]
    assert onnx_exact_match(path, batch, wrong, max_new_tokens=6) == exact_match(expected.tokens, wrong) == 0.0


def test_nan_logits_fail_parity(tmp_path):
    model = FAMILY_MODELS["encoder"]()
    path = tmp_path / "bert.onnx"
    export_sequence_model(model, path, "encoder")
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    with pytest.raises(EdgekdError, match="PyTorch produced NaN"):
        sequence_parity(model, path, token_batches("encoder", count=1))


def test_sequence_file_errors_are_input_errors(tmp_path):
    encoder = FAMILY_MODELS["encoder"]()
    export_sequence_model(encoder, tmp_path / "bert.onnx", "encoder")
    with pytest.raises(InputError, match="encoder classifier"):
        onnx_generate(tmp_path / "bert.onnx", [[5, 6]], max_new_tokens=2)
    export_sequence_model(FAMILY_MODELS["decoder"](), tmp_path / "gpt.onnx", "decoder")  # no special tokens recorded
    with pytest.raises(InputError, match="records no special tokens"):
        onnx_generate(tmp_path / "gpt.onnx", [[5, 6]], max_new_tokens=2)
    with pytest.raises(InputError, match="unknown model family"):
        export_sequence_model(encoder, tmp_path / "x.onnx", "vision")  # type: ignore[arg-type]
