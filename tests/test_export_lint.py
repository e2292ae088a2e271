"""The TensorRT readiness check and the `check` / `export` commands."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import typer
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

from edgekd.data import load_data
from edgekd.errors import EdgekdError, InputError
from edgekd.export import export_onnx, lint_tensorrt, parity
from edgekd.export.stage import SEQUENCE_FAMILIES
from edgekd.export.transformer import export_sequence_model, sequence_parity
from edgekd.cli.export import check_command, export_command
from edgekd.facts import DataFacts
from edgekd.models import build_model, card_of, models
from edgekd.quant import calibrate, insert_fake_quant, profiles
from edgekd.quant.graph import float_stem
from edgekd.quant.stage import float_model, needs_module_swap, quantize
from tests.conftest import card_facts


def bad_graph() -> onnx.ModelProto:
    """uint8 activation with zero point 128, a conv weight scaled along the wrong axis, an unquantized residual Add
    (of the conv, which only the Add reads, and a float tensor)."""
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
        helper.make_node("Relu", ["shortcut"], ["r"], name="relu"),
        helper.make_node("Add", ["c", "r"], ["y"], name="residual_add"),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, 8, 8]) for name, channels in (("x", 2), ("shortcut", 4))]
    graph = helper.make_graph(
        nodes, "bad", inputs,
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


# --- transformer graphs -------------------------------------------------------------------------

# Hugging Face image transformers beside the registry (its text families: tests/test_export_transformer.py).
HF_IMAGE_SPECS = [
    "hf-config:vit(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=4)",
    "hf-config:convnext(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2)",
]
IMAGE_FACTS = DataFacts(in_channels=1, num_classes=10, image_size=8)


def token_inputs(task: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of 4 × 10 tokens of `token_facts`' vocabulary, one row right-padded."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 64, (4, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if task == "seq2seq":
        batch["decoder_input_ids"] = torch.randint(3, 64, (4, 5), generator=generator)
    return batch


def tensorrt_export(spec: str, facts: DataFacts, digits, path):
    """`spec` built for `facts`, quantized with the tensorrt profile as the qat stage does, exported as the
    export stage does, and checked for parity; returns (the file, how many Linear/Conv layers it has)."""
    torch.manual_seed(0)
    model = build_model(spec, facts).eval()
    text = facts.inputs == "tokens"
    batches = [token_inputs(facts.task, seed) for seed in range(2)] if text else [digits.train.tensors[0][:64]]
    example = batches[0] if text else batches[0][:2]
    quantized = quantize(model, batches, profile="tensorrt", module_swap=needs_module_swap(model, example)).eval()
    if text:
        export_sequence_model(quantized, path, SEQUENCE_FAMILIES.get(facts.task, "encoder"), example=example)
        sequence_parity(quantized, path, batches, min_agreement=0.99)
    else:
        export_onnx(quantized, path, example)
        parity(quantized, path, [digits.val.tensors[0][:64]], min_agreement=0.99)
    layers = sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in float_model(quantized).modules())
    return path, layers


def dq_fed_layers(proto: onnx.ModelProto) -> int:
    """Conv/Gemm/MatMul nodes whose weight is a DequantizeLinear of a constant int8 tensor."""
    initializers = {t.name: t for t in proto.graph.initializer}
    producer = {out: n for n in proto.graph.node for out in n.output}
    count = 0
    for node in proto.graph.node:
        source = producer.get(node.input[1]) if node.op_type in ("Conv", "Gemm", "MatMul") else None
        if source is not None and source.op_type == "DequantizeLinear" and source.input[0] in initializers:
            count += initializers[source.input[0]].data_type == TensorProto.INT8
    return count


@pytest.mark.parametrize("spec", [card_of(name).tiny for name in models.names()] + HF_IMAGE_SPECS)
def test_every_model_quantized_for_tensorrt_exports_with_parity_and_lints_clean(spec, digits, tmp_path):
    """Every registered model (convnets, vit_s, bert_s, gpt_s, t5_s) and the Hugging Face image transformers:
    symmetric int8 Q/DQ on every Linear/Conv's input and weight, nothing TensorRT would reject or run slowly."""
    if spec.startswith("hf-config:"):
        pytest.importorskip("transformers")
    name = spec.split("(")[0]
    facts = IMAGE_FACTS if spec.startswith("hf-config:") else card_facts(name)
    path, layers = tensorrt_export(spec, facts, digits, tmp_path / "model.onnx")
    assert lint_tensorrt(path) == []
    assert dq_fed_layers(onnx.load(path)) == layers  # every Linear and Conv (a ConvNeXt's depthwise ones too) reads an int8 weight


@pytest.fixture(scope="module")
def gpt_s_file(tmp_path_factory, digits):
    spec = card_of("gpt_s").tiny
    path, _ = tensorrt_export(spec, card_facts("gpt_s"), digits, tmp_path_factory.mktemp("gpt_s") / "gpt_s.onnx")
    return path


class Graph:
    """An exported file to break by hand, one edit at a time."""

    def __init__(self, path):
        self.proto = onnx.load(path)
        self.nodes = list(self.proto.graph.node)
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.initializers = {t.name: t for t in self.proto.graph.initializer}

    def first(self, op_type: str, where=lambda node: True) -> onnx.NodeProto:
        return next(n for n in self.nodes if n.op_type == op_type and where(n))

    def weighted_matmul(self, square: bool = False) -> onnx.NodeProto:
        """A Linear's MatMul: its weight a DequantizeLinear of a (square) initializer."""
        def is_linear(node):
            source = self.producer.get(node.input[1])
            weight = self.initializers.get(source.input[0]) if source is not None and source.op_type == "DequantizeLinear" else None
            return weight is not None and (not square or weight.dims[0] == weight.dims[1])
        return self.first("MatMul", is_linear)

    def add_initializer(self, array: np.ndarray, name: str) -> str:
        self.proto.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def quantize_input(self, node: onnx.NodeProto, index: int = 0) -> None:
        """Put a symmetric int8 Q/DQ pair on one input of `node`."""
        scale, zero = self.add_initializer(np.array(0.05, np.float32), "hand_scale"), self.add_initializer(np.array(0, np.int8), "hand_zero")
        source = node.input[index]
        q = helper.make_node("QuantizeLinear", [source, scale, zero], [f"{source}_hand_q"], name="hand_quantize")
        dq = helper.make_node("DequantizeLinear", [f"{source}_hand_q", scale, zero], [f"{source}_hand_dq"], name="hand_dequantize")
        position = list(self.proto.graph.node).index(node)
        self.proto.graph.node.insert(position, dq)
        self.proto.graph.node.insert(position, q)
        node.input[index] = dq.output[0]


def asymmetric_activation(graph: Graph) -> str:
    quantize = graph.first("QuantizeLinear")
    quantize.input[2] = graph.add_initializer(np.array(3, np.int8), "asymmetric_zero")
    return quantize.name


def one_matmul_input_float(graph: Graph) -> str:
    matmul = graph.weighted_matmul()
    matmul.input[0] = graph.producer[graph.producer[matmul.input[0]].input[0]].input[0]  # around its Q → DQ
    return matmul.name


def weight_scales_on_input_features(graph: Graph) -> str:
    dequantize = graph.producer[graph.weighted_matmul(square=True).input[1]]
    next(a for a in dequantize.attribute if a.name == "axis").i = 0  # MatMul's weight is (K, N): N is axis 1
    return dequantize.name


def quantize_into(op_type: str, where=lambda graph, node: True):
    def edit(graph: Graph) -> str:
        node = graph.first(op_type, lambda n: n.input[0] not in graph.initializers and where(graph, n))
        graph.quantize_input(node)
        return node.name

    return edit


def feeds_layernorm(graph: Graph, node: onnx.NodeProto) -> bool:
    return any(n.op_type == "LayerNormalization" and node.output[0] in n.input for n in graph.nodes)


# edit → (rule, severity): each finding names the node the edit broke.
BREAKS = {
    "asymmetric activation": (asymmetric_activation, "nonzero-zero-point", "error"),
    "one matmul input float": (one_matmul_input_float, "partially-quantized", "error"),
    "wrong weight axis": (weight_scales_on_input_features, "per-channel-axis", "error"),
    "quantized softmax input": (quantize_into("Softmax"), "quantized-softmax-input", "warning"),
    "quantized layernorm input": (quantize_into("LayerNormalization"), "quantized-layernorm-input", "warning"),
    "quantized residual": (quantize_into("Add", feeds_layernorm), "quantized-transformer-residual", "warning"),
}


def check_exit_code(path) -> int:
    from edgekd.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(path), "--target", "tensorrt"])
    return exit_info.value.code


@pytest.mark.parametrize("broken", BREAKS, ids=list(BREAKS))
def test_a_hand_broken_transformer_graph_gets_the_named_finding_and_check_exits_accordingly(broken, gpt_s_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # wide enough that rich does not fold the table
    edit, rule, severity = BREAKS[broken]
    graph = Graph(gpt_s_file)
    node = edit(graph)
    findings = lint_tensorrt(graph.proto)
    assert [(f.rule, f.node, f.severity) for f in findings] == [(rule, node, severity)]
    onnx.save(graph.proto, tmp_path / "broken.onnx")
    assert check_exit_code(tmp_path / "broken.onnx") == (1 if severity == "error" else 0)
    assert rule in " ".join(capsys.readouterr().out.split())
    assert check_exit_code(gpt_s_file) == 0


def test_a_quantizer_without_zero_point_is_uint8_for_tensorrt(gpt_s_file):
    graph = Graph(gpt_s_file)
    quantize = graph.first("QuantizeLinear")
    del quantize.input[2]
    assert ("uint8-qdq", quantize.name) in {(f.rule, f.node) for f in lint_tensorrt(graph.proto)}


def test_the_weight_axis_is_read_through_a_transpose(gpt_s_file):
    """A (N, K) weight stored as Linear keeps it, transposed on its way to MatMul: its scales run along axis 0."""
    graph = Graph(gpt_s_file)
    matmul = graph.weighted_matmul(square=True)
    dequantize = graph.producer[matmul.input[1]]
    stored = graph.initializers[dequantize.input[0]]
    stored.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(stored).T.copy(), stored.name))
    axis = next(a for a in dequantize.attribute if a.name == "axis")
    axis.i = 0
    transpose = helper.make_node("Transpose", [dequantize.output[0]], ["weight_transposed"], name="weight_transpose", perm=[1, 0])
    graph.proto.graph.node.insert(list(graph.proto.graph.node).index(matmul), transpose)
    matmul.input[1] = "weight_transposed"
    assert lint_tensorrt(graph.proto) == []
    axis.i = 1
    assert [(f.rule, f.node) for f in lint_tensorrt(graph.proto)] == [("per-channel-axis", dequantize.name)]
