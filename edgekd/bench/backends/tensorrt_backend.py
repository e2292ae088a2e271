"""The TensorRT backend (NVIDIA GPUs and Jetson; TensorRT 10 and 11 Python APIs).

Builds an engine from the ONNX file, or loads it from the cache folder, where engines are
keyed by the model file's hash, the TensorRT version, the GPU name, the shape profile and
the builder flags; a timing cache per TensorRT version and GPU makes rebuilds fast.

Precision. TensorRT 10 builds weakly typed networks: builder-config flags allow lower
precision kernels, and an explicitly quantized model (Q/DQ nodes) needs INT8 set (FP16 lets
the layers between Q/DQ pairs run in half precision). TensorRT 11 builds only strongly typed
networks: each tensor's precision is the model's, and the precision flags are gone.

Timing. Host latency (what the harness times) = copy inputs to the GPU + execute_async_v3 +
copy outputs back + synchronize; device time = CUDA events around execute_async_v3 alone.
Buffers and events come from torch.cuda."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench.backends.base import Backend, BackendOptions, Runner, backends
from edgekd.bench.backends.torch_backend import CudaEventLog
from edgekd.bench.environment import user_cache_dir
from edgekd.bench.inputs import InputSpec
from edgekd.bench.onnxfile import graph_input_specs, has_qdq, load_graph
from edgekd.bench.timing import Target
from edgekd.errors import EdgekdError, InputError

Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
WORKSPACE_BYTES = 1 << 30


def tensorrt_major(version: str) -> int:
    return int(version.split(".")[0])


def builder_flags(tensorrt_version: str, explicit_quantization: bool, precision: str) -> tuple[str, ...]:
    """Names of the trt.BuilderFlag members to set (see the module docstring)."""
    if tensorrt_major(tensorrt_version) >= 11:
        if precision != "auto":
            raise InputError(
                f"TensorRT {tensorrt_version} builds strongly typed networks, where precision comes from the model's "
                f"tensor types: --precision {precision} cannot apply. Convert or quantize the model before export, "
                "and leave --precision auto"
            )
        return ()
    if precision == "auto":
        return ("INT8", "FP16") if explicit_quantization else ()
    return {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]


def shape_profile(specs: tuple[InputSpec, ...], options: BackendOptions, model: str) -> Profile:
    """min / opt / max shapes of every input with a dynamic dim: smallest batch, then the
    largest twice (kernels are tuned for the largest batch benched)."""
    low = options.inputs.shapes_for(specs, min(options.batch_sizes), model)
    high = options.inputs.shapes_for(specs, max(options.batch_sizes), model)
    dynamic = [spec.name for spec in specs if not all(isinstance(d, int) for d in spec.shape)]
    return {name: (low[name], high[name], high[name]) for name in dynamic}


def engine_cache_key(model: Path, tensorrt_version: str, gpu: str, profile: Profile, flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    with open(model, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    build = {"tensorrt": tensorrt_version, "gpu": gpu, "profile": profile, "flags": flags}
    digest.update(json.dumps(build, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def engine_path(cache_dir: Path, model: Path, key: str) -> Path:
    return cache_dir / f"{model.stem}.{key}.engine"


def timing_cache_path(cache_dir: Path, tensorrt_version: str, gpu: str) -> Path:
    return cache_dir / f"timing-{tensorrt_version}-{re.sub(r'[^A-Za-z0-9.]+', '_', gpu)}.cache"


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise InputError(
            f"the tensorrt backend needs NVIDIA TensorRT's Python package, which cannot be imported here ({exc}). "
            "It runs on an NVIDIA GPU or Jetson with TensorRT 10 or later (pip install 'edgekd[tensorrt]'); "
            "on this machine bench with --backend onnxruntime"
        ) from None
    if tensorrt_major(tensorrt.__version__) < 10:
        raise InputError(f"the tensorrt backend needs TensorRT 10 or later; found {tensorrt.__version__}")
    return tensorrt


def import_cuda_torch() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise InputError("the tensorrt backend needs a CUDA GPU visible to torch (torch.cuda.is_available() is False)")
    return torch


class TensorRTRunner(Runner):
    def __init__(
        self, trt: Any, torch: Any, runtime: Any, engine: Any, specs: tuple[InputSpec, ...], info: dict[str, Any]
    ):
        self.trt, self.torch = trt, torch
        self.runtime, self.engine = runtime, engine  # the runtime must outlive its engine
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.input_specs = specs
        self.info = info
        self.events = CudaEventLog()

    def bind(self, inputs: dict[str, np.ndarray]) -> Target:
        torch, context, stream = self.torch, self.context, self.stream
        for name, array in inputs.items():
            context.set_input_shape(name, array.shape)
        host_in = {name: torch.from_numpy(array).pin_memory() for name, array in inputs.items()}
        device_in = {name: host.to("cuda") for name, host in host_in.items()}
        device_out = {name: self._output_buffer(name) for name in self._names(self.trt.TensorIOMode.OUTPUT)}
        host_out = {name: torch.empty(t.shape, dtype=t.dtype).pin_memory() for name, t in device_out.items()}
        for name, tensor in {**device_in, **device_out}.items():
            context.set_tensor_address(name, tensor.data_ptr())

        def call() -> object:
            start, end = self.events.pair()
            with torch.cuda.stream(stream):
                for name, host in host_in.items():
                    device_in[name].copy_(host, non_blocking=True)
                start.record(stream)
                context.execute_async_v3(stream.cuda_stream)
                end.record(stream)
                for name, device in device_out.items():
                    host_out[name].copy_(device, non_blocking=True)
            stream.synchronize()
            return host_out

        return Target(call, self.events.drain_ms)

    def describe(self) -> dict[str, Any]:
        return self.info

    def _names(self, mode: Any) -> list[str]:
        names = (self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors))
        return [name for name in names if self.engine.get_tensor_mode(name) == mode]

    def _output_buffer(self, name: str) -> Any:
        shape = tuple(self.context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise EdgekdError(f"output {name!r} has a data-dependent shape {shape}, which this backend cannot bench")
        dtype = self.torch.from_numpy(np.empty(0, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
        return self.torch.empty(shape, dtype=dtype, device="cuda")


@backends.register(name="tensorrt")
class TensorRTBackend(Backend):
    name = "tensorrt"

    def load(self, model: Any, options: BackendOptions) -> Runner:
        trt = import_tensorrt()
        torch = import_cuda_torch()
        path = Path(model)
        graph = load_graph(path)
        specs = graph_input_specs(graph)
        profile = shape_profile(specs, options, str(path))
        flags = builder_flags(trt.__version__, has_qdq(graph), options.precision)
        gpu = torch.cuda.get_device_name(0)
        folder = options.cache_dir or user_cache_dir() / "tensorrt"
        engine_file = engine_path(folder, path, engine_cache_key(path, trt.__version__, gpu, profile, flags))
        cached = engine_file.exists()
        logger = trt.Logger(trt.Logger.WARNING)
        if not cached:
            timing_cache = timing_cache_path(folder, trt.__version__, gpu)
            _write_atomic(engine_file, build_engine(trt, logger, path, profile, flags, timing_cache))
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(engine_file.read_bytes())
        if engine is None:
            raise EdgekdError(f"TensorRT could not load the engine {engine_file}; delete it to rebuild it")
        info = {
            "runtime": f"TensorRT {trt.__version__}",
            "gpu": gpu,
            "engine": str(engine_file),
            "engine_cache": "hit" if cached else "built",
            "engine_bytes": engine_file.stat().st_size,
            "activation_bytes": _activation_bytes(engine),
            "builder_flags": list(flags),
            "strongly_typed": tensorrt_major(trt.__version__) >= 11,
            "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()},
            "timing": "host latency = H2D + execute_async_v3 + D2H + sync; device time = CUDA events around execute",
        }
        return TensorRTRunner(trt, torch, runtime, engine, specs, info)


def network_flags(trt: Any) -> int:
    """Explicit batch is the only mode since TensorRT 10; 11 builds strongly typed networks."""
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(strongly_typed) if strongly_typed is not None and tensorrt_major(trt.__version__) >= 11 else 0


def build_engine(
    trt: Any, logger: Any, path: Path, profile: Profile, flags: tuple[str, ...], timing_cache: Path
) -> bytes:
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT cannot parse {str(path)!r}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if profile:
        shapes = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.items():
            shapes.set_shape(name, low, opt, high)
        config.add_optimization_profile(shapes)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgekdError(f"TensorRT could not build an engine for {str(path)!r}; its log above says why")
    _write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _activation_bytes(engine: Any) -> int:
    """Scratch memory for activations: device_memory_size_v2 where present (TensorRT ≥ 10.1)."""
    size = getattr(engine, "device_memory_size_v2", None)
    return int(engine.device_memory_size if size is None else size)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
