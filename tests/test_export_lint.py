"""The TensorRT readiness check and the `check` / `export` commands."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import typer
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from edgekd.data import load_data
from edgekd.errors import EdgekdError, InputError
from edgekd.export import export_onnx, lint_tensorrt, parity
from edgekd.cli.export import check_command, export_command
from edgekd.models import build_model
from edgekd.quant import calibrate, insert_fake_quant, profiles
from edgekd.quant.graph import float_stem


def bad_graph() -> onnx.ModelProto:
    """uint8 activation with zero point 128, a conv weight scaled along the wrong axis, an unquantized residual Add."""
    weight = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.int8), "w")
    initializers = [
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        weight,
        numpy_helper.from_array(np.full(2, 0.1, np.float32), "w_scale_wrong"),  # one per input channel: axis 1
        numpy_helper.from_array(np.zeros(2, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="quantize_x"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dequantize_x"),
        helper.make_node("DequantizeLinear", ["w", "w_scale_wrong", "w_zero"], ["wd"], name="dequantize_w", axis=1),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Add", ["c", "r"], ["y"], name="residual_add"),
    ]
    graph = helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)  # valid ONNX: only TensorRT would refuse it
    return model


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def export_quantized(spec: str, profile: str, digits, path, float_stemmed: bool = False) -> None:
    torch.manual_seed(0)
    model = insert_fake_quant(build_model(spec, in_channels=1, num_classes=10).eval(), profiles.get(profile), batches_per_epoch=1)
    calibrate(model, [digits.train.tensors[0][:128]])
    export_onnx(float_stem(model, profiles.get(profile)) if float_stemmed else model, path, digits.test.tensors[0][:1])


def test_lint_flags_what_tensorrt_rejects():
    findings = lint_tensorrt(bad_graph())
    by_rule = Counter((f.rule, f.node) for f in findings)
    assert by_rule[("uint8-qdq", "quantize_x")] == 1 and by_rule[("uint8-qdq", "dequantize_x")] == 1
    assert by_rule[("nonzero-zero-point", "quantize_x")] == 1
    assert by_rule[("per-channel-axis", "dequantize_w")] == 1
    assert by_rule[("unquantized-residual", "residual_add")] == 1
    assert {f.severity for f in findings if f.rule != "unquantized-residual"} == {"error"}


@pytest.mark.parametrize("spec", ["resnet_s(width=8)", "mobilenet_s(width_mult=0.5)"])
def test_tensorrt_profile_export_is_clean_and_ort_profile_is_not(spec, digits, tmp_path):
    export_quantized(spec, "tensorrt", digits, tmp_path / "trt.onnx")
    assert lint_tensorrt(tmp_path / "trt.onnx") == []
    export_quantized(spec, "ort-x86", digits, tmp_path / "ort.onnx")
    rules = {f.rule for f in lint_tensorrt(tmp_path / "ort.onnx")}
    assert {"uint8-qdq", "nonzero-zero-point"} <= rules and "unquantized-input" not in rules  # uint8; the stem is int8
    export_quantized(spec, "ort-x86", digits, tmp_path / "float_stem.onnx", float_stemmed=True)
    assert "unquantized-input" in {f.rule for f in lint_tensorrt(tmp_path / "float_stem.onnx")}


def test_check_command_exit_codes(digits, tmp_path):
    app = typer.Typer()
    app.command("check")(check_command)
    app.command("export")(export_command)
    export_quantized("cnn(width=4)", "tensorrt", digits, tmp_path / "good.onnx")
    onnx.save(bad_graph(), tmp_path / "bad.onnx")
    runner = CliRunner(env={"COLUMNS": "200"})  # wide enough that rich does not fold the table
    good = runner.invoke(app, ["check", str(tmp_path / "good.onnx"), "--target", "tensorrt"])
    assert good.exit_code == 0 and "ready for tensorrt" in good.output
    bad = runner.invoke(app, ["check", str(tmp_path / "bad.onnx")])
    assert isinstance(bad.exception, EdgekdError) and "per-channel-axis" in bad.output
    with pytest.raises(InputError, match="Did you mean 'tensorrt'"):
        check_command(tmp_path / "good.onnx", target="tensorrt8")
    with pytest.raises(InputError, match="does not exist"):
        check_command(tmp_path / "missing.onnx")


def test_export_command_writes_a_model_that_matches_pytorch(digits, tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn(width=4)", in_channels=1, num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    output = tmp_path / "cnn.onnx"
    export_command(model="cnn(width=4)", weights=tmp_path / "weights.pt", input_shape="1x1x8x8", output=output)
    assert parity(model, output, [digits.val.tensors[0]], min_agreement=0.999)["agreement"] == 1.0
    with pytest.raises(InputError, match="--input-shape '1,1,8,8'"):
        export_command(model="cnn(width=4)", weights=tmp_path / "weights.pt", input_shape="1,1,8,8", output=output)


def _with_unknown_op() -> onnx.ModelProto:
    model = bad_graph()
    model.graph.node[4].op_type = "FancyRelu"  # no such operator in the ONNX domain
    return model


def _dangling_input() -> onnx.ModelProto:
    model = bad_graph()
    model.graph.node[3].input[0] = "never_computed"
    return model


def _no_nodes() -> onnx.ModelProto:
    graph = helper.make_graph([], "empty", [], [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


BROKEN_FILES = {
    "a 0-byte file": (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
    "not protobuf": (lambda path: path.write_bytes(b"\x08\x01\x12\xff\xff garbage"), "is not an ONNX model"),
    "an unknown operator": (lambda path: onnx.save(_with_unknown_op(), path), "FancyRelu"),
    "an input nothing computes": (lambda path: onnx.save(_dangling_input(), path), "never_computed"),
    "an empty graph": (lambda path: onnx.save(_no_nodes(), path), "empty graph (no nodes)"),
}


@pytest.mark.parametrize("broken", BROKEN_FILES, ids=list(BROKEN_FILES))
def test_check_refuses_a_broken_file_with_exit_2(broken, tmp_path, capsys):
    from edgekd.cli import main

    write, message = BROKEN_FILES[broken]
    path = tmp_path / "model.onnx"
    write(path)
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(path), "--target", "tensorrt"])
    output = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and str(path) in output and message in output
    assert "ready for" not in output
