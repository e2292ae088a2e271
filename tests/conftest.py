import os
from pathlib import Path
from typing import Any

import pytest

# Tests run on 2 cores beside other work; one intra-op thread keeps timings and results steady.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def tiny_recipe(workdir: Path, **extra: Any) -> dict[str, Any]:
    """A recipe that trains in seconds on the embedded digits set."""
    recipe: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "workdir": str(workdir),
        "data": {"dataset": "digits", "batch_size": 64},
        "teacher": {"model": "resnet_s(width=8)", "train": {"epochs": 3, "lr": 0.05}},
        "student": "cnn(width=4)",
        "distill": {"epochs": 2, "lr": 0.05},
        "stages": [{"distill": {"epochs": 2}}],
    }
    recipe.update(extra)
    return recipe


@pytest.fixture
def make_recipe(tmp_path: Path):
    def factory(workdir: str | None = None, **extra: Any) -> dict[str, Any]:
        return tiny_recipe(Path(workdir) if workdir else tmp_path / "run", **extra)

    return factory


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A finished run folder (one distillation step) that tests copy and then damage."""
    import edgekd

    workdir = tmp_path_factory.mktemp("finished") / "run"
    recipe = tiny_recipe(workdir, teacher={"model": "resnet_s(width=8)", "train": {"epochs": 1, "lr": 0.05}},
                         stages=[{"distill": {"epochs": 1}}])
    edgekd.compress(recipe, quiet=True)
    return workdir


def copy_run(source: Path, target: Path) -> Path:
    """A copy of a run folder whose recipe.json points at the copy."""
    import json
    import shutil

    shutil.copytree(source, target)
    recipe = json.loads((target / "recipe.json").read_text())
    recipe["workdir"] = str(target)
    (target / "recipe.json").write_text(json.dumps(recipe))
    return target
