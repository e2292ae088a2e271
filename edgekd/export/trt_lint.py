"""A TensorRT readiness check for Q/DQ ONNX files that runs without TensorRT.

TensorRT's explicit quantization accepts only symmetric int8 Q/DQ (zero point 0),
per-channel scales along a weight's output-channel axis, and fuses a layer into an
int8 kernel only when its data input and weight come from DequantizeLinear.

The same rules cover transformer graphs: a Linear exports as MatMul or Gemm on a constant
(dequantized) weight, and is checked like a Conv. Attention's activation × activation MatMuls
are not weighted layers (TensorRT runs them at the build's float precision), and ONNX Runtime
contrib ops (MatMulNBits for int4 weights) are errors: TensorRT cannot parse them.

Errors are what TensorRT rejects; warnings are what it runs in higher precision or
with extra reformatting (slowly).

>>> from onnx import TensorProto, helper, numpy_helper
>>> import numpy as np
>>> graph = helper.make_graph(
...     [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
...      helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
...     "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
...     [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")])
>>> sorted({f.rule for f in lint_tensorrt(helper.make_model(graph))})
['nonzero-zero-point', 'uint8-qdq']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from edgekd.errors import InputError
from edgekd.registry import Registry

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
ORT_DOMAIN = "com.microsoft"  # e.g. MatMulNBits (int4 weight-only): ONNX Runtime runs it, TensorRT cannot parse it
# Ops TensorRT moves Q/DQ across (they commute with quantization) — only when the scales match.
COMMUTING_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather")


@dataclass(frozen=True)
class Finding:
    severity: Literal["error", "warning"]
    rule: str
    node: str
    message: str


class _Model:
    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in self.nodes:
            for index, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, index))

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        if node is not None and node.op_type == "Identity":
            return self.constant(node.input[0])
        return None

    def is_weight(self, name: str) -> bool:
        """A constant, or DequantizeLinear of a constant, possibly through ops TensorRT moves Q/DQ across."""
        while self.constant(name) is None:
            node = self.producer.get(name)
            if node is not None and node.op_type == "DequantizeLinear":
                return self.constant(node.input[0]) is not None
            if node is None or node.op_type not in COMMUTING_OPS:
                return False
            name = node.input[0]
        return True

    def from_dq(self, name: str) -> bool:
        """Produced by DequantizeLinear, directly or through ops TensorRT moves it across — such as the
        Transpose between a Linear's weight and its MatMul when the Linear reads a 3-D or 4-D tensor."""
        node = self.producer.get(name)
        while node is not None and node.op_type in COMMUTING_OPS:
            node = self.producer.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"


def _name(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}({node.output[0]})"


def _attribute(node: onnx.NodeProto, key: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == key), default)


def _check_qdq_types(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    findings = []
    zero_point = model.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zero_point is not None and zero_point.dtype == np.uint8:
        findings.append(Finding("error", "uint8-qdq", _name(node), "uint8 quantization: TensorRT supports only int8 Q/DQ"))
    if zero_point is not None and np.any(zero_point != 0):
        findings.append(Finding("error", "nonzero-zero-point", _name(node),
                                "non-zero zero point: TensorRT supports only symmetric quantization (zero point 0)"))
    return findings


def _expected_weight_axis(consumer: onnx.NodeProto, rank: int) -> int | None:
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if _attribute(consumer, "transB", 0) else 1
    if consumer.op_type == "MatMul":
        return rank - 1
    return None


def _check_axis(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    """A per-channel DequantizeLinear feeding a weight must scale its output channels."""
    scale = model.constant(node.input[1])
    weight = model.constant(node.input[0])
    if scale is None or scale.size <= 1:
        return []
    rank = weight.ndim if weight is not None else 2
    axis = _attribute(node, "axis", 1) % max(rank, 1)
    findings = []
    for consumer, index in model.consumers.get(node.output[0], []):
        expected = _expected_weight_axis(consumer, rank) if index == 1 else None
        if expected is not None and axis != expected:
            findings.append(Finding(
                "error", "per-channel-axis", _name(node),
                f"per-channel axis {axis} does not match the weight layout of {consumer.op_type} {_name(consumer)!r} "
                f"(output channels are axis {expected})",
            ))
    return findings


def _check_weighted(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    if node.op_type == "MatMul" and not any(model.is_weight(name) for name in node.input[:2]):
        return []  # activation × activation (attention's QKᵀ and PV): TensorRT runs it at the build's float precision
    findings = []
    for index, role in ((0, "input"), (1, "weight")):
        if len(node.input) > index and not model.from_dq(node.input[index]):
            findings.append(Finding(
                "warning", f"unquantized-{role}", _name(node),
                f"the {role} of {node.op_type} does not come from DequantizeLinear, so TensorRT runs this layer in higher precision",
            ))
    return findings


def _after_conv(model: _Model, name: str) -> bool:
    node = model.producer.get(name)
    if node is not None and node.op_type == "BatchNormalization":
        node = model.producer.get(node.input[0])
    return node is not None and node.op_type in ("Conv", "ConvTranspose")


def _check_add(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    """A residual Add after a Conv (→ BatchNorm); Adds in a transformer's residual stream feed LayerNorm, not a conv fusion."""
    inputs = [name for name in node.input if model.constant(name) is None]
    if len(inputs) < 2 or any(model.from_dq(name) for name in inputs) or not any(_after_conv(model, n) for n in inputs):
        return []
    return [Finding("warning", "unquantized-residual", _name(node),
                    "neither input of this Add is quantized: TensorRT cannot fuse it into the preceding Conv "
                    "(quantize the residual input)")]


def _check_requantization(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    """DQ → data-movement op → Q with a different scale: Q/DQ cannot move across it, so it runs in float."""
    op = model.producer.get(node.input[0])
    if op is None or op.op_type not in COMMUTING_OPS:
        return []
    source = model.producer.get(op.input[0])
    if source is None or source.op_type != "DequantizeLinear":
        return []
    before, after = model.constant(source.input[1]), model.constant(node.input[1])
    if before is None or after is None or np.array_equal(before, after):
        return []
    return [Finding("warning", "requantize-breaks-fusion", _name(op),
                    f"{op.op_type} sits between DequantizeLinear and QuantizeLinear with different scales "
                    f"({float(before.flatten()[0]):.4g} → {float(after.flatten()[0]):.4g}); TensorRT must requantize here")]


def lint_tensorrt(model: str | Path | onnx.ModelProto) -> list[Finding]:
    """Everything in a Q/DQ ONNX model that TensorRT's explicit quantization rejects or runs slowly."""
    proto = model if isinstance(model, onnx.ModelProto) else _load(Path(model))
    graph = _Model(proto)
    findings: list[Finding] = []
    for node in graph.nodes:
        if node.domain == ORT_DOMAIN:
            findings.append(Finding("error", "onnxruntime-only-op", _name(node),
                                    f"{node.op_type} is an ONNX Runtime contrib op (com.microsoft), which TensorRT's parser rejects"))
        if node.op_type in QDQ_OPS:
            findings += _check_qdq_types(graph, node)
        if node.op_type == "DequantizeLinear":
            findings += _check_axis(graph, node)
        if node.op_type == "QuantizeLinear":
            findings += _check_requantization(graph, node)
        if node.op_type in WEIGHTED_OPS:
            findings += _check_weighted(graph, node)
        if node.op_type == "Add":
            findings += _check_add(graph, node)
    return findings


def _load(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf decode errors have no common base
        raise InputError(f"model file {str(path)!r} is not an ONNX model: {exc}") from None


# `edgekd check --target NAME`: what each deployment target's lint is.
targets: Registry[Callable[[onnx.ModelProto], list[Finding]]] = Registry("check target")
targets.register(lint_tensorrt, name="tensorrt")
