import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from edgekd.facts import DataFacts

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


def text_pipeline_recipe(workdir: Path, rows: Path, options: dict[str, Any], teacher: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A text recipe that prunes, quantizes, exports and benchmarks a tiny transformer in seconds;
    `options` names the task and the rows' fields."""
    recipe: dict[str, Any] = {
        "name": "text-tiny",
        "seed": 0,
        "device": "cpu",
        "workdir": str(workdir),
        "data": {
            "dataset": "text", "root": str(rows), "batch_size": 32,
            "options": {"max_length": 24, "tokenizer": {"kind": "wordpiece", "vocab_size": 80}, **options},
        },  # fmt: skip
        "teacher": teacher,
        "student": "teacher",
        "distill": {"epochs": 1, "lr": 0.002, "optimizer": {"name": "adamw"}},
        "stages": [
            {"prune": {"target_macs": 0.6, "steps": 1}},
            {"qat": {"profile": "ort-x86", "calibration_batches": 2}, "recover": {"epochs": 1, "lr": 0.0005}},
            {"export": {}},
            {"bench": {"rounds": 2, "batch_sizes": [1], "warmup_s": 0.0, "min_iterations": 2, "min_duration_s": 0.01, "memory": False, "mode": "paired"}},
        ],
    }
    recipe.update(extra)
    return recipe


def token_facts(
    task: str, *, vocab: int = 64, max_length: int = 16, pad: int = 0, eos: int = 2, start: int = 0, labels: int = 3
) -> "DataFacts":
    """What a tokenized dataset tells the model builder (`labels` for classify, `start` for seq2seq)."""
    from edgekd.facts import DataFacts

    return DataFacts(
        inputs="tokens", task=task, vocab_size=vocab, max_length=max_length, pad_id=pad, eos_id=eos,  # type: ignore[arg-type]
        num_classes=labels if task == "classify" else None, decoder_start_id=start if task == "seq2seq" else None,
    )  # fmt: skip


def card_facts(name: str) -> "DataFacts":
    """Data a registered model's card says it takes: 1×8×8 images in 10 classes, or tokens for its first task."""
    from edgekd.facts import DataFacts
    from edgekd.models import card_of

    card = card_of(name)
    return token_facts(card.tasks[0]) if card.inputs == "tokens" else DataFacts(in_channels=1, num_classes=10, image_size=8)


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
