"""The `bench` stage: time the exported teacher and students as they will be deployed.

`- bench: {batch_sizes: [1, 64], threads: 2}` after an `export` stage benchmarks
teacher.onnx, student.onnx and student.int8.onnx in deployment mode — each alone in a
fresh process per round, rounds rotating the order, ONNX Runtime's default session options
but for `threads` (and `spinning`, which may name both settings) — and writes report.json's
`latency` section: per-model latency at each batch size (the median of per-process medians,
with the processes' medians, pids and any multi-modality finding), and the deployed
student's speedup over the teacher, the median over rounds of the per-round ratio with its
interval — the figure CI gates use, since it cancels the machine's speed. `mode: paired`
times them interleaved in one process instead (tighter intervals for A/B comparisons,
spinning stopped between runs); `latency.mode` says which."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgekd.bench.result import BenchResult, Case, CaseResult, DeployedCase
from edgekd.bench.stats import RoundRatio
from edgekd.errors import InputError
from edgekd.stage import Stage, StepResult, StrictModel, stages

if TYPE_CHECKING:
    from edgekd.run import Run


Spinning = Literal["on", "off", "stop"]


class BenchConfig(StrictModel):
    """Settings of a `bench:` block. spinning: on (ONNX Runtime's default), off, stop, a list of them,
    or both (= [on, off]); default on in deployment mode, stop in paired mode. warmup_s: per model
    and batch (default 0.5 s deployment, 0.2 s paired)."""

    mode: Literal["deployment", "paired"] = "deployment"
    rounds: int = Field(6, ge=2)
    backends: list[str] = Field(default_factory=lambda: ["onnxruntime"], min_length=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64], min_length=1)
    threads: int | None = Field(None, ge=1)
    spinning: list[Spinning] | None = None
    warmup_s: float | None = Field(None, ge=0)
    min_iterations: int = Field(20, ge=1)
    min_duration_s: float = Field(1.0, gt=0)
    memory: bool = True

    @field_validator("spinning", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if value == "both":
            return ["on", "off"]
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_setting_when_paired(self) -> BenchConfig:
        if self.mode == "paired" and self.spinning and len(self.spinning) > 1:
            raise ValueError("spinning: paired mode times one setting (all models share a process); use mode: deployment to compare settings")
        return self


def onnx_models(report: dict[str, Any], workdir: Path) -> dict[str, Path]:
    """The exported files by report name (file stem): the teacher first, the deployed student last."""
    teacher = report.get("teacher", {}).get("onnx")
    students = report.get("student", {}).get("onnx", {})
    if not teacher or not students:
        raise InputError("a bench stage needs ONNX files: put an `export` stage before it in `stages:`")
    paths = [teacher["path"]] + [students[kind]["path"] for kind in ("fp32", "int8") if kind in students]
    return {Path(p).name.removesuffix(".onnx"): workdir / p for p in paths}


def latency_section(result: BenchResult, names: list[str], backend: str, threads: int | None) -> dict[str, Any]:
    """report.json's `latency`, for the first spinning condition: per model and batch the median (deployment
    mode: of the per-process medians), p90 and samples; the deployed student's speedup over the teacher.
    Further conditions (a deployment run with spinning on and off) sit under `conditions`."""
    cpu = result.environment.get("cpu", {}).get("model", "unknown CPU")
    first, *others = result.conditions
    return {
        "mode": result.mode,
        "backend": backend,
        "threads": threads,
        "spinning": first,
        **_per_condition(result, names, first, samples=True),
        "conditions": {condition: _per_condition(result, names, condition, samples=False) for condition in others},
        "findings": result.findings,
        "device": f"{cpu} ({threads or 'all'} threads)",
        "reference": names[0],
    }


def _per_condition(result: BenchResult, names: list[str], condition: str, samples: bool) -> dict[str, Any]:
    teacher, deployed = names[0], names[-1]
    batches = sorted({case.batch for case in result.cases})
    models = {
        name: {str(batch): _latency_entry(result.case(name, batch, condition), samples) for batch in batches}
        for name in names
    }
    speedup = {}
    for batch in batches:
        ratio = result.ratio(deployed, batch, condition).inverted()  # teacher / deployed
        speedup[str(batch)] = {"ratio": ratio.median_ratio, "ci": [ratio.ci_low, ratio.ci_high], "model": deployed}
        if isinstance(ratio, RoundRatio):
            speedup[str(batch)].update(per_round=list(ratio.per_round), ci_coverage=ratio.coverage)
    return {"models": models, "speedup": speedup}


def _latency_entry(case: Case, samples: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"median_ms": case.median_ms, "p90_ms": case.latency.p90}
    if isinstance(case, DeployedCase):
        entry.update(process_medians_ms=case.process_medians_ms, pids=[p.pid for p in case.processes], finding=case.finding)
    if samples:
        pooled = case.timing.blocks_s.ravel() * 1000 if isinstance(case, CaseResult) else np.array(case.to_json()["latencies_ms"])
        entry["samples_ms"] = pooled.tolist()
    return entry


@stages.register(name="bench")
class BenchStage(Stage):
    Config = BenchConfig
    compresses = False

    def apply(self, run: Run, step: int) -> StepResult:
        from edgekd.bench import benchmark, render

        config: BenchConfig = self.config  # type: ignore[assignment]
        models = onnx_models(run.report, run.workdir)
        results = {}
        for backend in config.backends:
            result = benchmark(
                list(models.values()), mode=config.mode, rounds=config.rounds, backend=backend,
                batch_sizes=tuple(config.batch_sizes), threads=config.threads, spinning=config.spinning,
                warmup_s=config.warmup_s, min_iterations=config.min_iterations, min_duration_s=config.min_duration_s,
                memory=config.memory, seed=run.seed,
            )  # fmt: skip
            render(result, run.console)
            results[backend] = result
        first = config.backends[0]
        return StepResult(report={
            "latency": latency_section(results[first], list(models), first, config.threads),
            "bench": {name: result.to_json() for name, result in results.items()},
        })
