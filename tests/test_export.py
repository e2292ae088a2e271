"""ONNX export of float and fake-quant models, checked by running ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgekd.data import load_data
from edgekd.errors import EdgekdError, InputError
from edgekd.export import export_onnx, onnx_accuracy, optimized_op_counts, parity, read_metadata
from edgekd.export.runtime import layout_changes, ort_quantize_static
from edgekd.models import build_model, card_of, model_names
from edgekd.quant import FakeQuantize, QuantLayer, calibrate, insert_fake_quant, profiles, to_float
from edgekd.quant.graph import float_stem

@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def quantized_model(spec: str, profile: str, digits) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(spec, in_channels=1, num_classes=10).eval()
    quantized = insert_fake_quant(model, profiles.get(profile), batches_per_epoch=1)
    calibrate(quantized, [digits.train.tensors[0][:256]])
    return quantized.eval()


def onnx_initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


@pytest.mark.parametrize("profile", profiles.names())
def test_exported_int8_values_are_the_fake_quant_values(profile, digits, tmp_path):
    model = quantized_model("resnet_s(width=8)", profile, digits)
    path = tmp_path / "model.onnx"
    export_onnx(model, path, digits.test.tensors[0][:1])
    proto = onnx.load(path)
    initializers = onnx_initializers(path)
    dequantize = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    weights = [n for n in dequantize if n.input[1].endswith("weight_fq.scale")]
    assert len(weights) == sum(isinstance(m, QuantLayer) for m in model.modules())
    for node in weights:
        weight_fq = model.get_submodule(node.input[1].removesuffix(".scale"))
        layer = model.get_submodule(node.input[1].removesuffix(".weight_fq.scale")).layer
        stored = initializers[node.input[0]]
        assert stored.dtype == np.int8
        np.testing.assert_array_equal(initializers[node.input[1]], weight_fq.scale.numpy())
        expected = torch.quantize_per_channel(layer.weight.detach(), weight_fq.scale, weight_fq.zero_point, 0, torch.qint8)
        np.testing.assert_array_equal(stored, expected.int_repr().numpy())
    activations = {n.input[1]: n for n in dequantize if not n.input[1].endswith("weight_fq.scale") and n.input[1].endswith(".scale")}
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantize) and not name.endswith("weight_fq"):
            node = activations[f"{name}.scale"]
            assert initializers[node.input[1]] == pytest.approx(module.scale.item(), rel=0, abs=0)
            assert int(initializers[node.input[2]]) == int(module.zero_point)
            assert initializers[node.input[2]].dtype == (np.uint8 if profile == "ort-x86" else np.int8)


@pytest.mark.parametrize("profile", profiles.names())
@pytest.mark.parametrize(
    "name",
    model_names("image"),
)
def test_every_builtin_model_exports_and_matches_in_onnxruntime(name, profile, digits, tmp_path):
    model = quantized_model(card_of(name).tiny, profile, digits)
    path = tmp_path / f"{name}.int8.onnx"
    assert export_onnx(model, path, digits.test.tensors[0][:1]) == "torchscript"
    batches = [digits.val.tensors[0][:100], digits.val.tensors[0][100:107]]  # two batch sizes: the axis is dynamic
    result = parity(model, path, batches, min_agreement=0.99)
    assert result["samples"] == 107 and result["agreement"] >= 0.99
    assert read_metadata(path)["quant_profile"] == profile


@pytest.mark.parametrize("spec", ["resnet_s(width=8)", "mobilenet_s(width_mult=0.5)"])
def test_ort_x86_export_runs_as_fused_integer_kernels(spec, digits, tmp_path):
    model = quantized_model(spec, "ort-x86", digits)
    path = tmp_path / "model.onnx"
    export_onnx(model, path, digits.test.tensors[0][:1])
    quantized_convs = sum(isinstance(m, QuantLayer) and isinstance(m.layer, torch.nn.Conv2d) for m in model.modules())
    adds = sum(n.op_type == "Add" for n in onnx.load(path).graph.node)
    ops = optimized_op_counts(path)
    assert ops["QLinearConv"] == quantized_convs and ops["Conv"] == 0  # the 1-channel stem too
    assert ops["QLinearAdd"] == adds
    assert ops["QLinearGlobalAveragePool"] == 1 and ops["QGemm"] == 1
    assert ops["DequantizeLinear"] == 0 and ops["QuantizeLinear"] == 1  # only the model input


@pytest.mark.parametrize("name", model_names("image"))
def test_ort_x86_int8_stem_export_changes_layout_no_more_than_quantize_static(name, digits, tmp_path):
    """ONNX Runtime's own quantizer on the same float weights is the bar: in the graph ORT runs, edgekd's
    int8 file has no more Transposes and NCHWc reorders (each a pass over an activation tensor)."""
    model = quantized_model(card_of(name).tiny, "ort-x86", digits)
    example = digits.test.tensors[0][:1]
    ours, fp32, theirs = tmp_path / "edgekd.onnx", tmp_path / "fp32.onnx", tmp_path / "quantize_static.onnx"
    export_onnx(model, ours, example)
    export_onnx(to_float(model), fp32, example, exporter="torchscript")
    ort_quantize_static(fp32, theirs, [digits.train.tensors[0][:64].numpy()])
    assert layout_changes(ours) <= layout_changes(theirs)


def test_float_stem_candidate_adds_the_layout_changes_it_is_timed_against(digits, tmp_path):
    """Why `stem: auto` has to measure: the float stem's faster conv costs an NCHWc reorder, and before a
    residual Add a Transpose pair, that the int8 stem does not have."""
    model = quantized_model("resnet_s(width=8)", "ort-x86", digits)
    example = digits.test.tensors[0][:1]
    int8, floated = tmp_path / "int8.onnx", tmp_path / "float.onnx"
    export_onnx(model, int8, example)
    export_onnx(float_stem(model, profiles.get("ort-x86")), floated, example)
    assert optimized_op_counts(floated)["Conv"] == 1 and optimized_op_counts(int8)["Conv"] == 0
    assert layout_changes(floated) == layout_changes(int8) + 3


def test_float_export_records_its_exporter_and_reproduces_pytorch(digits, tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn(width=4)", in_channels=1, num_classes=10).eval()
    for opset, exporter in ((17, "torchscript"), (18, "dynamo")):
        path = tmp_path / f"opset{opset}.onnx"
        assert export_onnx(model, path, digits.test.tensors[0][:1], opset=opset, metadata={"recipe_hash": "abc"}) == exporter
        assert onnx.load(path).opset_import[0].version == opset
        assert read_metadata(path) | {"edgekd_version": "-"} == {"edgekd_version": "-", "exporter": exporter, "recipe_hash": "abc"}
        assert parity(model, path, [digits.val.tensors[0]], min_agreement=0.999)["agreement"] == 1.0
        images, labels = digits.test.tensors
        expected = (model(images).argmax(1) == labels).float().mean().item()
        assert onnx_accuracy(path, [(images, labels)]) == pytest.approx(expected, abs=1 / len(labels))


def test_quantized_model_cannot_take_the_dynamo_exporter(digits, tmp_path):
    model = quantized_model("cnn(width=4)", "ort-x86", digits)
    with pytest.raises(InputError, match="dynamo cannot export fake quantization"):
        export_onnx(model, tmp_path / "m.onnx", digits.test.tensors[0][:1], opset=18, exporter="dynamo")


def test_parity_below_threshold_is_an_error(digits, tmp_path):
    torch.manual_seed(0)
    exported = build_model("cnn(width=4)", in_channels=1, num_classes=10).eval()
    other = build_model("cnn(width=4)", in_channels=1, num_classes=10).eval()
    path = tmp_path / "m.onnx"
    export_onnx(exported, path, digits.test.tensors[0][:1])
    with pytest.raises(EdgekdError, match="parity check failed for m.onnx"):
        parity(other, path, [digits.val.tensors[0]], min_agreement=0.99)
