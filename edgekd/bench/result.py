"""What a bench run produced, and its JSON form (schema "edgekd.bench/1").

Top-level keys: schema, mode ("deployment" or "paired"), environment, load_average (the
machine's 1-minute load before and after timing), settings, models, results (one per model ×
batch × condition, with all statistics and the raw latencies in ms), ratios (each model vs the
first, per batch and condition), processes (deployment mode: every fresh process with its pid,
round, position in the round and per-batch median), findings (multi-modality across
processes), peak (the machine's measured GEMM peak, when efficiency was computed), board
(Jetson power mode and clocks, when on a Jetson), notes (what was skipped, and why).

A condition is the session setting that varies between processes of one deployment run: ONNX
Runtime's thread spinning (on, off). A paired run has one."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from edgekd.bench.backends.base import BackendOptions, OpShare
from edgekd.bench.inputs import InputSpec
from edgekd.bench.stats import (
    CV_UNSTABLE,
    MODE_GAP,
    PERCENTILE_METHOD_NAME,
    SPREAD_FLAG,
    Mode,
    Ratio,
    RoundRatio,
    Summary,
    modes,
    multimodality,
    summarize,
)
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
    "on": "ONNX Runtime's default: idle threads busy-wait for the next run",
}
MODES = ("deployment", "paired")
DEPLOYMENT = (
    "each model alone in a fresh process per round ({rounds} rounds, the order of models rotating from round to "
    "round so that drift of the machine is shared); each process loads its model with its session options, then "
    "times every batch size in ascending order, each after its own warm-up"
)


@dataclass(frozen=True)
class BenchSettings:
    """`conditions`: the spinning settings timed (deployment mode: one process each per model and
    round; paired: the one setting of the shared process)."""

    backend: str
    options: BackendOptions
    timing: TimingSettings
    threads_effective: int
    seed: int = 0
    mode: str = "paired"
    rounds: int = 0
    conditions: tuple[str, ...] = ()

    @property
    def spinning_conditions(self) -> tuple[str, ...]:
        return self.conditions or (self.options.spinning,)

    def method(self) -> dict[str, Any]:
        """How models were run against each other, in words, for this mode."""
        if self.mode == "deployment":
            return {
                "deployment": DEPLOYMENT.format(rounds=self.rounds),
                "rounds": self.rounds,
                "ratio": "median over rounds of each round's ratio of per-process medians, with a distribution-free "
                "order-statistic interval for that median (its exact coverage given)",
                "multimodality": f"flagged when per-process medians spread by more than {SPREAD_FLAG:g}× (max / min); "
                f"modes split where sorted medians jump by more than {MODE_GAP:g}×",
            }
        return {
            "interleave": INTERLEAVE.format(rounds=self.timing.target_rounds),
            "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "confidence": CONFIDENCE, "seed": self.seed},
            "ratio_resolution": SESSION_RESOLUTION,
            "ratio_interval": "bootstrap percentile interval widened by ratio_resolution on each side, for the "
            "systematic difference between two sessions of one model (memory layout); bootstrap_ci_* are unwidened",
        }

    def to_json(self) -> dict[str, Any]:
        conditions = self.spinning_conditions
        return {
            "mode": self.mode,
            "backend": self.backend,
            "batch_sizes": list(self.options.batch_sizes),
            "threads": self.options.threads,
            "threads_effective": self.threads_effective,
            "graph_optimization": self.options.graph_optimization,
            "providers": list(self.options.providers),
            "precision": self.options.precision,
            **self.timing.to_json(),
            "stop_rule": "per model (deployment: per process and batch): at least min_iterations runs and "
            "min_duration_s of measured time",
            **self.method(),
            "spinning": conditions[0],
            "spinning_conditions": list(conditions),
            "spinning_note": {condition: SPINNING[condition] for condition in conditions},
            "gc": "paused while timing",
            "inputs": self.options.inputs.to_json(),
            "latency": "wall clock of one call (time.perf_counter), ms",
            "throughput": "samples/s = batch × runs / measured time",
            "percentile_method": PERCENTILE_METHOD_NAME,
            "std": "sample standard deviation (n - 1)",
            "cv_unstable_above": CV_UNSTABLE,
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
    """One model at one batch size, timed in the shared process of a paired run."""

    model: str
    batch: int
    timing: Timing
    latency: Summary
    device_latency: Summary | None = None
    memory: dict[str, Any] | None = None
    roofline: dict[str, Any] | None = None
    profile: tuple[OpShare, ...] | None = None
    jetson: dict[str, Any] | None = None
    condition: str = "stop"

    @property
    def median_ms(self) -> float:
        return self.latency.median

    @property
    def throughput(self) -> float:
        return self.batch * self.timing.runs / self.timing.measured_s

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "batch": self.batch,
            "condition": self.condition,
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
class ProcessRun:
    """One model in one fresh process of a deployment run: where it sat, and what it measured per batch."""

    model: str
    condition: str
    round: int
    position: int  # 0: the first process of its round
    pid: int
    started_s: float  # since the first process of the run started
    creation_s: float
    timings: dict[int, Timing]
    machine: dict[str, float] | None = None  # others' CPU load and steal while it timed (Linux)

    def median_ms(self, batch: int) -> float:
        return float(np.median(self.timings[batch].blocks_s)) * 1e3

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "condition": self.condition, "round": self.round, "position": self.position,
            "pid": self.pid, "started_s": self.started_s, "session_creation_ms": self.creation_s * 1e3,
            "machine": self.machine,
            "batches": {
                str(batch): {
                    "median_ms": self.median_ms(batch), "runs": timing.runs,
                    "first_inference_ms": timing.first_call_s * 1e3, "warmup_runs": timing.warmup_runs,
                }
                for batch, timing in self.timings.items()
            },
        }  # fmt: skip


@dataclass(frozen=True)
class DeployedCase:
    """One model at one batch size under one condition: its fresh processes, one per round."""

    model: str
    batch: int
    condition: str
    processes: tuple[ProcessRun, ...]
    memory: dict[str, Any] | None = None
    roofline: dict[str, Any] | None = None
    profile: tuple[OpShare, ...] | None = None
    jetson: dict[str, Any] | None = None

    @cached_property
    def process_medians_ms(self) -> list[float]:
        return [process.median_ms(self.batch) for process in self.processes]

    @property
    def median_ms(self) -> float:
        """The deployed latency: the median of the per-process medians."""
        return float(np.median(self.process_medians_ms))

    @cached_property
    def latency(self) -> Summary:
        """All processes' runs pooled (a spread of the deployed latency, modes included)."""
        return summarize(np.concatenate([self._timing(p).blocks_s.ravel() for p in self.processes]) * 1e3)

    @cached_property
    def device_latency(self) -> Summary | None:
        """Device-side times pooled over processes (backends that report them: TensorRT)."""
        device = [self._timing(p).device_blocks_ms for p in self.processes]
        if any(d is None for d in device):
            return None
        return summarize(np.concatenate([d.ravel() for d in device if d is not None]))

    @property
    def modes(self) -> list[Mode]:
        return modes(self.process_medians_ms)

    @property
    def finding(self) -> str | None:
        """The processes' disagreement, if any, with what else kept the machine busy in each mode's processes."""
        finding = multimodality(self.process_medians_ms)
        if finding is None or any(p.machine is None for p in self.processes):
            return finding
        loads = []
        for mode in sorted(self.modes, key=lambda m: (-m.count, m.median_ms)):
            inside = [p.machine["others_busy_cores"] for p in self.processes if mode.low_ms <= p.median_ms(self.batch) <= mode.high_ms]  # type: ignore[index]
            loads.append(f"{np.mean(inside):.2f}")
        return f"{finding} (other processes' load, cores: {' / '.join(loads)})"

    @property
    def runs(self) -> int:
        return sum(self._timing(p).runs for p in self.processes)

    @property
    def measured_s(self) -> float:
        return sum(self._timing(p).measured_s for p in self.processes)

    @property
    def throughput(self) -> float:
        return self.batch * self.runs / self.measured_s

    @property
    def first_call_s(self) -> float:
        return float(np.median([self._timing(p).first_call_s for p in self.processes]))

    @property
    def creation_s(self) -> float:
        return float(np.median([p.creation_s for p in self.processes]))

    @property
    def within_process_cv(self) -> float:
        """The median over processes of each one's coefficient of variation."""
        return float(np.median([summarize(self._timing(p).blocks_s).cv for p in self.processes]))

    def _timing(self, process: ProcessRun) -> Timing:
        return process.timings[self.batch]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "batch": self.batch,
            "condition": self.condition,
            "median_ms": self.median_ms,
            "process_medians_ms": self.process_medians_ms,
            "pids": [p.pid for p in self.processes],
            "modes": [m.to_json() for m in self.modes],
            "finding": self.finding,
            "latency_ms": self.latency.to_json(),
            "within_process_cv": self.within_process_cv,
            "device_latency_ms": self.device_latency.to_json() if self.device_latency else None,
            "throughput_per_s": self.throughput,
            "runs": self.runs,
            "measured_s": self.measured_s,
            "processes": len(self.processes),
            "first_inference_ms": self.first_call_s * 1e3,
            "session_creation_ms": self.creation_s * 1e3,
            "memory": self.memory,
            "roofline": self.roofline,
            "profile": [op.to_json() for op in self.profile] if self.profile is not None else None,
            "jetson": self.jetson,
            "latencies_ms": [round(v, 6) for p in self.processes for v in (self._timing(p).blocks_s.ravel() * 1e3).tolist()],
        }


Case = CaseResult | DeployedCase


@dataclass(frozen=True)
class RatioResult:
    batch: int
    model: str
    reference: str
    ratio: Ratio | RoundRatio
    condition: str = "stop"

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch, "condition": self.condition, "model": self.model, "reference": self.reference,
            **self.ratio.to_json(),
        }  # fmt: skip


@dataclass(frozen=True)
class BenchResult:
    environment: dict[str, Any]
    settings: BenchSettings
    models: tuple[ModelRecord, ...]
    cases: tuple[Case, ...]
    ratios: tuple[RatioResult, ...]
    peak: dict[str, Any] | None = None
    board: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    processes: tuple[ProcessRun, ...] = ()
    load_average: dict[str, list[float]] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def conditions(self) -> tuple[str, ...]:
        return self.settings.spinning_conditions

    def case(self, model: str, batch: int, condition: str | None = None) -> Case:
        """`condition`: a spinning setting of a deployment run (default: the first)."""
        wanted = condition or self.conditions[0]
        return next(c for c in self.cases if c.model == model and c.batch == batch and c.condition == wanted)

    def ratio(self, model: str, batch: int, condition: str | None = None) -> Ratio | RoundRatio:
        """candidate / reference (the first model) for `model` at `batch` under `condition` (default: the first)."""
        wanted = condition or self.conditions[0]
        return next(r.ratio for r in self.ratios if r.model == model and r.batch == batch and r.condition == wanted)

    @property
    def findings(self) -> list[str]:
        """Multi-modality across processes, one line per affected model, batch and condition."""
        return [
            f"{case.model} at batch {case.batch}, spinning {case.condition}: {case.finding}"
            for case in self.cases
            if isinstance(case, DeployedCase) and case.finding
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "mode": self.mode,
            "environment": {**self.environment, "threads": self.settings.threads_effective},
            "load_average": self.load_average,
            "settings": self.settings.to_json(),
            "models": [m.to_json() for m in self.models],
            "results": [c.to_json() for c in self.cases],
            "ratios": [r.to_json() for r in self.ratios],
            "processes": [p.to_json() for p in self.processes],
            "findings": self.findings,
            "peak": self.peak,
            "board": self.board,
            "notes": list(self.notes),
        }
