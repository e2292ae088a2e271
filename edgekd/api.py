"""The Python API. The CLI (edgekd/cli/) is a thin layer over these functions.

>>> import edgekd
>>> report = edgekd.compress("recipes/quickstart.yaml", workdir="runs/demo")  # doctest: +SKIP
>>> report.student.accuracy  # doctest: +SKIP

The building blocks are one verb each and need no recipe: `edgekd.prune.prune`,
`edgekd.quant.quantize`, `edgekd.export.export_onnx`, `edgekd.bench.benchmark`."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from rich.console import Console

from edgekd.bench import BenchResult, benchmark
from edgekd.errors import InputError, read_mapping_file
from edgekd.export import Finding, export_onnx, targets
from edgekd.export.runtime import check_onnx_file
from edgekd.export.stage import ExportConfig
from edgekd.gate import BaselineLimits, GateResult, GatesConfig, evaluate_gates, load_report
from edgekd.models import build_model, load_state_dict_file
from edgekd.recipe import Recipe, load_recipe
from edgekd.records import Artefacts, Report
from edgekd.report import write_reports
from edgekd.run import Run, read_progress, recipe_continues
from edgekd.run import compress as run_recipe


def validate(recipe: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Check a recipe without running it — every field, and the plan as a whole with its gates;
    raises RecipeError listing every problem."""
    return load_recipe(recipe, overrides)


def compress(
    recipe: str | Path | dict[str, Any] | Recipe,
    *,
    set: list[str] | tuple[str, ...] = (),  # noqa: A002 — mirrors the CLI's --set
    resume: bool = False,
    quiet: bool = False,
    console: Console | None = None,
    force_unlock: bool = False,
    **overrides: Any,
) -> Report:
    """Run a recipe (a path, a dict or a Recipe) and return its report (also in `<workdir>/report.json`).

    Keyword overrides are recipe fields: `compress("r.yaml", seed=1, workdir="runs/x")`;
    dotted paths go through `set=["distill.temperature=2"]`. `force_unlock` takes over a
    workdir lock held from another host."""
    if not isinstance(recipe, Recipe) or overrides or set:
        source = recipe.model_dump(mode="json") if isinstance(recipe, Recipe) else recipe
        assignments = [*set, *(f"{key}={json.dumps(value)}" for key, value in overrides.items())]  # JSON is YAML
        recipe = load_recipe(source, assignments)
    return run_recipe(recipe, resume=resume, quiet=quiet, console=console, force_unlock=force_unlock)


def export_run(
    workdir: str | Path, *, opset: int = 17, dynamic_batch: bool = True, console: Console | None = None, force_unlock: bool = False
) -> Artefacts:
    """Re-export the latest student of a run folder (its recipe and checkpoints rebuild it exactly).

    The folder's recipe.json is checked against the hashes in its progress.json before anything is
    built: a recipe edited after the run is refused. (A run folder is code like a recipe: the hash
    catches mismatched files, not a hostile folder; see --no-user-code.)"""
    recipe_file = Path(workdir) / "recipe.json"
    if not recipe_file.is_file():
        raise InputError(f"{str(workdir)!r} is not an edgekd run folder: {recipe_file.name} is missing (run edgekd compress first)")
    raw = read_mapping_file(recipe_file, "run recipe", json.loads, (json.JSONDecodeError,), "JSON")
    recipe = load_recipe(raw, [f"workdir={json.dumps(str(workdir))}"])
    progress = read_progress(Path(workdir))
    if progress is None:
        raise InputError(f"{str(workdir)!r} has no finished step to export yet")
    if not recipe_continues(recipe, progress):
        raise InputError(
            f"{str(recipe_file)!r} does not match the run in {str(workdir)!r}: its hash differs from the one progress.json "
            "recorded, so it would not rebuild the checkpointed student. Was it edited? Nothing was built."
        )
    # The run's own export settings (stem placement, parity thresholds) apply, but for what the caller sets.
    stage = next((p.stage for p in recipe.plan if p.key == "export"), None)
    base = stage.config if stage is not None else ExportConfig()
    config = base.model_copy(update={"opset": opset, "dynamic_batch": dynamic_batch})
    run = Run(recipe, console=console, force_unlock=force_unlock)
    return run.export_latest(config)


def export_model(
    spec: str, weights: str | Path, input_shape: Sequence[int], output: str | Path, *,
    num_classes: int = 10, opset: int = 17, dynamic_batch: bool = True,
) -> str:  # fmt: skip
    """Export a float model built from a spec and a state_dict file; returns the exporter used."""
    model = build_model(spec, in_channels=input_shape[1], num_classes=num_classes)
    load_state_dict_file(model, weights)
    return export_onnx(model.eval(), output, torch.zeros(tuple(input_shape)), opset=opset, dynamic_batch=dynamic_batch)


@dataclass(frozen=True)
class GateCheck:
    """The verdicts of `gate()` on one report."""

    report: Report
    results: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)


def gate(
    report: str | Path | Report,
    *,
    baseline: str | Path | Report | None = None,
    gates: GatesConfig | None = None,
    limits: BaselineLimits | None = None,
) -> GateCheck:
    """Evaluate gates on a finished run: `gates` (thresholds on this run) and `limits` (regression
    from `baseline`); with neither set, the recipe gates the run stored in its report."""
    current = report if isinstance(report, Report) else load_report(report)
    reference = baseline if isinstance(baseline, Report) or baseline is None else load_report(baseline)
    gates = gates or GatesConfig()
    if not gates.has_thresholds() and not (limits and limits.has_thresholds()):
        stored = current.gates_config
        if stored is None or not stored.has_thresholds():
            raise InputError(
                f"no gates to evaluate: {report if not isinstance(report, Report) else current.name} has no recipe gates; "
                "give a threshold such as --min-accuracy 0.9 or --min-speedup 3 (min_accuracy=0.9 in Python)"
            )
        gates = stored
    return GateCheck(current, evaluate_gates(current, gates, reference, limits))


def report(run: str | Path) -> tuple[Path, Path]:
    """Write report.md and a self-contained report.html for a run folder (or its report.json)."""
    report_path = Path(run) if Path(run).suffix == ".json" else Path(run) / "report.json"
    return write_reports(report_path.parent, load_report(report_path))


def bench(models: Sequence[str | Path | Any], **options: Any) -> BenchResult:
    """Time models as deployed, each alone in fresh processes (or side by side with `mode="paired"`):
    `edgekd.bench.benchmark`'s settings."""
    return benchmark(models, **options)


def check(model: str | Path, target: str = "tensorrt") -> list[Finding]:
    """Lint an int8 ONNX file for what a deployment target accepts (`targets`: tensorrt), once
    it passes onnx.checker (an empty, unparsable or invalid file is an InputError)."""
    rules = targets.get(target)
    return rules(check_onnx_file(Path(model)))


def launch_distributed(nproc: int, arguments: list[str]) -> int:
    """Re-run `edgekd <arguments>` as `nproc` data-parallel processes under torchrun; returns its exit code.
    Each process sees the same arguments; WORLD_SIZE tells it that it runs under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "edgekd", *arguments]
    return subprocess.run(command).returncode
