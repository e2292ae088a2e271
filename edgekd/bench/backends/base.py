"""What a bench backend is: `load(model, options) -> Runner`; a Runner binds inputs to a
zero-argument call the timing core times. Session creation time and first-inference time
are measured by the harness around `load` and the first call, the same way for every backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekd.bench.inputs import InputPlan, InputSpec
from edgekd.bench.timing import Target
from edgekd.errors import InputError
from edgekd.registry import Registry, load_callable, unknown_name

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
# on: ORT's default (idle threads busy-wait for the next run); off: threads block when idle;
# stop: threads spin during a run and stop as it returns (session.force_spinning_stop).
SPINNING_MODES = ("on", "off", "stop")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class BackendOptions:
    """Settings every backend receives; each uses those that apply to it (describe() says which).

    threads: intra-op threads (None: the runtime's default). providers: ONNX Runtime execution
    providers in priority order. batch_sizes: the batch sizes benched (TensorRT's shape profile).
    cache_dir: TensorRT engine and timing caches. precision: TensorRT 10 builder precision.
    inputs: where input data and dynamic dims come from (TensorRT's shape profile needs them)."""

    threads: int | None = None
    graph_optimization: str = "all"
    providers: tuple[str, ...] = ("cpu",)
    spinning: str = "stop"
    batch_sizes: tuple[int, ...] = (1,)
    cache_dir: Path | None = None
    precision: str = "auto"
    inputs: InputPlan = field(default_factory=InputPlan)

    def __post_init__(self) -> None:
        _require_choice("graph optimization level", self.graph_optimization, GRAPH_OPTIMIZATIONS)
        _require_choice("spinning mode", self.spinning, SPINNING_MODES)
        _require_choice("precision", self.precision, PRECISIONS)
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be ≥ 1 (got {self.threads})")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InputError(f"batch sizes must be positive integers (got {list(self.batch_sizes)})")
        for name in self.providers:
            if name.lower() not in PROVIDER_ALIASES and name not in PROVIDER_ALIASES.values():
                message = unknown_name("execution provider", name, PROVIDER_ALIASES)
                raise InputError(f"{message} (Or their ONNX Runtime names, e.g. CUDAExecutionProvider.)")

    @property
    def cpu_only(self) -> bool:
        return all(PROVIDER_ALIASES.get(p.lower(), p) == PROVIDER_ALIASES["cpu"] for p in self.providers)

    def to_json(self) -> dict[str, Any]:
        cache_dir = str(self.cache_dir) if self.cache_dir else None
        return {**asdict(self), "cache_dir": cache_dir, "inputs": self.inputs.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackendOptions:
        return cls(
            **{
                **data,
                "providers": tuple(data["providers"]),
                "batch_sizes": tuple(data["batch_sizes"]),
                "cache_dir": Path(data["cache_dir"]) if data["cache_dir"] else None,
                "inputs": InputPlan.from_json(data["inputs"]),
            }
        )


@dataclass(frozen=True)
class OpShare:
    """One node of a per-node profile: mean time per run and share of all kernel time."""

    node: str
    op_type: str
    mean_ms: float
    share: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Runner:
    """A loaded model. Subclasses set `input_specs` (empty when the model declares none) and
    implement `bind` and `describe`."""

    input_specs: tuple[InputSpec, ...] = ()

    def bind(self, inputs: dict[str, np.ndarray]) -> Target:
        """Place the inputs where the model reads them; the returned call runs one inference."""
        raise NotImplementedError

    def run(self, inputs: dict[str, np.ndarray]) -> object:
        return self.bind(inputs).call()

    def describe(self) -> dict[str, Any]:
        """Settings in effect (threads, providers, arena, precision…) for the JSON report."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model and undo process-wide settings made by `load`."""


class Backend:
    """A way to run models. `profile` is optional: backends with one set `has_profile`."""

    name: ClassVar[str]
    has_profile: ClassVar[bool] = False
    # Whether it runs ONNX files (what a recipe's bench stage times) or only Python objects.
    reads_onnx: ClassVar[bool] = True

    def load(self, model: Any, options: BackendOptions) -> Runner:
        raise NotImplementedError

    def profile(self, model: Any, options: BackendOptions, inputs: dict[str, np.ndarray], runs: int) -> list[OpShare]:
        """The slowest nodes over `runs` inferences (only where `has_profile`)."""
        raise NotImplementedError


backends: Registry[type[Backend]] = Registry("bench backend")


def backend_class(name: str) -> type[Backend]:
    """A registered backend by name, or your own Backend subclass as "pkg.module:Class"."""
    if ":" not in name:
        return backends.get(name)
    found = load_callable(name)
    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise InputError(f"bench backend {name!r} is not a subclass of edgekd.bench.Backend")
    return found


def _require_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(unknown_name(what, value, choices))
