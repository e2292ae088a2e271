"""Finishing a Q/DQ graph exported from a fake-quant model, so the file holds what
the device runs: int8 weights instead of float weights followed by QuantizeLinear,
and (for runtimes with integer kernels) int32 biases with scale = input scale × weight scale.

The quantization arithmetic is ONNX's: q = saturate(round_half_even(x / scale) + zero_point)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def quantize_array(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear on arrays: per-tensor for scalar scales, else along `axis`."""
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    info = np.iinfo(zero_point.dtype)
    rounded = np.rint(x.astype(np.float32) / scale.astype(np.float32)) + zero_point.astype(np.int64)
    return np.clip(rounded, info.min, info.max).astype(zero_point.dtype)


class _Graph:
    """Initializers and producers of one ONNX graph, for small rewrites."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.producer = {out: node for node in self.graph.node for out in node.output}

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def add_initializer(self, array: np.ndarray, name: str) -> str:
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.initializers[name] = tensor
        return name

    def remove_unused_initializers(self) -> None:
        used = {name for node in self.graph.node for name in node.input} | {o.name for o in self.graph.output}
        keep = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)


def bypass_constant_identities(model: onnx.ModelProto) -> None:
    """The TorchScript exporter shares a repeated constant (a zero point) through Identity nodes; read it directly."""
    graph = _Graph(model)
    outputs = {o.name for o in model.graph.output}
    alias = {
        node.output[0]: node.input[0]
        for node in model.graph.node
        if node.op_type == "Identity" and node.input[0] in graph.initializers and node.output[0] not in outputs
    }
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def fold_weight_quantization(model: onnx.ModelProto) -> int:
    """QuantizeLinear(float initializer) → an int8 initializer feeding the DequantizeLinear. Returns how many."""
    graph = _Graph(model)
    folded = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        x, scale, zero_point = (graph.constant(name) for name in node.input[:3])
        if x is None or scale is None or zero_point is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        graph.add_initializer(quantize_array(x, scale, zero_point, axis), node.output[0])
        folded.append(node)
    for node in folded:
        model.graph.node.remove(node)
    graph.remove_unused_initializers()
    return len(folded)


def quantize_biases(model: onnx.ModelProto) -> int:
    """Float biases of Conv/Gemm whose input and weight come from DequantizeLinear → int32 + DequantizeLinear."""
    graph = _Graph(model)
    count = 0
    for node in list(model.graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        bias = graph.constant(node.input[2])
        sources = [graph.producer.get(name) for name in node.input[:2]]
        if bias is None or not all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            continue
        input_scale, weight_scale = (graph.constant(s.input[1]) for s in sources)  # type: ignore[union-attr]
        if input_scale is None or weight_scale is None or input_scale.size != 1:
            continue
        scale = (input_scale.astype(np.float32) * weight_scale.astype(np.float32)).reshape(-1)
        scale = np.broadcast_to(scale, bias.shape).copy()
        prefix = f"{node.output[0]}_bias"  # per node: the exporter shares equal bias tensors between layers
        q = graph.add_initializer(quantize_array(bias, scale, np.zeros(bias.shape, np.int32), axis=0), f"{prefix}_int32")
        s = graph.add_initializer(scale, f"{prefix}_int32_scale")
        z = graph.add_initializer(np.zeros(bias.shape, np.int32), f"{prefix}_int32_zero_point")
        dequantized = f"{prefix}_dequantized"
        model.graph.node.insert(
            list(model.graph.node).index(node),
            helper.make_node("DequantizeLinear", [q, s, z], [dequantized], name=f"{prefix}_DequantizeLinear", axis=0),
        )
        node.input[2] = dequantized
        count += 1
    graph.remove_unused_initializers()
    return count


def fold_weight_transposes(model: onnx.ModelProto) -> int:
    """DequantizeLinear(constant weight) → Transpose becomes one DequantizeLinear of the transposed
    weight, its per-channel axis moved along: the TorchScript exporter puts this Transpose between
    a Linear's weight and its MatMul whenever the Linear reads a 3-D tensor. Returns how many."""
    graph = _Graph(model)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    folded = []
    for node in model.graph.node:
        weight = graph.constant(node.input[0]) if node.op_type == "DequantizeLinear" else None
        consumers = users.get(node.output[0], []) if weight is not None else []
        if len(consumers) != 1 or consumers[0].op_type != "Transpose" or node.output[0] in outputs:
            continue
        transpose = consumers[0]
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), list(range(weight.ndim))[::-1])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % weight.ndim
        node.input[0] = graph.add_initializer(np.ascontiguousarray(weight.transpose(perm)), f"{node.input[0]}_transposed")
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("axis", perm.index(axis)))
        node.output[0] = transpose.output[0]
        folded.append(transpose)
    for transpose in folded:
        model.graph.node.remove(transpose)
    graph.remove_unused_initializers()
    return len(folded)


def finish_qdq(model: onnx.ModelProto, *, int32_bias: bool) -> dict[str, int]:
    """All rewrites in order; returns how many weights, biases and weight transposes were converted."""
    bypass_constant_identities(model)
    report = {"int8_weights": fold_weight_quantization(model)}
    if int32_bias:
        report["int32_biases"] = quantize_biases(model)
    report["transposes_folded"] = fold_weight_transposes(model)
    return report
