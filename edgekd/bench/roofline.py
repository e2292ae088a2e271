"""How close a model runs to what this machine can compute: multiply-accumulates (MACs)
counted from the ONNX graph, achieved GMAC/s from the median latency, and efficiency
against this machine's measured peak, a dense fp32 GEMM (numpy matmul, n=1024, with the
bench's thread count), cached per CPU model and thread count in ~/.cache/edgekd/peak.json.

MACs per node, from shapes inferred at the benched input shapes:
  Conv, ConvInteger, QLinearConv   prod(output) × prod(weight.shape[1:])   (C_in/groups × kernel)
  ConvTranspose                    prod(input) × prod(weight.shape[1:])
  Gemm, MatMul, MatMulInteger, QLinearMatMul   prod(output) × K
Other ops (elementwise, pooling, normalisation) are memory-bound and not counted. Int8 ops
count like fp32 ones, so a quantized model can exceed the fp32 peak."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from threadpoolctl import threadpool_limits

from edgekd.bench.environment import cpu_model, user_cache_dir

# op type → index of its weight / first operand input
CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
MATMUL_OPS = frozenset({"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"})
PEAK_MATRIX = 1024
PEAK_SECONDS = 0.3
PEAK_METHOD = f"numpy float32 matmul {PEAK_MATRIX}x{PEAK_MATRIX}, best of repeats over {PEAK_SECONDS} s"


@dataclass(frozen=True)
class MacCount:
    total: int
    by_op: dict[str, int]
    uncounted: tuple[str, ...]  # compute nodes whose shapes could not be inferred

    def to_json(self) -> dict[str, Any]:
        return {"macs": self.total, "macs_by_op": self.by_op, "uncounted_nodes": list(self.uncounted)}


def count_macs(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]]) -> MacCount:
    """MACs of one inference at `input_shapes` (every graph input's concrete shape)."""
    shapes = _inferred_shapes(_with_input_shapes(model, input_shapes))
    by_op: dict[str, int] = {}
    uncounted = []
    for node in model.graph.node:
        if node.op_type not in CONV_WEIGHT and node.op_type not in MATMUL_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            uncounted.append(node.name or node.op_type)
        else:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return MacCount(sum(by_op.values()), by_op, tuple(uncounted))


def efficiency(macs: int, median_s: float, peak_gmacs: float | None) -> dict[str, Any]:
    achieved = macs / median_s / 1e9
    return {
        "gmacs_per_s": achieved,
        "peak_gmacs_per_s": peak_gmacs,
        "efficiency": achieved / peak_gmacs if peak_gmacs else None,
    }


def peak_gmacs(threads: int) -> dict[str, Any]:
    """This machine's dense-GEMM peak at `threads` threads, measured once and cached."""
    cache = user_cache_dir() / "peak.json"
    key = f"{cpu_model()}|{threads} threads"
    known = _read_json(cache)
    if key not in known:
        known[key] = {"gmacs_per_s": measure_peak_gmacs(threads), "method": PEAK_METHOD, "threads": threads}
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + f".{os.getpid()}.partial")
        partial.write_text(json.dumps(known, indent=1))
        os.replace(partial, cache)
    return {**known[key], "cache": str(cache), "key": key}


def measure_peak_gmacs(threads: int) -> float:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((PEAK_MATRIX, PEAK_MATRIX), dtype=np.float32) for _ in range(2))
    best = math.inf
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b)  # warm-up: thread pool start, page faults
        deadline = time.perf_counter() + PEAK_SECONDS
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            np.matmul(a, b)
            best = min(best, time.perf_counter() - start)
    return PEAK_MATRIX**3 / best / 1e9


def _with_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, input_shapes[value.name]):
                dim.Clear()
                dim.dim_value = size
    return fixed


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    shapes = {init.name: tuple(init.dims) for init in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    if node.op_type in CONV_WEIGHT:
        weight = shapes.get(node.input[CONV_WEIGHT[node.op_type]])
        counted = shapes.get(node.input[0] if node.op_type == "ConvTranspose" else node.output[0])
        return math.prod(counted) * math.prod(weight[1:]) if weight and counted else None
    first, output = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not first or output is None:
        return None
    transposed = node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)
    inner = first[0] if transposed or len(first) == 1 else first[-1]
    return math.prod(output) * inner


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
