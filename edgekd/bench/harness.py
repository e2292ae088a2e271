"""`benchmark()`: load every model, time them side by side at each batch size, then the
separate passes — per-node profile, Jetson power, memory in fresh processes, MACs and
efficiency — each outside the timing so none disturbs it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edgekd.bench import jetson
from edgekd.bench.backends import Backend, BackendOptions, Runner, backends
from edgekd.bench.environment import environment
from edgekd.bench.inputs import InputPlan, InputSpec
from edgekd.bench.memory import probe
from edgekd.bench.onnxfile import load_graph
from edgekd.bench.result import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    SESSION_RESOLUTION,
    BenchResult,
    BenchSettings,
    CaseResult,
    ModelRecord,
    RatioResult,
)
from edgekd.bench.roofline import count_macs, efficiency, peak_gmacs
from edgekd.bench.stats import Ratio, median_ratio, summarize
from edgekd.bench.timing import Timing, TimingSettings, measure
from edgekd.errors import InputError

PROFILE_RUNS = 10
JETSON_MIN_PASS_S = 1.0


@dataclass(frozen=True)
class Loaded:
    """A model ready to run: its name in the report, where it came from, its runner."""

    name: str
    source: Any
    backend: Backend
    runner: Runner
    creation_s: float
    specs: tuple[InputSpec, ...]

    @property
    def path(self) -> Path | None:
        return self.source if isinstance(self.source, Path) else None

    @property
    def label(self) -> str:
        return str(self.path) if self.path else f"nn.Module {type(self.source).__name__}"


def benchmark(
    models: Sequence[Any],
    *,
    backend: str = "onnxruntime",
    batch_sizes: Sequence[int] = (1,),
    threads: int | None = None,
    warmup_s: float = 0.2,
    min_iterations: int = 20,
    min_duration_s: float = 1.0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: str | Path | None = None,
    profile: bool = False,
    memory: bool = True,
    roofline: bool = True,
    providers: Sequence[str] = ("cpu",),
    graph_optimization: str = "all",
    spinning: str = "stop",
    precision: str = "auto",
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> BenchResult:
    """Bench `models` (ONNX paths with `backend`; nn.Modules always with eager torch) side by
    side at each batch size. The first model is the reference of the latency ratios.

    input_shapes: {'x': (1, 3, 224, 224)} for dynamic dims other than batch (batch replaced).
    inputs: an .npz file of real inputs keyed by input name (else seeded random data).
    profile: the ten slowest nodes per model and batch (onnxruntime).
    memory: peak RSS per model and batch, each in a fresh process.
    roofline: MACs from the ONNX graph, GMAC/s, efficiency against this machine's GEMM peak."""
    if not models:
        raise InputError("no models to bench: give at least one ONNX file (or nn.Module)")
    if spinning == "on" and len(models) > 1:
        raise InputError(
            "spinning 'on' needs a single model: interleaved with another model, a session's idle threads busy-wait "
            "on the cores the next model needs (measured: 4× slower). Use 'stop' (default) or 'off'"
        )
    if profile and not backends.get(backend).has_profile:
        raise InputError(f"the {backend} backend has no per-node profile (--profile); use --backend onnxruntime")
    plan = InputPlan({n: tuple(s) for n, s in (input_shapes or {}).items()}, Path(inputs) if inputs else None, seed)
    options = BackendOptions(
        threads, graph_optimization, tuple(providers), spinning, tuple(batch_sizes),
        Path(cache_dir) if cache_dir else None, precision, plan,
    )  # fmt: skip
    timing = TimingSettings(warmup_s, min_iterations, min_duration_s)
    settings = BenchSettings(backend, options, timing, threads or psutil.cpu_count(logical=False) or 1, seed)
    return _run(models, settings, profile=profile, memory=memory, roofline=roofline)


def _run(models: Sequence[Any], settings: BenchSettings, *, profile: bool, memory: bool, roofline: bool) -> BenchResult:
    loaded = _load_all(models, settings.backend, settings.options)
    notes: list[str] = []
    board = None
    try:
        cases, ratios = _time_all(loaded, settings)
        if profile:
            cases = _profile_pass(loaded, cases, settings.options, notes)
        if jetson.available():
            cases, board = _jetson_pass(loaded, cases, settings)
        records = tuple(_record(item) for item in loaded)
    finally:
        for item in loaded:
            item.runner.close()
    if memory:
        cases = _memory_pass(loaded, cases, settings.options, notes)
    peak = None
    if roofline:
        cases, peak = _roofline_pass(loaded, cases, settings, notes)
    return BenchResult(environment(), settings, records, tuple(cases), tuple(ratios), peak, board, tuple(notes))


def _load_all(models: Sequence[Any], backend: str, options: BackendOptions) -> list[Loaded]:
    names = _unique_names([_name(model) for model in models])
    loaded: list[Loaded] = []
    try:
        for name, model in zip(names, models):
            loaded.append(_load(name, model, backend, options, loaded))
    except BaseException:
        for item in loaded:
            item.runner.close()
        raise
    options.inputs.check_names({item.label: item.specs for item in loaded})
    return loaded


def _load(name: str, model: Any, backend: str, options: BackendOptions, earlier: list[Loaded]) -> Loaded:
    source = Path(model) if isinstance(model, (str, Path)) else model
    chosen = backends.get(backend if isinstance(source, Path) else "torch")()
    start = time.perf_counter()
    runner = chosen.load(source, options)
    creation_s = time.perf_counter() - start
    fallback = next((item.specs for item in earlier if item.path), ())
    specs = runner.input_specs or options.inputs.specs_for_module(fallback)
    return Loaded(name, source, chosen, runner, creation_s, specs)


def _name(model: Any) -> str:
    return Path(model).name.removesuffix(".onnx") if isinstance(model, (str, Path)) else type(model).__name__


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def _time_all(loaded: list[Loaded], settings: BenchSettings) -> tuple[list[CaseResult], list[RatioResult]]:
    cases: list[CaseResult] = []
    ratios: list[RatioResult] = []
    for batch in settings.options.batch_sizes:
        targets = [item.runner.bind(_feed(item, batch, settings.options)) for item in loaded]
        timings = measure(targets, settings.timing)
        cases += [_case(item.name, batch, timing) for item, timing in zip(loaded, timings)]
        ratios += [
            RatioResult(batch, item.name, loaded[0].name, _ratio(timing, timings[0], settings.seed))
            for item, timing in zip(loaded[1:], timings[1:])
        ]
    return cases, ratios


def _ratio(candidate: Timing, reference: Timing, seed: int) -> Ratio:
    return median_ratio(
        candidate.blocks_s, reference.blocks_s,
        resamples=BOOTSTRAP_RESAMPLES, confidence=CONFIDENCE, resolution=SESSION_RESOLUTION, seed=seed,
    )  # fmt: skip


def _feed(item: Loaded, batch: int, options: BackendOptions) -> dict[str, np.ndarray]:
    return options.inputs.make(item.specs, batch, item.label)


def _case(name: str, batch: int, timing: Timing) -> CaseResult:
    device = summarize(timing.device_blocks_ms) if timing.device_blocks_ms is not None else None
    return CaseResult(name, batch, timing, summarize(timing.blocks_s * 1e3), device)


def _record(item: Loaded) -> ModelRecord:
    return ModelRecord(item.name, item.label, item.backend.name, item.creation_s, item.specs, item.runner.describe())


def _per_case(
    loaded: list[Loaded], cases: list[CaseResult], fields: Callable[[Loaded, CaseResult], dict[str, Any] | None]
) -> list[CaseResult]:
    """Every case, updated with the fields `fields` measures for it (None: left as it is)."""
    by_name = {item.name: item for item in loaded}
    return [replace(case, **(fields(by_name[case.model], case) or {})) for case in cases]


def _profile_pass(
    loaded: list[Loaded], cases: list[CaseResult], options: BackendOptions, notes: list[str]
) -> list[CaseResult]:
    without = [item for item in loaded if not item.backend.has_profile]
    notes += [f"profile: the {item.backend.name} backend has none ({item.label})" for item in without]

    def profile(item: Loaded, case: CaseResult) -> dict[str, Any] | None:
        if not item.backend.has_profile:
            return None
        ops = item.backend.profile(item.source, options, _feed(item, case.batch, options), PROFILE_RUNS)
        return {"profile": tuple(ops)}

    return _per_case(loaded, cases, profile)


def _jetson_pass(
    loaded: list[Loaded], cases: list[CaseResult], settings: BenchSettings
) -> tuple[list[CaseResult], dict[str, Any]]:
    duration = max(settings.timing.min_duration_s, JETSON_MIN_PASS_S)

    def power(item: Loaded, case: CaseResult) -> dict[str, Any]:
        call = item.runner.bind(_feed(item, case.batch, settings.options)).call
        return {"jetson": jetson.sample_while_running(call, duration)}

    return _per_case(loaded, cases, power), jetson.board_setup()


def _memory_pass(
    loaded: list[Loaded], cases: list[CaseResult], options: BackendOptions, notes: list[str]
) -> list[CaseResult]:
    notes += [
        f"memory: {item.label} is an in-process module, with no file a fresh process could load; not measured"
        for item in loaded
        if item.path is None
    ]

    def peak_rss(item: Loaded, case: CaseResult) -> dict[str, Any] | None:
        return {"memory": probe(item.backend.name, item.path, options, case.batch)} if item.path else None

    return _per_case(loaded, cases, peak_rss)


def _roofline_pass(
    loaded: list[Loaded], cases: list[CaseResult], settings: BenchSettings, notes: list[str]
) -> tuple[list[CaseResult], dict[str, Any] | None]:
    on_cpu = settings.backend == "onnxruntime" and settings.options.cpu_only
    peak = peak_gmacs(settings.threads_effective) if on_cpu else None
    if not on_cpu:
        notes.append("roofline: the measured peak is a CPU GEMM; efficiency is not given for GPU runs")
    notes += [f"roofline: MACs are counted from ONNX graphs; {item.label} skipped" for item in loaded if not item.path]
    graphs = {item.name: load_graph(item.path) for item in loaded if item.path}

    def macs(item: Loaded, case: CaseResult) -> dict[str, Any] | None:
        if not item.path:
            return None
        count = count_macs(graphs[item.name], settings.options.inputs.shapes_for(item.specs, case.batch, item.label))
        achieved = efficiency(count.total, case.latency.median / 1e3, peak["gmacs_per_s"] if peak else None)
        return {"roofline": {**count.to_json(), **achieved}}

    return _per_case(loaded, cases, macs), peak
