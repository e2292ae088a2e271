"""Block-wise int4 weights in ONNX: ONNX Runtime's MatMulNBits (com.microsoft, bits=4).

An int4 weight-only model (`edgekd.quant.swap.insert_int4_weights`) is exported in two steps:
its int4 layers are replaced by plain layers holding their dequantized weights and the
model is traced as a float model; then every MatMul/Gemm whose weight equals one of those
dequantized weights (bit for bit) becomes a MatMulNBits holding the very integers and
scales the PyTorch model computed with. Matching by value, not by name, survives the
exporter's renaming and transposing of constants.

MatMulNBits layout (onnxruntime ≥ 1.17; `bias` input from 1.20): B is (N, k_blocks, block_size/2)
uint8, two 4-bit codes per byte, the first in the low nibble; scales are (N, k_blocks); with no
zero_points input the zero point is 8, so a code c means (c - 8)·scale — symmetric int4 stored as q + 8.

>>> codes = np.array([[[-8, 7, 0, -1]]], dtype=np.int8)
>>> pack_int4(codes)
array([[[240, 120]]], dtype=uint8)
>>> unpack_int4(pack_int4(codes)).tolist()
[[[-8, 7, 0, -1]]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.quant.swap import int4_codes, int4_layers, strip_fake_quant

MS_DOMAIN = "com.microsoft"
ZERO_POINT = 8


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """Codes in [-8, 7], (..., even count) → uint8 (..., count/2): low nibble first."""
    stored = (codes.astype(np.int16) + ZERO_POINT).astype(np.uint8)
    return (stored[..., 0::2] | (stored[..., 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    low, high = packed & 0x0F, packed >> 4
    return (np.stack([low, high], axis=-1).reshape(*packed.shape[:-1], -1).astype(np.int16) - ZERO_POINT).astype(np.int8)


@dataclass(frozen=True)
class PackedWeight:
    """One int4 layer as MatMulNBits stores it."""

    name: str
    in_features: int  # K
    out_features: int  # N
    block_size: int
    packed: np.ndarray  # (N, k_blocks, block_size/2) uint8
    scales: np.ndarray  # (N, k_blocks) float32


def materialized_int4(model: nn.Module) -> tuple[nn.Module, dict[bytes, PackedWeight]]:
    """A float copy of an int4 model computing with its dequantized weights, and each layer's
    packed form keyed by the bytes of its dequantized weight in MatMul's (K, N) layout."""
    plain = strip_fake_quant(model)
    packed: dict[bytes, PackedWeight] = {}
    for name, layer in int4_layers(model).items():
        codes, scales = int4_codes(layer)
        dequantized = layer.quantized_weight().detach()
        target = plain.get_submodule(name)
        with torch.no_grad():
            target.weight = nn.Parameter(dequantized.clone())  # also unties a weight shared with an embedding
        matmul_b = dequantized if layer.weight_fq.scheme.axis == 1 else dequantized.t()  # (K, N)
        weight = PackedWeight(
            name, matmul_b.shape[0], matmul_b.shape[1], codes.shape[-1],
            pack_int4(codes.cpu().numpy()), scales.float().cpu().numpy(),
        )  # fmt: skip
        packed[matmul_b.float().cpu().contiguous().numpy().tobytes()] = weight
    return plain, packed


def replace_with_matmul_nbits(model: onnx.ModelProto, packed: dict[bytes, PackedWeight], accuracy_level: int) -> int:
    """Turn MatMul/Gemm nodes whose constant weight is a packed layer into MatMulNBits, folding
    a following bias Add; returns how many. Every packed layer must be found."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: set[str] = set()
    replacements: list[tuple[list[onnx.NodeProto], onnx.NodeProto]] = []
    for node in list(graph.node):
        matched = _matched_weight(node, initializers, packed)
        if matched is None:
            continue
        weight, bias = matched
        folded: list[onnx.NodeProto] = []
        if bias is None:
            bias, folded = _bias_add(node, initializers, consumers, weight.out_features)
        output = folded[-1].output[0] if folded else node.output[0]
        replacements.append(([node, *folded], _matmul_nbits(graph, node, weight, bias, accuracy_level, output)))
        found.add(weight.name)
    for old, new in replacements:
        graph.node.insert(list(graph.node).index(old[0]), new)
        for node in old:
            graph.node.remove(node)
    missing = sorted({w.name for w in packed.values()} - found)
    if missing:
        raise EdgekdError(f"int4 export: layer(s) {', '.join(missing)} were not found as MatMul/Gemm weights in the traced graph")
    used = {name for n in graph.node for name in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(replacements)


def _matched_weight(
    node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], packed: dict[bytes, PackedWeight]
) -> tuple[PackedWeight, str | None] | None:
    """(packed layer, Gemm's bias input or None) for a MatMul/Gemm on a packed weight."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in initializers:
        return None
    b = numpy_helper.to_array(initializers[node.input[1]])
    if b.ndim != 2 or b.dtype != np.float32:
        return None
    bias = None
    if node.op_type == "Gemm":
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
            return None
        if attributes.get("transB", 0):
            b = b.T
        if len(node.input) > 2 and node.input[2]:
            bias = node.input[2]
    weight = packed.get(np.ascontiguousarray(b).tobytes())
    return None if weight is None else (weight, bias)


def _bias_add(
    node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], consumers: dict[str, list[onnx.NodeProto]], n: int
) -> tuple[str | None, list[onnx.NodeProto]]:
    """The constant [N] bias of an Add that alone consumes a MatMul's output, to fold into MatMulNBits."""
    users = consumers.get(node.output[0], [])
    if node.op_type != "MatMul" or len(users) != 1 or users[0].op_type != "Add":
        return None, []
    add = users[0]
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    if other in initializers and tuple(initializers[other].dims) == (n,):
        return other, [add]
    return None, []


def _matmul_nbits(
    graph: onnx.GraphProto, node: onnx.NodeProto, weight: PackedWeight, bias: str | None, accuracy_level: int, output: str
) -> onnx.NodeProto:
    prefix = f"{node.output[0]}_int4"  # output names are unique; the node is named after its PyTorch layer
    graph.initializer.append(numpy_helper.from_array(weight.packed, f"{prefix}_B"))
    graph.initializer.append(numpy_helper.from_array(weight.scales.astype(np.float32), f"{prefix}_scales"))
    inputs = [node.input[0], f"{prefix}_B", f"{prefix}_scales"] + (["", "", bias] if bias else [])
    return helper.make_node(
        "MatMulNBits", inputs, [output], name=weight.name, domain=MS_DOMAIN,
        K=weight.in_features, N=weight.out_features, bits=4, block_size=weight.block_size, accuracy_level=accuracy_level,
    )  # fmt: skip


def packed_weights(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (codes (N, k_blocks, block_size) int8, scales) of every MatMulNBits node, by node name
    (for an edgekd export: the qualified name of the PyTorch layer)."""
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {
        node.name: (unpack_int4(initializers[node.input[1]]), initializers[node.input[2]])
        for node in model.graph.node if node.op_type == "MatMulNBits"
    }  # fmt: skip


