"""Bench backends: `backends.get("onnxruntime")()` gives a Backend. Built in: onnxruntime,
tensorrt (needs TensorRT and a CUDA GPU) and torch (eager nn.Module, Python API only).
TensorRT and torch are imported when their backend loads a model, not with this package."""

from edgekd.bench.backends import onnxruntime_backend, tensorrt_backend, torch_backend  # noqa: F401  (registration)
from edgekd.bench.backends.base import Backend, BackendOptions, OpShare, Runner, backends

__all__ = ["Backend", "BackendOptions", "OpShare", "Runner", "backends"]
