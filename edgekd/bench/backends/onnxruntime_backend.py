"""The ONNX Runtime backend: intra-op threads, graph optimization level, execution providers
in priority order (CUDA / TensorRT only where this onnxruntime build has them), IOBinding
on GPU providers so inputs and outputs stay on the device, and a per-node profile from
ORT's own profiler."""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from edgekd.bench.backends.base import PROVIDER_ALIASES, Backend, BackendOptions, OpShare, Runner, backends
from edgekd.bench.inputs import InputSpec
from edgekd.bench.onnxfile import require_file
from edgekd.bench.timing import Target
from edgekd.errors import InputError

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.InvalidProtobuf,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
)
# ORT type strings whose numpy name differs from the part inside 'tensor(...)'.
ORT_DTYPES = {"float": np.float32, "double": np.float64}
TOP_NODES = 10


def provider_names(requested: tuple[str, ...]) -> list[str]:
    """ORT provider names in priority order, CPU last as the fallback for unsupported nodes."""
    names = [PROVIDER_ALIASES.get(name.lower(), name) for name in requested]
    available = ort.get_available_providers()
    missing = [name for name in names if name not in available]
    if missing:
        raise InputError(
            f"execution provider(s) {', '.join(missing)} not available in onnxruntime {ort.__version__} here "
            f"(available: {', '.join(available)}); CUDA and TensorRT need the onnxruntime-gpu package and an NVIDIA GPU"
        )
    return names if "CPUExecutionProvider" in names else [*names, "CPUExecutionProvider"]


def session_options(options: BackendOptions) -> ort.SessionOptions:
    """A default `ort.SessionOptions()` with only what `options` asks for changed (execution is
    sequential and graph optimization `all` by default): what a deployed app runs."""
    settings = ort.SessionOptions()
    settings.intra_op_num_threads = options.threads or 0  # 0: ORT's default, one per physical core
    settings.graph_optimization_level = OPTIMIZATION_LEVELS[options.graph_optimization]
    if options.spinning == "off":
        settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if options.spinning == "stop":
        settings.add_session_config_entry("session.force_spinning_stop", "1")
    return settings


def session_options_text(options: BackendOptions) -> str:
    """What differs from a default `ort.SessionOptions()` with the CPU provider — what a deployed app
    gets unless it sets something."""
    changed = []
    if options.threads:
        changed.append(f"intra_op_num_threads={options.threads}")
    if options.graph_optimization != "all":
        changed.append(f"graph_optimization_level={options.graph_optimization}")
    if options.spinning == "off":
        changed.append("session.intra_op.allow_spinning=0")
    if options.spinning == "stop":
        changed.append("session.force_spinning_stop=1")
    if not options.cpu_only:
        changed.append(f"providers={','.join(options.providers)}")
    return "ONNX Runtime defaults" + (f" except {', '.join(changed)}" if changed else "")


def create_session(path: Path, settings: ort.SessionOptions, options: BackendOptions) -> ort.InferenceSession:
    require_file(path)
    providers = provider_names(options.providers)
    try:
        return ort.InferenceSession(str(path), settings, providers=providers)
    except LOAD_ERRORS as exc:
        raise InputError(f"{str(path)!r} is not an ONNX model ONNX Runtime can load, or it is corrupt: {exc}") from None


def input_spec(arg: Any) -> InputSpec:
    inner = arg.type.removeprefix("tensor(").removesuffix(")")
    try:
        dtype = np.dtype(ORT_DTYPES.get(inner, inner))
    except TypeError:
        raise InputError(f"model input {arg.name!r} has type {arg.type}, which numpy cannot feed") from None
    return InputSpec(arg.name, tuple(arg.shape), dtype)


class OnnxRuntimeRunner(Runner):
    def __init__(self, session: ort.InferenceSession, settings: ort.SessionOptions, options: BackendOptions):
        self.session = session
        self.settings = settings
        self.options = options
        self.input_specs = tuple(input_spec(arg) for arg in session.get_inputs())
        self.on_gpu = session.get_providers()[0] in GPU_PROVIDERS

    def bind(self, inputs: dict[str, np.ndarray]) -> Target:
        if not self.on_gpu:
            return Target(partial(self.session.run, None, inputs))
        binding = self.session.io_binding()
        for name, array in inputs.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        for output in self.session.get_outputs():
            binding.bind_output(output.name, "cuda")
        return Target(partial(self.session.run_with_iobinding, binding))

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": f"onnxruntime {ort.__version__}",
            "session_options": session_options_text(self.options),
            "providers": self.session.get_providers(),
            "intra_op_threads": self.options.threads or "default (one per physical core)",
            "graph_optimization": self.options.graph_optimization,
            "spinning": self.options.spinning,
            "io_binding": self.on_gpu,
            "arena": {
                "cpu_mem_arena": self.settings.enable_cpu_mem_arena,
                "mem_pattern": self.settings.enable_mem_pattern,
                "arena_extend_strategy": "onnxruntime default (kNextPowerOfTwo)",
            },
        }

    def close(self) -> None:
        del self.session


@backends.register(name="onnxruntime")
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    has_profile = True

    def load(self, model: Any, options: BackendOptions) -> Runner:
        settings = session_options(options)
        return OnnxRuntimeRunner(create_session(Path(model), settings, options), settings, options)

    def profile(self, model: Any, options: BackendOptions, inputs: dict[str, np.ndarray], runs: int) -> list[OpShare]:
        """The slowest nodes over `runs` runs (after one unprofiled warm-up run) of a separate session."""
        settings = session_options(options)
        with tempfile.TemporaryDirectory() as folder:
            settings.enable_profiling = True
            settings.profile_file_prefix = str(Path(folder) / "ort")
            session = create_session(Path(model), settings, options)
            for _ in range(runs + 1):
                session.run(None, inputs)
            events = json.loads(Path(session.end_profiling()).read_text())
        return slowest_nodes(events, skip_runs=1)


def slowest_nodes(events: list[dict[str, Any]], skip_runs: int = 0, top: int = TOP_NODES) -> list[OpShare]:
    """Aggregate ORT profile events per node: mean kernel time per run and share of the total."""
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    counted = run_starts[skip_runs:]
    start = counted[0] if counted else 0
    totals: dict[str, list[Any]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= start:
            node = event["name"].removesuffix("_kernel_time")
            entry = totals.setdefault(node, [event.get("args", {}).get("op_name", "?"), 0])
            entry[1] += event["dur"]
    all_us = sum(dur for _, dur in totals.values()) or 1
    runs = max(len(counted), 1)
    ranked = sorted(totals.items(), key=lambda item: item[1][1], reverse=True)[:top]
    return [OpShare(node, op, dur / runs / 1e3, dur / all_us) for node, (op, dur) in ranked]
