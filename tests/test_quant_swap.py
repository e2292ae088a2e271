"""Fake quantization of transformers by module swapping: int8 for every profile and block-wise
int4 weight-only, on the same QuantLayer/FakeQuantize machinery as the fx path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.sequence import token_divergence
from edgekd.errors import InputError
from edgekd.outputs import logits_of
from edgekd.quant import FakeQuantize, QuantLayer, QuantSchedule, insert_fake_quant
from edgekd.quant.fake_quant import QuantScheme
from edgekd.quant.graph import quant_schedule
from edgekd.quant.profiles import profiles
from edgekd.quant.swap import (
    calibrate, insert_int4_weights, insert_linear_fake_quant, int4_codes, int4_layers, strip_fake_quant,
)
from tests.hf_tiny import FAMILY_MODELS, gpt2_lm, token_batches, transformers

KINDS = [*profiles.names(), "int4"]


def swapped(model: nn.Module, kind: str) -> nn.Module:
    if kind == "int4":
        return insert_int4_weights(model, block_size=16)
    quantized = insert_linear_fake_quant(model, profiles.get(kind), batches_per_epoch=4)
    family = "seq2seq" if model.config.is_encoder_decoder else "decoder"
    calibrate(quantized, token_batches(family, count=2, seed=1))
    return quantized


def test_torch_fx_cannot_trace_hugging_face_models_so_they_are_swapped():
    for build in FAMILY_MODELS.values():
        with pytest.raises(InputError, match="torch.fx can trace"):
            insert_fake_quant(build(), profiles.get("tensorrt"), batches_per_epoch=1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["decoder", "seq2seq"])
def test_every_linear_is_swapped_and_the_swap_reverses(kind, family):
    model = FAMILY_MODELS[family]()
    quantized = swapped(model, kind)
    linears = [n for n, m in model.named_modules() if type(m).__name__ in ("Linear", "Conv1D")]
    assert all(isinstance(quantized.get_submodule(n), QuantLayer) for n in linears)
    assert isinstance(quant_schedule(quantized), QuantSchedule)
    inputs = token_batches(family, count=1)[0]
    with torch.no_grad():
        assert not torch.equal(logits_of(quantized(**inputs)), logits_of(model(**inputs)))
    plain = strip_fake_quant(quantized)
    assert not any(isinstance(m, (QuantLayer, FakeQuantize, QuantSchedule)) for m in plain.modules())
    assert not plain._forward_pre_hooks and quant_schedule(plain) is None
    assert plain.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(logits_of(plain(**inputs)), logits_of(model(**inputs)))  # no training: the float model


@pytest.mark.parametrize("profile", profiles.names())
def test_int8_swap_quantizes_linear_inputs_in_the_profiles_type(profile):
    quantized = swapped(gpt2_lm(), profile)
    layer = quantized.get_submodule("transformer.h.0.attn.c_attn")  # Hugging Face Conv1D: weight (in, out)
    expected = profiles.get(profile).activation_dtype
    assert layer.input_fq.scheme == QuantScheme(expected) and layer.weight_fq.scheme == QuantScheme("int8", axis=1)
    assert layer.weight_fq.scale.shape == (layer.layer.weight.shape[1],)  # a scale per output feature
    x = torch.randn(3, 5, layer.layer.weight.shape[0])
    with torch.no_grad():
        reference = F.linear(layer.input_fq(x), layer.quantized_weight().t(), layer.layer.bias)
        assert torch.equal(layer(x), reference)


def test_multihead_attentions_own_projection_stays_float():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
            self.mlp = nn.Linear(16, 16)

        def forward(self, x):
            return self.mlp(self.attention(x, x, x)[0])

    quantized = insert_linear_fake_quant(Block(), profiles.get("ort-x86"), batches_per_epoch=1)
    assert isinstance(quantized.mlp, QuantLayer) and isinstance(quantized.attention.out_proj, nn.Linear)


def test_int4_codes_are_block_wise_symmetric_and_pad_the_last_block():
    layer = QuantLayer.from_float(nn.Linear(40, 6), weight_dtype="int4", block_size=16)  # 40 = 16 + 16 + 8
    codes, scales = int4_codes(layer)
    assert codes.shape == (6, 3, 16) and scales.shape == (6, 3)
    assert codes.abs().amax(-1).eq(7).all()  # each block's largest weight lands on ±7
    assert codes[:, 2, 8:].eq(0).all()  # the padding of the short last block
    weight = layer.layer.weight.detach()
    error = (layer.quantized_weight().detach() - weight).abs()
    per_value_scale = scales.repeat_interleave(16, dim=1)[:, :40]
    assert (error <= per_value_scale / 2 + 1e-7).all()


def test_bad_requests_are_input_errors():
    model = gpt2_lm()
    with pytest.raises(InputError, match="power of two"):
        insert_int4_weights(model, block_size=24)
    twice = insert_int4_weights(model, block_size=16)
    with pytest.raises(InputError, match="already quantized"):
        insert_linear_fake_quant(twice, profiles.get("tensorrt"), batches_per_epoch=1)
    with pytest.raises(InputError, match="nothing to quantize"):
        insert_int4_weights(model, skip=["*"])


@pytest.mark.parametrize("profile", profiles.names())
def test_int8_training_reaches_every_float_weight_and_observers_freeze(profile):
    student = swapped(gpt2_lm(), profile)  # schedule: 4 batches per epoch, observers frozen after epoch 1
    layers = [m for m in student.modules() if isinstance(m, QuantLayer)]
    student.train()
    for step, batch in enumerate(token_batches("decoder", count=5, seed=2)):
        logits = logits_of(student(**batch))
        assert all(layer.input_fq.observing == (step < 4) for layer in layers)
    F.cross_entropy(logits.flatten(0, 1), batch["input_ids"].flatten()).backward()
    assert all(layer.layer.weight.grad.abs().sum() > 0 for layer in layers)  # straight through the rounding


def test_int4_recovery_distillation_repairs_the_rounding():
    """A few steps of token-level KD from the float model bring the int4 copy much closer to it:
    the reason to train through the fake quantization. The block scales follow the weights in training."""
    teacher = gpt2_lm(hidden=64, init_range=0.2)
    student = swapped(teacher, "int4")
    data = token_batches("decoder", count=4, seed=2)

    def divergence() -> float:
        with torch.no_grad():
            losses = [token_divergence(logits_of(student(**b)), logits_of(teacher(**b)), b["attention_mask"]) for b in data]
            return float(sum(losses)) / len(data)

    before = divergence()
    initial_scales = {name: layer.weight_fq.scale.clone() for name, layer in int4_layers(student).items()}
    student.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-4)
    for step in range(30):
        batch = data[step % len(data)]
        with torch.no_grad():
            target = logits_of(teacher(**batch))
        loss = token_divergence(logits_of(student(**batch)), target, batch["attention_mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student.eval()
    assert divergence() < 0.5 * before
    for name, layer in int4_layers(student).items():  # the block scales followed the weights (as of the last step)
        assert not torch.equal(layer.weight_fq.scale, initial_scales[name])
        codes, _ = int4_codes(layer)
        assert codes.min() >= -8 and codes.max() <= 7


def test_t5_reads_the_weight_dtype_of_a_swapped_layer():
    model = FAMILY_MODELS["seq2seq"]()
    quantized = swapped(model, "tensorrt")
    wo = quantized.get_submodule("encoder.block.0.layer.1.DenseReluDense.wo")
    assert isinstance(wo, QuantLayer) and wo.weight.dtype == torch.float32  # T5DenseActDense reads it
    assert isinstance(model, transformers.T5ForConditionalGeneration)


@pytest.mark.parametrize("profile", profiles.names())
def test_convolutions_are_swapped_where_the_runtime_runs_them_in_int8(profile, tmp_path):
    """TensorRT runs a conv in int8 from DequantizeLinear inputs; ONNX Runtime's QLinearConv also needs the
    output requantized, which module swap does not do, so there the convs stay float and no DequantizeLinear
    is left in ONNX Runtime's optimized graph."""
    from edgekd.export import export_onnx
    from edgekd.export.runtime import optimized_op_counts
    from edgekd.facts import DataFacts
    from edgekd.models import build_model

    torch.manual_seed(0)
    spec = "hf-config:convnext(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2)"
    model = build_model(spec, DataFacts(in_channels=1, num_classes=4, image_size=8)).eval()
    images = torch.randn(16, 1, 8, 8)
    quantized = insert_linear_fake_quant(model, profiles.get(profile), batches_per_epoch=1)
    calibrate(quantized, [images])
    layers = {type(m.layer).__name__ for m in quantized.modules() if isinstance(m, QuantLayer)}
    assert layers == ({"Linear", "Conv2d"} if profile == "tensorrt" else {"Linear"})
    export_onnx(quantized.eval(), tmp_path / "model.onnx", images[:2])
    if profile == "ort-x86":
        counts = optimized_op_counts(tmp_path / "model.onnx")
        assert counts["DequantizeLinear"] == 0 and counts["MatMulIntegerToFloat"] == 4  # pwconv1 and pwconv2 of each block
