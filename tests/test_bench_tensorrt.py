"""The TensorRT backend's logic that runs without TensorRT: precision flags per TensorRT
version, the shape profile from --batch, the engine cache key, and the error without it."""

import importlib.util

import numpy as np
import pytest

from edgekd.bench.backends import BackendOptions, backends
from edgekd.bench.backends.tensorrt_backend import (
    builder_flags,
    engine_cache_key,
    engine_path,
    shape_profile,
    timing_cache_path,
)
from edgekd.bench.inputs import InputPlan, InputSpec
from edgekd.errors import InputError

IMAGE = InputSpec("x", ("batch", 3, 224, 224), np.dtype(np.float32))
TOKENS = InputSpec("ids", ("batch", "sequence"), np.dtype(np.int64))
STATIC = InputSpec("scale", (1,), np.dtype(np.float32))


@pytest.mark.parametrize(
    "version, qdq, precision, flags",
    [
        ("10.3.0", True, "auto", ("INT8", "FP16")),  # explicit quantization needs INT8 on weakly typed TRT 10
        ("10.3.0", False, "auto", ()),
        ("10.9.1", False, "fp16", ("FP16",)),
        ("10.9.1", False, "int8", ("INT8", "FP16")),
        ("11.0.0", True, "auto", ()),  # strongly typed: the model's types decide, the flags are gone
    ],
)
def test_builder_flags_per_version(version, qdq, precision, flags):
    assert builder_flags(version, qdq, precision) == flags


def test_tensorrt_11_refuses_a_precision_flag():
    with pytest.raises(InputError, match="strongly typed"):
        builder_flags("11.1.0", explicit_quantization=False, precision="fp16")


def test_shape_profile_spans_the_batch_sizes_with_opt_at_the_largest():
    options = BackendOptions(batch_sizes=(8, 1, 64))
    profile = shape_profile((IMAGE, STATIC), options, "model.onnx")
    assert profile == {"x": ((1, 3, 224, 224), (64, 3, 224, 224), (64, 3, 224, 224))}  # static inputs need none


def test_shape_profile_takes_other_dynamic_dims_from_input_shapes():
    options = BackendOptions(batch_sizes=(1, 4), inputs=InputPlan({"ids": (1, 128)}))
    assert shape_profile((TOKENS,), options, "bert.onnx") == {"ids": ((1, 128), (4, 128), (4, 128))}
    with pytest.raises(InputError, match=r"bert.onnx: input 'ids' has dynamic dimension\(s\) \[1\]"):
        shape_profile((TOKENS,), BackendOptions(batch_sizes=(1, 4)), "bert.onnx")


def test_engine_cache_key_changes_with_model_version_gpu_profile_and_flags(tmp_path):
    model = tmp_path / "student.onnx"
    model.write_bytes(b"weights v1")
    profile = {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (4, 3, 8, 8))}
    key = engine_cache_key(model, "10.3.0", "NVIDIA H100", profile, ("INT8",))
    assert key == engine_cache_key(model, "10.3.0", "NVIDIA H100", profile, ("INT8",))  # stable
    variants = {
        engine_cache_key(model, "10.4.0", "NVIDIA H100", profile, ("INT8",)),
        engine_cache_key(model, "10.3.0", "Orin (nvgpu)", profile, ("INT8",)),
        engine_cache_key(model, "10.3.0", "NVIDIA H100", {"x": ((1, 3, 8, 8),) * 3}, ("INT8",)),
        engine_cache_key(model, "10.3.0", "NVIDIA H100", profile, ()),
    }
    model.write_bytes(b"weights v2")
    variants.add(engine_cache_key(model, "10.3.0", "NVIDIA H100", profile, ("INT8",)))
    assert key not in variants and len(variants) == 5
    assert engine_path(tmp_path, model, key) == tmp_path / f"student.{key}.engine"
    assert timing_cache_path(tmp_path, "10.3.0", "Orin (nvgpu)").name == "timing-10.3.0-Orin_nvgpu_.cache"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_the_backend_says_what_is_needed(tmp_path):
    with pytest.raises(InputError, match="needs NVIDIA TensorRT's Python package.*--backend onnxruntime"):
        backends.get("tensorrt")().load(tmp_path / "model.onnx", BackendOptions())


@pytest.mark.parametrize("precision", ["fp8", "double"])
def test_unknown_precision_is_an_input_error(precision):
    with pytest.raises(InputError, match=f"precision '{precision}'"):
        BackendOptions(precision=precision)
