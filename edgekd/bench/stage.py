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
from typing import Annotated, Any, Literal, Mapping

import numpy as np
from pydantic import AfterValidator, Field, field_validator, model_validator

from edgekd.bench.backends import backends
from edgekd.bench.generation import GenerationResult, benchmark_generation, render_generation
from edgekd.bench.harness import benchmark
from edgekd.bench.render import render
from edgekd.bench.result import BenchResult, Case, CaseResult, DeployedCase
from edgekd.bench.stats import RoundRatio
from edgekd.bench.timing import TimingSettings
from edgekd.config import StrictModel
from edgekd.records import Artefacts, BatchLatency, Latency, LatencyCondition, Speedup
from edgekd.stage import Stage, StageContext, StepResult, stages


def _times_onnx_files(name: str) -> str:
    """A registered backend must time ONNX files; a user's `pkg.module:Class` is checked when it loads."""
    if name in backends and not backends.get(name).reads_onnx:
        usable = " or ".join(n for n, backend in backends.items() if backend.reads_onnx)
        raise ValueError(f"bench backend {name!r} times Python models (its Python API), not the exported ONNX files a bench stage times; use {usable}")
    return name


OnnxBackendName = Annotated[str, AfterValidator(backends.check_or_user_code), AfterValidator(_times_onnx_files)]
Spinning = Literal["on", "off", "stop"]


class BenchConfig(StrictModel):
    """Settings of a `bench:` block. spinning: on (ONNX Runtime's default), off, stop, a list of them,
    or both (= [on, off]); default on in deployment mode, stop in paired mode. warmup_s: per model
    and batch (default 0.5 s deployment, 0.2 s paired). backends: registered names, or your own
    Backend class as `pkg.module:Class`. For language models the files are also timed generating
    (`edgekd.bench.generation`): `prompt_length` tokens of prompt (default: half the data's
    max_length) and up to `new_tokens` greedy tokens (at most what the positions left allow),
    at each batch size — time to first token and tokens/s, teacher and students side by side."""

    mode: Literal["deployment", "paired"] = "deployment"
    rounds: int = Field(6, ge=2)
    backends: list[OnnxBackendName] = Field(default_factory=lambda: ["onnxruntime"], min_length=1)
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 64], min_length=1)
    threads: int | None = Field(None, ge=1)
    spinning: list[Spinning] | None = Field(None, min_length=1)
    warmup_s: float | None = Field(None, ge=0)
    min_iterations: int = Field(20, ge=1)
    min_duration_s: float = Field(1.0, gt=0)
    memory: bool = True
    new_tokens: int = Field(16, ge=1)
    prompt_length: int | None = Field(None, ge=1)

    @field_validator("spinning", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if value == "both":
            return ["on", "off"]
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_setting_when_paired(self) -> BenchConfig:
        # A bench stage always times the teacher and a student, so paired mode shares one process between them.
        if self.mode == "paired" and self.spinning and len(self.spinning) > 1:
            raise ValueError("spinning: paired mode times one setting (all models share a process); use mode: deployment to compare settings")
        if self.mode == "paired" and self.spinning == ["on"]:
            raise ValueError(
                "spinning: 'on' in paired mode lets the teacher's idle threads busy-wait on the cores the student needs; "
                "use stop (the paired default) or off, or mode: deployment, where each model has its process to itself"
            )
        return self


def onnx_models(artefacts: Artefacts, workdir: Path) -> dict[str, Path]:
    """The exported files by report name (file stem): the teacher first, the deployed student last."""
    assert artefacts.teacher and artefacts.student, "the plan puts an export stage before every bench stage"
    students = artefacts.student.onnx
    files = [artefacts.teacher.onnx] + [students[kind] for kind in ("fp32", "int8", "int4") if kind in students]
    return {file.model_key: workdir / file.path for file in files}


def latency_section(result: BenchResult, names: list[str], backend: str, threads: int | None) -> Latency:
    """report.json's `latency`, for the first spinning condition: per model and batch the median (deployment
    mode: of the per-process medians), p90 and samples; the deployed student's speedup over the teacher.
    Further conditions (a deployment run with spinning on and off) sit under `conditions`."""
    cpu = result.environment.get("cpu", {}).get("model", "unknown CPU")
    first, *others = result.conditions
    main = _per_condition(result, names, first, samples=True)
    return Latency(
        mode=result.mode, backend=backend, threads=threads, spinning=first, models=main.models, speedup=main.speedup,
        conditions={condition: _per_condition(result, names, condition, samples=False) for condition in others},
        findings=result.findings, device=f"{cpu} ({threads or 'all'} threads)", reference=names[0],
    )  # fmt: skip


def _per_condition(result: BenchResult, names: list[str], condition: str, samples: bool) -> LatencyCondition:
    deployed = names[-1]
    batches = sorted({case.batch for case in result.cases})
    models = {name: {batch: _latency_entry(result.case(name, batch, condition), samples) for batch in batches} for name in names}
    speedup = {}
    for batch in batches:
        ratio = result.ratio(deployed, batch, condition).inverted()  # teacher / deployed
        rounds = ratio if isinstance(ratio, RoundRatio) else None
        speedup[batch] = Speedup(
            ratio=ratio.median_ratio, ci=(ratio.ci_low, ratio.ci_high), model=deployed,
            per_round=list(rounds.per_round) if rounds else None, ci_coverage=rounds.coverage if rounds else None,
        )  # fmt: skip
    return LatencyCondition(models=models, speedup=speedup)


def _latency_entry(case: Case, samples: bool) -> BatchLatency:
    fields: dict[str, Any] = {"median_ms": case.median_ms, "p90_ms": case.latency.p90}
    if isinstance(case, DeployedCase):
        fields.update(process_medians_ms=case.process_medians_ms, pids=[p.pid for p in case.processes], finding=case.finding)
    if samples:
        pooled = case.timing.blocks_s.ravel() * 1000 if isinstance(case, CaseResult) else np.array(case.to_json()["latencies_ms"])
        fields["samples_ms"] = pooled.tolist()
    return BatchLatency(**fields)


@stages.register(name="bench")
class BenchStage(Stage):
    Config = BenchConfig
    config: BenchConfig
    compresses = False
    requires = ("onnx",)
    provides = ("latency",)
    example = {"rounds": 2, "batch_sizes": [1, 8], "warmup_s": 0.05, "min_iterations": 5, "min_duration_s": 0.1, "memory": False}

    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(self.config.batch_sizes)

    def apply(self, ctx: StageContext, step: int) -> StepResult:
        config = self.config
        models = onnx_models(ctx.artefacts, ctx.workdir)
        # Token inputs have a dynamic sequence axis besides the batch: timed at the test split's padded length.
        example = ctx.example_input()
        shapes = {name: tuple(t.shape) for name, t in example.items()} if isinstance(example, Mapping) else None
        results = {}
        for backend in config.backends:
            result = benchmark(
                list(models.values()), mode=config.mode, rounds=config.rounds, backend=backend,
                batch_sizes=tuple(config.batch_sizes), threads=config.threads, spinning=config.spinning,
                warmup_s=config.warmup_s, min_iterations=config.min_iterations, min_duration_s=config.min_duration_s,
                memory=config.memory, seed=ctx.seed, input_shapes=shapes,
            )  # fmt: skip
            render(result, ctx.console)
            results[backend] = result
        first = config.backends[0]
        generation = self._generation(ctx, models) if ctx.facts.task != "classify" else None
        return StepResult(artefacts=Artefacts(
            latency=latency_section(results[first], list(models), first, config.threads),
            bench={name: result.to_json() for name, result in results.items()},
            generation=generation.to_json() if generation else None,
        ))

    def _generation(self, ctx: StageContext, models: dict[str, Path]) -> GenerationResult:
        """The language model files timed generating, side by side (the teacher is the reference)."""
        config, positions = self.config, ctx.facts.max_length or 2 * self.config.new_tokens
        prompt_length = min(config.prompt_length or max(1, positions // 2), positions - 1)
        new_tokens = min(config.new_tokens, positions - prompt_length)
        timing = TimingSettings(
            warmup_s=config.warmup_s if config.warmup_s is not None else 0.2, min_iterations=config.min_iterations,
            min_duration_s=config.min_duration_s, target_rounds=config.rounds, min_rounds=min(5, config.rounds),
        )  # fmt: skip
        result = benchmark_generation(
            models, batch_sizes=tuple(config.batch_sizes), prompt_length=prompt_length, new_tokens=new_tokens,
            threads=config.threads, settings=timing, memory=config.memory, seed=ctx.seed,
        )  # fmt: skip
        ctx.console.print(f"generation: {prompt_length}-token prompts, {new_tokens} new tokens", markup=False)
        ctx.console.print(render_generation(result), markup=False)
        return result
