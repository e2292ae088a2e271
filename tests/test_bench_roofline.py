"""MAC counts on small ONNX graphs worked out by hand; efficiency; the cached GEMM peak."""

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.bench import roofline
from edgekd.bench.onnxfile import load_graph
from edgekd.errors import InputError


def make_model(nodes, inputs, outputs, weights):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in weights.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_relu_gemm_macs_by_hand():
    # Conv 3→8, 3×3, pad 1 on 32×32: output 8×32×32 = 8192 values, each 3×3×3 = 27 MACs → 221,184.
    # Global pool → Flatten → Gemm 8→10: 10 outputs × 8 = 80. Relu and pooling are not counted.
    model = make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
        ],
        [("x", ["batch", 3, 32, 32])], ["y"], {"w": (8, 3, 3, 3), "fc": (10, 8)},
    )  # fmt: skip
    count = roofline.count_macs(model, {"x": (1, 3, 32, 32)})
    assert count.by_op == {"Conv": 221_184, "Gemm": 80} and count.total == 221_264 and not count.uncounted
    assert roofline.count_macs(model, {"x": (4, 3, 32, 32)}).total == 4 * 221_264


def test_strided_depthwise_conv_and_batched_matmul():
    # Depthwise 3×3 stride 2 on 8×16×16, pad 1: output 8×8×8 = 512 values × (1 × 3 × 3) = 4,608.
    # MatMul [2, 5, 6] × [6, 7]: output 2×5×7 = 70 values × K = 6 → 420.
    model = make_model(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("MatMul", ["a", "b"], ["z"]),
        ],
        [("x", [1, 8, 16, 16]), ("a", [2, 5, 6])], ["y", "z"], {"w": (8, 1, 3, 3), "b": (6, 7)},
    )  # fmt: skip
    count = roofline.count_macs(model, {"x": (1, 8, 16, 16), "a": (2, 5, 6)})
    assert count.by_op == {"Conv": 4_608, "MatMul": 420}


def test_gemm_with_transposed_a():
    # A stored as [K=6, M=4], transA: output 4×3 = 12 values × K = 6 → 72.
    model = make_model(
        [helper.make_node("Gemm", ["a", "b"], ["y"], transA=1)], [("a", [6, 4])], ["y"], {"b": (6, 3)}
    )
    assert roofline.count_macs(model, {"a": (6, 4)}).total == 72


def test_efficiency_against_peak():
    result = roofline.efficiency(macs=2_000_000, median_s=0.001, peak_gmacs=8.0)
    assert result["gmacs_per_s"] == pytest.approx(2.0) and result["efficiency"] == pytest.approx(0.25)
    assert roofline.efficiency(2_000_000, 0.001, None)["efficiency"] is None


def test_peak_is_measured_once_and_cached_per_cpu_and_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = roofline.peak_gmacs(threads=1)
    cache = tmp_path / "edgekd" / "peak.json"
    stored = json.loads(cache.read_text())
    assert first["gmacs_per_s"] > 0.1 and first["key"] in stored and first["key"].endswith("|1 threads")
    stored[first["key"]]["gmacs_per_s"] = 123.0  # a cached value is used as is
    cache.write_text(json.dumps(stored))
    assert roofline.peak_gmacs(threads=1)["gmacs_per_s"] == 123.0


def test_graph_reader_names_a_corrupt_or_missing_file(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(InputError, match="broken.onnx' is not an ONNX model, or the file is corrupt"):
        load_graph(broken)
    with pytest.raises(InputError, match="gone.onnx' does not exist"):
        load_graph(tmp_path / "gone.onnx")
