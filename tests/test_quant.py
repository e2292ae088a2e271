"""Fake quantization, the reversible swaps, calibration and the freeze schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType
from torch import nn

from edgekd.data import load_data
from edgekd.errors import InputError, RecipeError
from edgekd.models import build_model
from edgekd.quant import (
    FakeQuantize,
    QATConfig,
    QuantLayer,
    QuantSchedule,
    QuantScheme,
    calibrate,
    calibrating,
    insert_fake_quant,
    int8_size_bytes,
    profiles,
    quant_schedule,
    to_float,
)
from edgekd.quant.graph import float_stem, quantizers, stem_layers
from edgekd.recipe import load_recipe


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def test_scales_and_zero_points_are_onnxruntimes():
    low, high = torch.tensor(-0.7), torch.tensor(2.3)
    for dtype, onnx_type, symmetric in (("uint8", TensorProto.UINT8, False), ("int8", TensorProto.INT8, True)):
        scale, zero_point = QuantScheme(dtype).qparams(low, high)
        qmin, qmax = get_qmin_qmax_for_qType(onnx_type, symmetric=symmetric)
        bounds = np.array(-0.7, np.float32), np.array(2.3, np.float32)
        expected_zero_point, expected_scale = compute_scale_zp(*bounds, qmin, qmax, symmetric=symmetric)
        assert scale.item() == pytest.approx(float(expected_scale), rel=1e-6)
        assert int(zero_point) == int(expected_zero_point)


def test_fake_quant_rounds_to_the_grid_and_passes_gradients_straight_through():
    fq = FakeQuantize(QuantScheme("int8"))
    with calibrating([fq]):
        fq(torch.linspace(-1.27, 1.27, 50))
    assert fq.scale.item() == pytest.approx(0.01)
    x = torch.tensor([0.123, -0.456, 5.0], requires_grad=True)
    y = fq(x)
    assert y.tolist() == pytest.approx([0.12, -0.46, 1.27])  # 5.0 clips to 127 steps
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]  # STE inside the range, zero where clipped


@pytest.mark.parametrize(
    "layer",
    [nn.Conv2d(3, 8, 3, padding=1), nn.ConvTranspose2d(3, 8, 3), nn.Linear(12, 5), nn.Conv2d(8, 8, 3, groups=8)],
    ids=["conv", "conv-transpose", "linear", "depthwise"],
)
def test_quantized_layer_round_trip(layer):
    original = {k: v.clone() for k, v in layer.state_dict().items()}
    wrapped = QuantLayer.from_float(layer)
    channels = layer.weight.shape[wrapped.weight_fq.scheme.axis]
    assert wrapped.weight_fq.scale.shape == (channels,)
    assert wrapped.weight_fq.scheme.axis == (1 if isinstance(layer, nn.ConvTranspose2d) else 0)
    x = torch.randn(2, 12) if isinstance(layer, nn.Linear) else torch.randn(2, layer.in_channels, 6, 6)
    quantized, plain = wrapped(x), layer(x)
    assert not torch.equal(quantized, plain)  # the weight really is rounded …
    assert torch.allclose(quantized, plain, atol=0.05 * plain.abs().max().item())  # … to 8 bits
    restored = wrapped.to_float()
    assert type(restored) is type(layer)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in original.items())


@pytest.mark.parametrize("profile", profiles.names())
def test_model_round_trip_leaves_nothing_training_only(profile, digits):
    torch.manual_seed(0)
    model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10).eval()
    quantized = insert_fake_quant(model, profiles.get(profile), batches_per_epoch=4)
    calibrate(quantized, [digits.train.tensors[0][:64]])
    back = to_float(quantized).eval()
    x = digits.test.tensors[0][:32]
    assert torch.allclose(back(x), model(x), atol=1e-4)  # ort-x86: BN folded, the same function
    assert not any(isinstance(m, (FakeQuantize, QuantLayer, QuantSchedule)) for m in back.modules())
    assert not back._forward_pre_hooks and quant_schedule(back) is None
    has_batchnorm = any(isinstance(m, nn.BatchNorm2d) for m in back.modules())
    assert has_batchnorm == (profile == "tensorrt")


def test_ort_x86_trains_the_stem_int8_and_can_ship_it_float(digits):
    model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
    ort = profiles.get("ort-x86")
    quantized = insert_fake_quant(model, ort, batches_per_epoch=1)
    calibrate(quantized, [digits.train.tensors[0][:64]])
    assert isinstance(quantized.get_submodule("stem.0"), QuantLayer) and stem_layers(quantized, ort) == ["stem.0"]
    float_stemmed = float_stem(quantized, ort)
    assert isinstance(float_stemmed.get_submodule("stem.0"), nn.Conv2d)
    assert isinstance(float_stemmed.get_submodule("layers.0.conv1"), QuantLayer)
    assert len(quantizers(float_stemmed)) == len(quantizers(quantized)) - 2  # the stem's weights and the model input
    assert quant_schedule(float_stemmed) is not None and quant_schedule(quantized) is not None
    x = digits.val.tensors[0][:32]
    with torch.no_grad():  # same weights, same requantized stem output grid: nearly the same logits
        agree = (float_stemmed.eval()(x).argmax(1) == quantized.eval()(x).argmax(1)).float().mean()
    assert agree >= 0.9
    assert stem_layers(insert_fake_quant(model, profiles.get("tensorrt"), batches_per_epoch=1), profiles.get("tensorrt")) == []


def test_calibration_methods_clip_outliers_differently():
    torch.manual_seed(0)
    values = torch.cat([torch.randn(20000), torch.tensor([40.0])])  # one far outlier
    highs = {}
    for method in ("max", "percentile", "mse"):
        fq = FakeQuantize(QuantScheme("int8"), calibration=method, percentile=99.9)
        with calibrating([fq]):
            fq(values)
        highs[method] = fq.range_high.item()
    assert highs["max"] == pytest.approx(40.0)
    assert 2.5 < highs["percentile"] < 4.5
    assert highs["mse"] < highs["max"]


def test_observers_and_batchnorm_freeze_at_their_epoch(digits):
    """Epochs are counted in training batches: 3 per epoch here, freezing after the first."""
    torch.manual_seed(0)
    model = build_model("cnn(width=4, depth=1)", in_channels=1, num_classes=10)
    quantized = insert_fake_quant(
        model, profiles.get("tensorrt"), batches_per_epoch=3, freeze_observers_epoch=1, freeze_bn_epoch=1
    )
    images, labels = digits.train.tensors
    calibrate(quantized, [images[:64]])
    optimizer = torch.optim.SGD(quantized.parameters(), lr=0.1)
    activation = quantized.get_submodule("x_fq")
    batchnorm = quantized.get_submodule("features.0.1")

    def snapshot():
        return activation.scale.clone(), batchnorm.running_mean.clone()

    snapshots = [snapshot()]
    for batch in range(6):
        quantized.train()
        x, y = images[batch * 32 : (batch + 1) * 32], labels[batch * 32 : (batch + 1) * 32]
        loss = nn.functional.cross_entropy(quantized(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        snapshots.append(snapshot())
    changed = [not torch.equal(a[0], b[0]) or not torch.equal(a[1], b[1]) for a, b in zip(snapshots, snapshots[1:])]
    assert changed == [True, True, True, False, False, False]
    assert int(quant_schedule(quantized).train_batches) == 6


def test_learnable_scales_are_trained_by_gradient(digits):
    model = build_model("cnn(width=4, depth=1)", in_channels=1, num_classes=10)
    quantized = insert_fake_quant(model, profiles.get("ort-x86"), batches_per_epoch=1, learnable_scales=True, freeze_observers_epoch=0)
    images, labels = digits.train.tensors
    calibrate(quantized, [images[:64]])
    quantized.train()
    nn.functional.cross_entropy(quantized(images[:32]), labels[:32]).backward()
    scales = [m.scale for m in quantized.modules() if isinstance(m, FakeQuantize)]
    assert all(isinstance(s, nn.Parameter) for s in scales)
    assert all(float(s.grad.abs().sum()) > 0 for s in scales)


def test_int8_size_is_about_a_quarter_of_float():
    model = build_model("resnet_s(width=16)", in_channels=1, num_classes=10)
    float_bytes = sum(p.numel() * 4 for p in model.parameters())
    size = int8_size_bytes(insert_fake_quant(model, profiles.get("ort-x86"), batches_per_epoch=1))
    assert 0.25 * float_bytes < size < 0.35 * float_bytes


def test_unknown_profile_is_an_input_error_with_a_suggestion():
    with pytest.raises(InputError, match="Did you mean 'ort-x86'"):
        profiles.get("ort-x68")
    with pytest.raises(RecipeError, match=r"stages\[0\]\.qat\.profile: unknown quantization profile 'tensorrtt'.*Did you mean 'tensorrt'"):
        load_recipe({"name": "t", "teacher": {"model": "cnn", "train": {"epochs": 1}}, "stages": [{"qat": {"profile": "tensorrtt"}}]})
    assert QATConfig(learnable_scales=True).observers_frozen_from == 0


def test_untraceable_model_is_an_input_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(InputError, match="torch.fx can trace"):
        insert_fake_quant(Branchy(), profiles.get("ort-x86"), batches_per_epoch=1)
