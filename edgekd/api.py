"""The Python API. The CLI is a thin layer over these functions.

>>> import edgekd
>>> report = edgekd.compress("recipes/quickstart.yaml", workdir="runs/demo")  # doctest: +SKIP
>>> report.student.accuracy  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from edgekd.recipe import Recipe, load_recipe
from edgekd.records import Artefacts, Report
from edgekd.run import Run
from edgekd.run import compress as run_recipe


def validate(recipe: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Check a recipe without running it; raises RecipeError listing every problem."""
    return load_recipe(recipe, overrides)


def compress(
    recipe: str | Path | dict[str, Any] | Recipe,
    *,
    set: list[str] | tuple[str, ...] = (),  # noqa: A002 — mirrors the CLI's --set
    resume: bool = False,
    quiet: bool = False,
    console: Console | None = None,
    **overrides: Any,
) -> Report:
    """Run a recipe (a path, a dict or a Recipe) and return its report (also in `<workdir>/report.json`).

    Keyword overrides are recipe fields: `compress("r.yaml", seed=1, workdir="runs/x")`;
    dotted paths go through `set=["distill.temperature=2"]`."""
    if not isinstance(recipe, Recipe) or overrides or set:
        source = recipe.model_dump(mode="json") if isinstance(recipe, Recipe) else recipe
        assignments = [*set, *(f"{key}={_yaml_value(value)}" for key, value in overrides.items())]
        recipe = load_recipe(source, assignments)
    return run_recipe(recipe, resume=resume, quiet=quiet, console=console)


def export_run(workdir: str | Path, *, opset: int = 17, dynamic_batch: bool = True, console: Console | None = None) -> Artefacts:
    """Re-export the latest student of a run folder (its recipe and checkpoints rebuild it exactly)."""
    import json

    from edgekd.errors import InputError
    from edgekd.export.stage import ExportConfig

    recipe_file = Path(workdir) / "recipe.json"
    if not recipe_file.is_file():
        raise InputError(f"{str(workdir)!r} is not an edgekd run folder: {recipe_file.name} is missing (run edgekd compress first)")
    recipe = load_recipe(json.loads(recipe_file.read_text()), [f"workdir={json.dumps(str(workdir))}"])
    return Run(recipe, console=console).export_latest(ExportConfig(opset=opset, dynamic_batch=dynamic_batch))


def launch_distributed(nproc: int, arguments: list[str]) -> int:
    """Re-run `edgekd <arguments>` as `nproc` data-parallel processes under torchrun; returns its exit code."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "edgekd", *arguments]
    return subprocess.run(command).returncode


def _yaml_value(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML, so --set parsing reads it back exactly
