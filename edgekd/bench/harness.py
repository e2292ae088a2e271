"""`benchmark()`: load every model (which checks every file and input before anything is timed),
time them at each batch size — in deployment mode each in its own fresh processes
(`edgekd.bench.deployment`), in paired mode side by side in this one — then the separate
passes: per-node profile, Jetson power, memory in fresh processes, MACs and efficiency, each
outside the timing so none disturbs it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edgekd.bench import jetson
from edgekd.bench.backends import Backend, BackendOptions, Runner
from edgekd.bench.backends.base import SPINNING_MODES, backend_class
from edgekd.bench.deployment import DeployedModel, check_rounds, deployed_cases, round_ratios, run_rounds
from edgekd.bench.environment import environment
from edgekd.bench.inputs import InputPlan, InputSpec
from edgekd.bench.memory import probe
from edgekd.bench.onnxfile import load_graph
from edgekd.bench.result import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    MODES,
    SESSION_RESOLUTION,
    BenchResult,
    BenchSettings,
    Case,
    CaseResult,
    ModelRecord,
    ProcessRun,
    RatioResult,
)
from edgekd.bench.roofline import count_macs, efficiency, peak_gmacs
from edgekd.bench.stats import Ratio, median_ratio, summarize
from edgekd.bench.timing import Timing, TimingSettings, measure
from edgekd.errors import InputError
from edgekd.registry import unknown_name

PROFILE_RUNS = 10
JETSON_MIN_PASS_S = 1.0
DEFAULT_ROUNDS = 6
# Per mode: warm-up seconds (a fresh process starts cold) and spinning (deployment: ONNX Runtime's
# default, what a deployed session does unless told otherwise; paired: stopped between runs, since
# an idle session's spinning threads would take the cores the next model needs).
DEFAULT_WARMUP_S = {"deployment": 0.5, "paired": 0.2}
DEFAULT_SPINNING = {"deployment": "on", "paired": "stop"}


@dataclass(frozen=True)
class Loaded:
    """A model ready to run: its name in the report, where it came from, its runner."""

    name: str
    source: Any
    backend: Backend
    backend_spec: str  # how a fresh process finds the backend again
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
    mode: str = "deployment",
    rounds: int = DEFAULT_ROUNDS,
    backend: str = "onnxruntime",
    batch_sizes: Sequence[int] = (1,),
    threads: int | None = None,
    warmup_s: float | None = None,
    min_iterations: int = 20,
    min_duration_s: float = 1.0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: str | Path | None = None,
    profile: bool = False,
    memory: bool = True,
    roofline: bool = True,
    providers: Sequence[str] = ("cpu",),
    graph_optimization: str = "all",
    spinning: str | Sequence[str] | None = None,
    precision: str = "auto",
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> BenchResult:
    """Bench `models` at each batch size. The first model is the reference of the latency ratios.

    mode: "deployment" (default) runs each model alone in a fresh process per round, `rounds`
      rounds in rotating order, with the session options it ships with (ONNX Runtime's defaults
      but for what you set here); for ONNX files. "paired" times every model side by side in
      this process in rotating blocks (tight intervals for A/B comparisons; nn.Modules too).
    backend: a registered backend (onnxruntime, tensorrt; nn.Modules always run with eager torch)
      or your own Backend subclass as "pkg.module:Class".
    spinning: ONNX Runtime thread spinning — on (ORT's default), off, or stop (spin during a run
      only); deployment mode takes several ("on", "off", or "both") and times each in its own
      processes. Default: on in deployment mode, stop in paired mode.
    warmup_s: per model and batch (default 0.5 s in deployment mode, 0.2 s paired).
    input_shapes: {'x': (1, 3, 224, 224)} for dynamic dims other than batch (batch replaced).
    inputs: an .npz file of real inputs keyed by input name (else seeded random data).
    profile: the ten slowest nodes per model and batch (onnxruntime).
    memory: peak RSS per model and batch, each in a fresh process.
    roofline: MACs from the ONNX graph, GMAC/s, efficiency against this machine's GEMM peak."""
    if not models:
        raise InputError("no models to bench: give at least one ONNX file (or nn.Module)")
    if mode not in MODES:
        raise InputError(unknown_name("bench mode", mode, MODES))
    conditions = spinning_conditions(spinning, mode)
    if mode == "paired":
        _check_paired_spinning(conditions, len(models))
    else:
        check_rounds(rounds)
    if profile and not backend_class(backend).has_profile:
        raise InputError(f"the {backend} backend has no per-node profile (--profile); use --backend onnxruntime")
    plan = InputPlan({n: tuple(s) for n, s in (input_shapes or {}).items()}, Path(inputs) if inputs else None, seed)
    options = BackendOptions(
        threads, graph_optimization, tuple(providers), conditions[0], tuple(batch_sizes),
        Path(cache_dir) if cache_dir else None, precision, plan,
    )  # fmt: skip
    timing = TimingSettings(DEFAULT_WARMUP_S[mode] if warmup_s is None else warmup_s, min_iterations, min_duration_s)
    threads_effective = threads or psutil.cpu_count(logical=False) or 1
    settings = BenchSettings(backend, options, timing, threads_effective, seed, mode, rounds if mode == "deployment" else 0, conditions)
    return _run(models, settings, profile=profile, memory=memory, roofline=roofline)


def spinning_conditions(spinning: str | Sequence[str] | None, mode: str) -> tuple[str, ...]:
    """('on',), ('on', 'off') … from None (the mode's default), 'both', 'on,off' or a sequence."""
    if spinning is None:
        return (DEFAULT_SPINNING[mode],)
    parts = spinning.split(",") if isinstance(spinning, str) else list(spinning)
    names = [p.strip() for p in parts if p.strip()]
    conditions = tuple(dict.fromkeys(c for name in names for c in (("on", "off") if name == "both" else (name,))))
    if not conditions:
        raise InputError(f"spinning {spinning!r}: give one or more of {', '.join(SPINNING_MODES)}, or 'both' (on and off)")
    for condition in conditions:
        if condition not in SPINNING_MODES:
            raise InputError(unknown_name("spinning mode", condition, (*SPINNING_MODES, "both")))
    return conditions


def _check_paired_spinning(conditions: tuple[str, ...], count: int) -> None:
    if len(conditions) > 1:
        raise InputError(
            f"spinning {','.join(conditions)}: paired mode times one setting (all models share a process); "
            "compare spinning settings in deployment mode (--mode deployment --spinning both)"
        )
    if conditions[0] == "on" and count > 1:
        raise InputError(
            "spinning 'on' needs a single model in paired mode: interleaved with another model, a session's idle "
            "threads busy-wait on the cores the next model needs (measured: 4× slower). Use 'stop' (paired default) "
            "or 'off', or deployment mode, where each model has its process to itself"
        )


def _run(models: Sequence[Any], settings: BenchSettings, *, profile: bool, memory: bool, roofline: bool) -> BenchResult:
    notes: list[str] = []
    board = None
    load = {"before_timing": _load_average()}
    processes: tuple[ProcessRun, ...] = ()
    with _loaded(models, settings) as loaded:
        records = tuple(_record(item) for item in loaded)
        if settings.mode == "paired":
            cases, ratios = _time_all(loaded, settings)
            load["after_timing"] = _load_average()
            cases, board = _in_process_passes(loaded, cases, settings, profile, notes)
    if settings.mode == "deployment":
        # Every session of this process is closed: the fresh processes run beside an idle parent.
        processes, cases, ratios = _deploy(loaded, settings)
        load["after_timing"] = _load_average()
        if profile or jetson.available():
            with _loaded(models, settings) as loaded:
                cases, board = _in_process_passes(loaded, cases, settings, profile, notes)
    if memory:
        cases = _memory_pass(loaded, cases, settings.options, notes)
    peak = None
    if roofline:
        cases, peak = _roofline_pass(loaded, cases, settings, notes)
    return BenchResult(
        environment(), settings, records, tuple(cases), tuple(ratios), peak, board, tuple(notes), processes, load
    )


def _in_process_passes(
    loaded: list[Loaded], cases: list[Case], settings: BenchSettings, profile: bool, notes: list[str]
) -> tuple[list[Case], dict[str, Any] | None]:
    """The per-node profile and Jetson power, each in its own sessions after the timing."""
    board = None
    if profile:
        cases = _profile_pass(loaded, cases, settings.options, notes)
    if jetson.available():
        cases, board = _jetson_pass(loaded, cases, settings)
    return cases, board


@contextmanager
def _loaded(models: Sequence[Any], settings: BenchSettings) -> Iterator[list[Loaded]]:
    loaded = _load_all(models, settings.backend, settings.options)
    try:
        if settings.mode == "deployment":
            _check_deployable(loaded)
        yield loaded
    finally:
        for item in loaded:
            item.runner.close()


def _check_deployable(loaded: list[Loaded]) -> None:
    modules = [item.label for item in loaded if item.path is None]
    if modules:
        raise InputError(
            f"deployment mode runs each model in a fresh process, which loads it from a file; {', '.join(modules)} "
            "is an in-process module. Export it (edgekd export) or bench it with mode='paired'"
        )


def _deploy(loaded: list[Loaded], settings: BenchSettings) -> tuple[tuple[ProcessRun, ...], list[Case], list[RatioResult]]:
    targets = [DeployedModel(item.name, item.backend_spec, item.path) for item in loaded if item.path]
    processes = run_rounds(
        targets, settings.options, settings.timing, rounds=settings.rounds, conditions=settings.spinning_conditions
    )
    cases = deployed_cases(processes, [item.name for item in loaded], settings.options.batch_sizes)
    return tuple(processes), list(cases), round_ratios(cases, CONFIDENCE)


def _load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


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
    spec = backend if isinstance(source, Path) else "torch"
    chosen = backend_class(spec)()
    start = time.perf_counter()
    runner = chosen.load(source, options)
    creation_s = time.perf_counter() - start
    fallback = next((item.specs for item in earlier if item.path), ())
    specs = runner.input_specs or options.inputs.specs_for_module(fallback)
    return Loaded(name, source, chosen, spec, runner, creation_s, specs)


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
        spinning = settings.options.spinning
        cases += [_case(item.name, batch, timing, spinning) for item, timing in zip(loaded, timings)]
        ratios += [
            RatioResult(batch, item.name, loaded[0].name, _ratio(timing, timings[0], settings.seed), spinning)
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


def _case(name: str, batch: int, timing: Timing, condition: str) -> CaseResult:
    device = summarize(timing.device_blocks_ms) if timing.device_blocks_ms is not None else None
    return CaseResult(name, batch, timing, summarize(timing.blocks_s * 1e3), device, condition=condition)


def _record(item: Loaded) -> ModelRecord:
    return ModelRecord(item.name, item.label, item.backend.name, item.creation_s, item.specs, item.runner.describe())


def _per_case(
    loaded: list[Loaded], cases: list[Case], fields: Callable[[Loaded, Case], dict[str, Any] | None]
) -> list[Case]:
    """Every case, updated with the fields `fields` measures for it (None: left as it is). Measured once
    per model and batch: the conditions of a deployment run share it."""
    by_name = {item.name: item for item in loaded}
    measured: dict[tuple[str, int], dict[str, Any] | None] = {}
    for case in cases:
        if (case.model, case.batch) not in measured:
            measured[case.model, case.batch] = fields(by_name[case.model], case)
    return [replace(case, **(measured[case.model, case.batch] or {})) for case in cases]


def _profile_pass(
    loaded: list[Loaded], cases: list[Case], options: BackendOptions, notes: list[str]
) -> list[Case]:
    without = [item for item in loaded if not item.backend.has_profile]
    notes += [f"profile: the {item.backend.name} backend has none ({item.label})" for item in without]

    def profile(item: Loaded, case: Case) -> dict[str, Any] | None:
        if not item.backend.has_profile:
            return None
        ops = item.backend.profile(item.source, options, _feed(item, case.batch, options), PROFILE_RUNS)
        return {"profile": tuple(ops)}

    return _per_case(loaded, cases, profile)


def _jetson_pass(
    loaded: list[Loaded], cases: list[Case], settings: BenchSettings
) -> tuple[list[Case], dict[str, Any]]:
    duration = max(settings.timing.min_duration_s, JETSON_MIN_PASS_S)

    def power(item: Loaded, case: Case) -> dict[str, Any]:
        call = item.runner.bind(_feed(item, case.batch, settings.options)).call
        return {"jetson": jetson.sample_while_running(call, duration)}

    return _per_case(loaded, cases, power), jetson.board_setup()


def _memory_pass(
    loaded: list[Loaded], cases: list[Case], options: BackendOptions, notes: list[str]
) -> list[Case]:
    notes += [
        f"memory: {item.label} is an in-process module, with no file a fresh process could load; not measured"
        for item in loaded
        if item.path is None
    ]

    def peak_rss(item: Loaded, case: Case) -> dict[str, Any] | None:
        if not item.path:
            return None
        return {"memory": probe(item.backend_spec, item.path, options, case.batch)}

    return _per_case(loaded, cases, peak_rss)


def _roofline_pass(
    loaded: list[Loaded], cases: list[Case], settings: BenchSettings, notes: list[str]
) -> tuple[list[Case], dict[str, Any] | None]:
    on_cpu = settings.backend == "onnxruntime" and settings.options.cpu_only
    peak = peak_gmacs(settings.threads_effective) if on_cpu else None
    if not on_cpu:
        notes.append("roofline: the measured peak is a CPU GEMM; efficiency is not given for GPU runs")
    notes += [f"roofline: MACs are counted from ONNX graphs; {item.label} skipped" for item in loaded if not item.path]
    graphs = {item.name: load_graph(item.path) for item in loaded if item.path}

    def macs(item: Loaded, case: Case) -> dict[str, Any] | None:
        if not item.path:
            return None
        count = count_macs(graphs[item.name], settings.options.inputs.shapes_for(item.specs, case.batch, item.label))
        achieved = efficiency(count.total, case.median_ms / 1e3, peak["gmacs_per_s"] if peak else None)
        return {"roofline": {**count.to_json(), **achieved}}

    return _per_case(loaded, cases, macs), peak
