"""The `bench` stage: time the exported teacher and student side by side, in one process.

`- bench: {batch_sizes: [1, 64], threads: 2}` after an `export` stage benchmarks
teacher.onnx, student.onnx and student.int8.onnx interleaved, and writes
report.json's `latency` section: per-model latency at each batch size, and the
student's speedup over the teacher as a ratio of medians with its confidence
interval — the figure CI gates use, since it cancels the machine's speed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from edgekd.bench.backends import backends
from edgekd.bench.harness import benchmark
from edgekd.bench.render import render
from edgekd.bench.result import BenchResult
from edgekd.config import StrictModel
from edgekd.records import Artefacts, BatchLatency, Latency, Speedup
from edgekd.stage import Stage, StageContext, StepResult, stages


def _times_onnx_files(name: str) -> str:
    if not backends.get(name).reads_onnx:
        usable = " or ".join(n for n, backend in backends.items() if backend.reads_onnx)
        raise ValueError(f"bench backend {name!r} times Python models (its Python API), not the exported ONNX files a bench stage times; use {usable}")
    return name


OnnxBackendName = Annotated[str, AfterValidator(backends.check), AfterValidator(_times_onnx_files)]


class BenchConfig(StrictModel):
    backends: list[OnnxBackendName] = Field(default_factory=lambda: ["onnxruntime"], min_length=1)
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 64], min_length=1)
    threads: int | None = Field(None, ge=1)
    warmup_s: float = Field(0.2, ge=0)
    min_iterations: int = Field(20, ge=1)
    min_duration_s: float = Field(1.0, gt=0)
    memory: bool = True


def onnx_models(artefacts: Artefacts, workdir: Path) -> dict[str, Path]:
    """The exported files by report name (file stem): the teacher first, the deployed student last."""
    assert artefacts.teacher and artefacts.student, "the plan puts an export stage before every bench stage"
    students = artefacts.student.onnx
    files = [artefacts.teacher.onnx] + [students[kind] for kind in ("fp32", "int8") if kind in students]
    return {file.stem: workdir / file.path for file in files}


def latency_section(result: BenchResult, names: list[str], backend: str, threads: int | None) -> Latency:
    """report.json's `latency`: medians, p90 and samples per model and batch; speedup of the deployed student."""
    teacher, deployed = names[0], names[-1]
    batches = sorted({case.batch for case in result.cases})
    models = {
        name: {
            batch: BatchLatency(
                median_ms=(case := result.case(name, batch)).latency.median,
                p90_ms=case.latency.p90,
                samples_ms=(case.timing.blocks_s.ravel() * 1000).tolist(),
            )
            for batch in batches
        }
        for name in names
    }
    speedup = {}
    for batch in batches:
        ratio = result.ratio(deployed, batch)  # deployed / teacher
        speedup[batch] = Speedup(ratio=1 / ratio.median_ratio, ci=(1 / ratio.ci_high, 1 / ratio.ci_low), model=deployed)
    cpu = result.environment.get("cpu", {}).get("model", "unknown CPU")
    return Latency(
        backend=backend, threads=threads, models=models, speedup=speedup, device=f"{cpu} ({threads or 'all'} threads)", reference=teacher
    )


@stages.register(name="bench")
class BenchStage(Stage):
    Config = BenchConfig
    config: BenchConfig
    compresses = False
    requires = ("onnx",)
    provides = ("latency",)
    example = {"batch_sizes": [1, 8], "warmup_s": 0.05, "min_iterations": 5, "min_duration_s": 0.1, "memory": False}

    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(self.config.batch_sizes)

    def apply(self, ctx: StageContext, step: int) -> StepResult:
        config = self.config
        models = onnx_models(ctx.artefacts, ctx.workdir)
        results = {}
        for backend in config.backends:
            result = benchmark(
                list(models.values()), backend=backend, batch_sizes=tuple(config.batch_sizes), threads=config.threads,
                warmup_s=config.warmup_s, min_iterations=config.min_iterations, min_duration_s=config.min_duration_s,
                memory=config.memory, seed=ctx.seed,
            )
            render(result, ctx.console)
            results[backend] = result
        first = config.backends[0]
        return StepResult(artefacts=Artefacts(
            latency=latency_section(results[first], list(models), first, config.threads),
            bench={name: result.to_json() for name, result in results.items()},
        ))
