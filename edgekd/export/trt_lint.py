"""A TensorRT readiness check for Q/DQ ONNX files that runs without TensorRT.

TensorRT's explicit quantization accepts only symmetric int8 Q/DQ (zero point 0),
per-channel scales along a weight's output-channel axis, and fuses a layer into an
int8 kernel only when its data input and weight come from DequantizeLinear.

The same rules cover transformer graphs: a Linear exports as MatMul or Gemm on a constant
(dequantized) weight, and is checked like a Conv — Q/DQ on both inputs, the weight's scales
along its output features (MatMul's stored (K, N) weight: axis 1; Gemm: axis 0 with transB).
Attention's activation × activation MatMuls (QKᵀ, PV) may stay float, or be quantized on both
inputs. TensorRT's transformer guidance keeps the rest of a block float: LayerNormalization
and Softmax compute in float (an int8 input only loses precision: the residual stream's and the
attention scores' outliers are what int8 clips), and a transformer's residual Add belongs to the
float residual stream, which TensorRT fuses into the preceding GEMM's epilogue. ONNX Runtime
contrib ops (MatMulNBits for int4 weights) are errors: TensorRT cannot parse them.

Errors are what TensorRT rejects, or int8 the graph asks for and TensorRT cannot give (a layer
quantized on one input only runs in float, paying for the Q/DQ); warnings are what it runs in
higher precision or with extra reformatting (slowly).

Every finding names its node and rule:

>>> from onnx import TensorProto, helper, numpy_helper
>>> import numpy as np
>>> graph = helper.make_graph(
...     [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
...      helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
...     "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
...     [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")])
>>> for finding in lint_tensorrt(helper.make_model(graph)):
...     print(finding.severity, finding.rule, finding.node)
error uint8-qdq QuantizeLinear(q)
error nonzero-zero-point QuantizeLinear(q)
error uint8-qdq DequantizeLinear(y)
error nonzero-zero-point DequantizeLinear(y)
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
# Q/DQ types TensorRT's explicit quantization takes (int8 here; fp8 and int4 on newer GPUs).
TENSORRT_QDQ_TYPES = (np.int8,)
# Ops that compute in float in a TensorRT transformer: a DequantizeLinear feeding them only costs precision.
FLOAT_OPS = {
    "LayerNormalization": ("quantized-layernorm-input", "the residual stream"),
    "Softmax": ("quantized-softmax-input", "the attention scores"),
}


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


def _quantized_type(model: _Model, node: onnx.NodeProto) -> np.dtype | None:
    """The integer type of a Q/DQ pair: its zero point's; without one, QuantizeLinear outputs uint8
    (ONNX's default) and DequantizeLinear reads its input's type."""
    if len(node.input) > 2 and node.input[2]:
        zero_point = model.constant(node.input[2])
        return None if zero_point is None else zero_point.dtype
    if node.op_type == "QuantizeLinear":
        return np.dtype(np.uint8)
    data = model.constant(node.input[0])
    if data is not None:
        return data.dtype
    source = model.producer.get(node.input[0])
    return _quantized_type(model, source) if source is not None and source.op_type == "QuantizeLinear" else None


def _check_qdq_types(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    findings = []
    zero_point = model.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    dtype = _quantized_type(model, node)
    if dtype == np.uint8:
        missing = "" if zero_point is not None else " (no zero point given: ONNX then quantizes to uint8)"
        findings.append(Finding("error", "uint8-qdq", _name(node), f"uint8 quantization{missing}: TensorRT supports only int8 Q/DQ"))
    elif dtype is not None and dtype not in TENSORRT_QDQ_TYPES:
        findings.append(Finding("error", "unsupported-qdq-type", _name(node),
                                f"{dtype} quantization: TensorRT's explicit quantization takes int8 Q/DQ (an int32 bias is left float)"))
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


def _weight_consumers(model: _Model, name: str, axis: int) -> list[tuple[onnx.NodeProto, int, int]]:
    """(consumer, input index, the per-channel axis as the consumer sees it): through Transposes,
    which move the axis (the exporter puts one between a Linear's weight and its MatMul)."""
    found = []
    for consumer, index in model.consumers.get(name, []):
        if consumer.op_type == "Transpose":
            perm = next((list(a.ints) for a in consumer.attribute if a.name == "perm"), None)
            moved = perm.index(axis) if perm else None
            found += _weight_consumers(model, consumer.output[0], moved) if moved is not None else []
        else:
            found.append((consumer, index, axis))
    return found


def _check_axis(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    """A per-channel DequantizeLinear feeding a weight must scale its output channels."""
    scale = model.constant(node.input[1])
    weight = model.constant(node.input[0])
    if scale is None or scale.size <= 1:
        return []
    rank = weight.ndim if weight is not None else 2
    findings = []
    for consumer, index, axis in _weight_consumers(model, node.output[0], _attribute(node, "axis", 1) % max(rank, 1)):
        expected = _expected_weight_axis(consumer, rank) if index == 1 else None
        if expected is not None and axis != expected:
            findings.append(Finding(
                "error", "per-channel-axis", _name(node),
                f"per-channel axis {axis} does not match the weight layout of {consumer.op_type} {_name(consumer)!r} "
                f"(output channels are axis {expected})",
            ))
    return findings


def _check_weighted(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    quantized = [model.from_dq(name) for name in node.input[:2]]
    if any(quantized) and not all(quantized):
        side = "weight" if quantized[0] else "input"
        return [Finding(
            "error", "partially-quantized", _name(node),
            f"only one input of {node.op_type} comes from DequantizeLinear (its {side} does not): TensorRT runs a layer in "
            "int8 only when its input and weight are both quantized, so this one runs in float and its Q/DQ only lose precision",
        )]  # fmt: skip
    if node.op_type == "MatMul" and not any(model.is_weight(name) for name in node.input[:2]):
        return []  # activation × activation (attention's QKᵀ and PV), both float: TensorRT runs it at the build's float precision
    findings = []
    for index, role in ((0, "input"), (1, "weight")):
        if len(node.input) > index and not model.from_dq(node.input[index]):
            findings.append(Finding(
                "warning", f"unquantized-{role}", _name(node),
                f"the {role} of {node.op_type} does not come from DequantizeLinear, so TensorRT runs this layer in higher precision",
            ))
    return findings


def _after_conv(model: _Model, name: str) -> bool:
    """Whether `name` is a Conv's (→ BatchNorm's) output that only the Add reads: one TensorRT can fuse the
    Add into (a conv whose output other layers read too, like a ConvNeXt stage's downsampling, cannot)."""
    node = model.producer.get(name)
    if node is not None and node.op_type == "BatchNormalization" and len(model.consumers.get(name, [])) == 1:
        name, node = node.input[0], model.producer.get(node.input[0])
    return node is not None and node.op_type in ("Conv", "ConvTranspose") and len(model.consumers.get(name, [])) == 1


def _check_add(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    """A residual Add after a Conv (→ BatchNorm); Adds in a transformer's residual stream feed LayerNorm, not a conv fusion."""
    inputs = [name for name in node.input if model.constant(name) is None]
    if len(inputs) < 2 or any(model.from_dq(name) for name in inputs) or not any(_after_conv(model, n) for n in inputs):
        return []
    return [Finding("warning", "unquantized-residual", _name(node),
                    "neither input of this Add is quantized: TensorRT cannot fuse it into the preceding Conv "
                    "(quantize the residual input)")]


def _feeds(model: _Model, name: str, op_type: str) -> bool:
    """Whether tensor `name` reaches an `op_type` node directly, through data movement, or through further Adds."""
    pending, seen = [name], {name}
    while pending:
        for consumer, _ in model.consumers.get(pending.pop(), []):
            if consumer.op_type == op_type:
                return True
            if consumer.op_type in COMMUTING_OPS + ("Add",) and consumer.output[0] not in seen:
                seen.add(consumer.output[0])
                pending.append(consumer.output[0])
    return False


def _check_transformer_residual(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    """A transformer's residual Add — its sum flows on to a LayerNormalization — with a quantized input."""
    quantized = [name for name in node.input if model.constant(name) is None and model.from_dq(name)]
    if not quantized or not _feeds(model, node.output[0], "LayerNormalization"):
        return []
    return [Finding("warning", "quantized-transformer-residual", _name(node),
                    "an input of this residual Add comes from DequantizeLinear: in a transformer the residual stream stays "
                    "float (TensorRT adds it in the preceding GEMM's epilogue), and int8 clips its outliers")]


def _check_float_op(model: _Model, node: onnx.NodeProto) -> list[Finding]:
    """LayerNormalization and Softmax read float: a DequantizeLinear right before them is wasted precision."""
    rule, what = FLOAT_OPS[node.op_type]
    if not node.input or not model.from_dq(node.input[0]):
        return []
    return [Finding("warning", rule, _name(node),
                    f"the input of {node.op_type} comes from DequantizeLinear: TensorRT computes {node.op_type} in float, so "
                    f"quantizing {what} before it only adds rounding error (quantize the matmuls' inputs after it instead)")]


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
            findings += _check_add(graph, node) + _check_transformer_residual(graph, node)
        if node.op_type in FLOAT_OPS:
            findings += _check_float_op(graph, node)
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
