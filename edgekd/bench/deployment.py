"""Deployment mode: every model timed the way it is deployed — alone in its own process, with the
session options it ships with — instead of beside the others in one process.

A run is `rounds` rounds. In each round, every model (under each spinning condition asked for)
runs in a new Python process started for it: the process loads the model (session creation is
timed), then times every batch size in ascending order with the timing core (`measure`: warm-up,
then blocks of runs until the stop rule is met). The order of models rotates from round to round,
like the paired mode's blocks, so slow drift of the machine — clocks, heat, the state a heavy
neighbour leaves behind — falls on every model alike.

What comes out, per model, batch and condition: each process's median (its pid beside it), the
deployed latency as the median of those, the runs pooled for a spread, and a finding when the
processes disagree (`stats.multimodality`); per round, the ratio of each model's process median to
the reference's, summarised as the median over rounds with an order-statistic interval.

`time_here` is what each fresh process runs (via `edgekd.bench.fresh`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekd.bench.backends.base import BackendOptions, backend_class
from edgekd.bench.fresh import run_fresh
from edgekd.bench.result import DeployedCase, ProcessRun, RatioResult
from edgekd.bench.stats import RoundRatio, ratio_over_rounds
from edgekd.bench.timing import Timing, TimingSettings, measure, rotation
from edgekd.errors import InputError

MIN_ROUNDS = 2


@dataclass(frozen=True)
class DeployedModel:
    """A model as a fresh process loads it: its report name, backend ("name" or "pkg.module:Class") and file."""

    name: str
    backend: str
    path: Path


def check_rounds(rounds: int) -> None:
    if rounds < MIN_ROUNDS:
        raise InputError(
            f"deployment mode needs at least {MIN_ROUNDS} rounds (got {rounds}): ratios and modes are taken across "
            "rounds of fresh processes; 6 give a 96.9% interval"
        )


def run_rounds(
    models: Sequence[DeployedModel],
    options: BackendOptions,
    timing: TimingSettings,
    *,
    rounds: int,
    conditions: Sequence[str],
) -> list[ProcessRun]:
    """Every model under every condition in a fresh process per round, the order rotating by round."""
    check_rounds(rounds)
    processes: list[ProcessRun] = []
    start = time.time()
    for round_index in range(rounds):
        position = 0
        for c in rotation(len(conditions), round_index):
            for m in rotation(len(models), round_index):
                model, condition = models[m], conditions[c]
                spec = {
                    "backend": model.backend, "model": str(model.path), "batches": list(options.batch_sizes),
                    "options": replace(options, spinning=condition).to_json(), "timing": timing.to_json(),
                }  # fmt: skip
                what = f"deployment-mode timing of {model.path} (round {round_index + 1}, spinning {condition})"
                found = run_fresh("deployment", spec, what)
                processes.append(
                    ProcessRun(
                        model.name, condition, round_index, position, found["pid"], found["started_unix"] - start,
                        found["creation_s"], {int(b): Timing.from_json(t) for b, t in found["timings"].items()},
                        found["machine"],
                    )
                )  # fmt: skip
                position += 1
    return processes


def time_here(spec: dict[str, Any]) -> dict[str, Any]:
    """In the fresh process: load the model, time each batch size, hand back every latency, and what
    else ran on the machine meanwhile."""
    started = time.time()
    options = BackendOptions.from_json(spec["options"])
    backend = backend_class(spec["backend"])()
    load_start = time.perf_counter()
    runner = backend.load(spec["model"], options)
    creation_s = time.perf_counter() - load_start
    settings = TimingSettings.from_json(spec["timing"])
    timings = {}
    before = _machine_snapshot()
    try:
        for batch in spec["batches"]:
            target = runner.bind(options.inputs.make(runner.input_specs, batch, spec["model"]))
            [timing] = measure([target], settings)
            timings[str(batch)] = timing.to_json()
    finally:
        runner.close()
    machine = _machine_activity(before, _machine_snapshot())
    return {"pid": os.getpid(), "started_unix": started, "creation_s": creation_s, "timings": timings, "machine": machine}


def _machine_snapshot() -> tuple[float, float, float, float] | None:
    """(wall s, this process's CPU s, the machine's busy CPU s, its stolen CPU s); None without /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return time.perf_counter(), own.user + own.system, (user + nice + system + irq + softirq) / ticks, steal / ticks


def _machine_activity(
    before: tuple[float, float, float, float] | None, after: tuple[float, float, float, float] | None
) -> dict[str, float] | None:
    """While this process timed: the cores other processes kept busy on average, and the share of a core
    the hypervisor stole — both slow a process down without showing in its own timings' spread."""
    if before is None or after is None:
        return None
    wall, own, busy, steal = (b - a for a, b in zip(before, after))
    return {"wall_s": wall, "others_busy_cores": max(busy - own, 0.0) / wall, "steal_cores": steal / wall}


def deployed_cases(processes: Sequence[ProcessRun], names: Sequence[str], batches: Sequence[int]) -> list[DeployedCase]:
    """One case per batch, condition and model (in that nesting, models in the order given)."""
    conditions = list(dict.fromkeys(p.condition for p in processes))
    return [
        DeployedCase(name, batch, condition, tuple(p for p in processes if p.model == name and p.condition == condition))
        for batch in batches
        for condition in conditions
        for name in names
    ]


def round_ratios(cases: Sequence[DeployedCase], confidence: float) -> list[RatioResult]:
    """Each model against the first, per batch and condition: per-round ratios of process medians."""
    ratios = []
    for case in cases:
        reference = next(c for c in cases if c.batch == case.batch and c.condition == case.condition)
        if case is not reference:
            ratio = ratio_between(case, reference, confidence)
            ratios.append(RatioResult(case.batch, case.model, reference.model, ratio, case.condition))
    return ratios


def ratio_between(case: DeployedCase, reference: DeployedCase, confidence: float = 0.95) -> RoundRatio:
    """case / reference, round by round (the two measured in the same rounds), as a median over rounds.

    Any two models of a deployment run compare this way, not only a model and the first."""
    per_round = [
        mine.median_ms(case.batch) / theirs.median_ms(reference.batch)
        for mine, theirs in zip(_by_round(case.processes), _by_round(reference.processes), strict=True)
    ]
    return ratio_over_rounds(per_round, confidence)


def _by_round(processes: Sequence[ProcessRun]) -> list[ProcessRun]:
    return sorted(processes, key=lambda p: p.round)
