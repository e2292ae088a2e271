"""What a bench run produced, and its JSON form (schema "edgekd.bench/1").

Top-level keys: schema, environment, settings, models, results (one per model × batch, with
all statistics and the raw latencies in ms), ratios (each model vs the first, per batch),
peak (the machine's measured GEMM peak, when efficiency was computed), board (Jetson power
mode and clocks, when on a Jetson), notes (what was skipped, and why)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekd.bench.backends.base import BackendOptions, OpShare
from edgekd.bench.inputs import InputSpec
from edgekd.bench.stats import CV_UNSTABLE, PERCENTILE_METHOD_NAME, Ratio, Summary
from edgekd.bench.timing import Timing, TimingSettings

SCHEMA = "edgekd.bench/1"
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
# Relative systematic difference between two sessions of one model (see stats.py); ratio
# intervals are widened by it on each side.
SESSION_RESOLUTION = 0.05
INTERLEAVE = (
    "rotating blocks: each round times a block of k consecutive runs of every model (k per model, "
    "from its warm-up latency, for about {rounds} rounds), the first model of the round rotating"
)
SPINNING = {
    "stop": "ONNX Runtime threads spin during a run and stop as it returns (session.force_spinning_stop=1), so "
    "an idle session never busy-waits on the cores the next model needs; same setting alone or interleaved",
    "off": "ONNX Runtime threads never spin (session.intra_op.allow_spinning=0)",
    "on": "ONNX Runtime's default: idle threads busy-wait for the next run (single model only)",
}


@dataclass(frozen=True)
class BenchSettings:
    backend: str
    options: BackendOptions
    timing: TimingSettings
    threads_effective: int
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "batch_sizes": list(self.options.batch_sizes),
            "threads": self.options.threads,
            "threads_effective": self.threads_effective,
            "graph_optimization": self.options.graph_optimization,
            "providers": list(self.options.providers),
            "precision": self.options.precision,
            **self.timing.to_json(),
            "stop_rule": "per model: at least min_iterations runs and min_duration_s of measured time",
            "interleave": INTERLEAVE.format(rounds=self.timing.target_rounds),
            "spinning": self.options.spinning,
            "spinning_note": SPINNING[self.options.spinning],
            "gc": "paused while timing",
            "inputs": self.options.inputs.to_json(),
            "latency": "wall clock of one call (time.perf_counter), ms",
            "throughput": "samples/s = batch × runs / measured time",
            "percentile_method": PERCENTILE_METHOD_NAME,
            "std": "sample standard deviation (n - 1)",
            "cv_unstable_above": CV_UNSTABLE,
            "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "confidence": CONFIDENCE, "seed": self.seed},
            "ratio_resolution": SESSION_RESOLUTION,
            "ratio_interval": "bootstrap percentile interval widened by ratio_resolution on each side, for the "
            "systematic difference between two sessions of one model (memory layout); bootstrap_ci_* are unwidened",
        }


@dataclass(frozen=True)
class ModelRecord:
    name: str
    source: str
    backend: str
    creation_s: float
    inputs: tuple[InputSpec, ...]
    description: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "backend": self.backend,
            "session_creation_ms": self.creation_s * 1e3,
            "inputs": [spec.to_json() for spec in self.inputs],
            "description": self.description,
        }


@dataclass(frozen=True)
class CaseResult:
    """One model at one batch size."""

    model: str
    batch: int
    timing: Timing
    latency: Summary
    device_latency: Summary | None = None
    memory: dict[str, Any] | None = None
    roofline: dict[str, Any] | None = None
    profile: tuple[OpShare, ...] | None = None
    jetson: dict[str, Any] | None = None

    @property
    def throughput(self) -> float:
        return self.batch * self.timing.runs / self.timing.measured_s

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "batch": self.batch,
            "latency_ms": self.latency.to_json(),
            "cv": self.latency.cv,
            "unstable": self.latency.unstable,
            "throughput_per_s": self.throughput,
            "runs": self.timing.runs,
            "measured_s": self.timing.measured_s,
            "warmup_runs": self.timing.warmup_runs,
            "block_size": self.timing.block_size,
            "rounds": int(self.timing.blocks_s.shape[0]),
            "first_inference_ms": self.timing.first_call_s * 1e3,
            "device_latency_ms": self.device_latency.to_json() if self.device_latency else None,
            "memory": self.memory,
            "roofline": self.roofline,
            "profile": [op.to_json() for op in self.profile] if self.profile is not None else None,
            "jetson": self.jetson,
            "latencies_ms": [round(v * 1e3, 6) for v in self.timing.blocks_s.ravel().tolist()],
        }


@dataclass(frozen=True)
class RatioResult:
    batch: int
    model: str
    reference: str
    ratio: Ratio

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "model": self.model, "reference": self.reference, **self.ratio.to_json()}


@dataclass(frozen=True)
class BenchResult:
    environment: dict[str, Any]
    settings: BenchSettings
    models: tuple[ModelRecord, ...]
    cases: tuple[CaseResult, ...]
    ratios: tuple[RatioResult, ...]
    peak: dict[str, Any] | None = None
    board: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()

    def case(self, model: str, batch: int) -> CaseResult:
        return next(c for c in self.cases if c.model == model and c.batch == batch)

    def ratio(self, model: str, batch: int) -> Ratio:
        return next(r.ratio for r in self.ratios if r.model == model and r.batch == batch)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "environment": {**self.environment, "threads": self.settings.threads_effective},
            "settings": self.settings.to_json(),
            "models": [m.to_json() for m in self.models],
            "results": [c.to_json() for c in self.cases],
            "ratios": [r.to_json() for r in self.ratios],
            "peak": self.peak,
            "board": self.board,
            "notes": list(self.notes),
        }
