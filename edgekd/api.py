"""The Python API. The CLI is a thin layer over these functions.

>>> import edgekd
>>> report = edgekd.compress("recipes/quickstart.yaml", workdir="runs/demo")  # doctest: +SKIP
>>> report["student"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

# Importing the stage packages registers their stage kinds.
import edgekd.bench.stage  # noqa: F401
import edgekd.distill  # noqa: F401
import edgekd.export  # noqa: F401
import edgekd.prune  # noqa: F401
import edgekd.quant  # noqa: F401
from edgekd.recipe import Recipe, load_recipe
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
    force_unlock: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Run a recipe (a path, a dict or a Recipe) and return its report.

    Keyword overrides are recipe fields: `compress("r.yaml", seed=1, workdir="runs/x")`;
    dotted paths go through `set=["distill.temperature=2"]`. `force_unlock` takes over a
    workdir lock held from another host."""
    if not isinstance(recipe, Recipe) or overrides or set:
        source = recipe.model_dump(mode="json") if isinstance(recipe, Recipe) else recipe
        assignments = [*set, *(f"{key}={_yaml_value(value)}" for key, value in overrides.items())]
        recipe = load_recipe(source, assignments)
    return run_recipe(recipe, resume=resume, quiet=quiet, console=console, force_unlock=force_unlock)


def export_run(
    workdir: str | Path, *, opset: int = 17, dynamic_batch: bool = True, console: Console | None = None, force_unlock: bool = False
) -> dict[str, Any]:
    """Re-export the latest student of a run folder (its recipe and checkpoints rebuild it exactly).

    The folder's recipe.json is checked against the hashes in its progress.json before anything is
    built: a recipe edited after the run is refused. (A run folder is code like a recipe: the hash
    catches mismatched files, not a hostile folder; see --no-user-code.)"""
    import json

    from edgekd.errors import InputError, read_mapping_file
    from edgekd.export.stage import ExportConfig
    from edgekd.run import read_progress, recipe_continues

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


def launch_distributed(nproc: int, arguments: list[str]) -> int:
    """Re-run `edgekd <arguments>` as `nproc` data-parallel processes under torchrun; returns its exit code."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "edgekd", *arguments]
    return subprocess.run(command).returncode


def _yaml_value(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML, so --set parsing reads it back exactly
