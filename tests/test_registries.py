"""Every registered kind is tested the day it is registered, from the data it carries: each stage
kind runs its `example` in a recipe (after the stages its requirements name), each distillation
method trains a student with its `example` settings, each bench backend times a model or says
why it cannot here, and every registry names a typo with the one message. (Profiles and models —
with their tiny specs — are parametrised over in test_export, test_quant, test_prune_io and test_models.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import edgekd
from edgekd.bench import backends, benchmark
from edgekd.data import datasets
from edgekd.distill import methods
from edgekd.errors import InputError
from edgekd.export import export_onnx
from edgekd.export.trt_lint import targets
from edgekd.models import build_model, card_of, models
from edgekd.prune.importances import importances
from edgekd.quant import profiles
from edgekd.records import Report
from edgekd.stage import stages

TEACHER = "resnet_s(width=8)"

# How a finished run shows each fact a stage provides (a fact not listed here: the run finishing).
SHOWS: dict[str, Callable[[Report], bool]] = {
    "onnx": lambda report: bool(report.student and report.student.onnx and report.teacher.onnx),
    "latency": lambda report: report.latency is not None and bool(report.latency.speedup),
    "quantized": lambda report: bool(report.steps and report.steps[-1].int8),
}


def recipe(workdir: Path, teacher: dict, stage_list: list, **extra: Any) -> dict:
    return {
        "name": "registries", "workdir": str(workdir), "device": "cpu",
        "data": {"dataset": "digits", "batch_size": 64}, "teacher": teacher,
        "distill": {"epochs": 1, "lr": 0.05}, "stages": stage_list, **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> dict:
    """A trained teacher checkpoint shared by every run below."""
    workdir = tmp_path_factory.mktemp("teacher")
    edgekd.compress(recipe(workdir, {"model": TEACHER, "train": {"epochs": 4, "lr": 0.05}}, []), quiet=True)
    return {"model": TEACHER, "checkpoint": str(next(workdir.glob("teacher-*.pt")))}


def entry(kind: str) -> dict:
    cls = stages.get(kind)
    body = {kind: dict(cls.example)}
    # A gentle learning rate: quantized students lose what a high one teaches in one epoch.
    return {**body, "recover": {"epochs": 1, "lr": 0.005}} if cls.compresses and not cls.body_is_recovery else body


def with_requirements(kind: str) -> list[dict]:
    """The stage, after a stage of the first kind providing each fact it requires (and theirs)."""
    before = []
    for fact in stages.get(kind).requires:
        provider = next(name for name, cls in stages.items() if fact in cls.provides)
        before += with_requirements(provider)
    return [*before, entry(kind)]


@pytest.mark.parametrize("kind", stages.names())
def test_every_stage_kind_runs_its_example_in_a_recipe(kind: str, teacher: dict, tmp_path: Path):
    report = edgekd.compress(recipe(tmp_path / "run", teacher, with_requirements(kind), student="teacher"), quiet=True)
    cls = stages.get(kind)
    assert report.complete
    if cls.compresses:  # a copy of a ~90% teacher, compressed a little and recovered for an epoch
        assert report.steps[-1].stage == kind and report.steps[-1].accuracy > 0.6
    for fact in cls.provides:
        assert SHOWS.get(fact, lambda _: True)(report), fact


@pytest.mark.parametrize("name", methods.names())
def test_every_distillation_method_trains_a_student_with_its_example(name: str, teacher: dict, tmp_path: Path):
    method = methods.get(name)
    if method.example_data == "rationales":  # generation text with rationales: a tiny decoder learns sums step by step
        from tests.stepbystep_support import step_by_step_recipe

        settings = step_by_step_recipe(tmp_path, term=dict(method.example), stages=[{"distill": {"epochs": 6}}])
        (step,) = edgekd.compress(settings, quiet=True).steps
        assert step.accuracy > step.accuracy_before_recovery
        return
    # Beside kd, as methods are used: feature, hint and attention terms alone do not train the classifier.
    terms = [{"method": "kd"}, {"method": name, **method.example}]
    # The student reads another view (the same pixels): cross-modal needs one, every other method accepts it.
    settings = recipe(
        tmp_path / "run", teacher, [{"distill": {"method": terms}}],
        student={"model": card_of("cnn").tiny, "input": "same"}, data={"dataset": "digits", "views": {"same": {"resize": 8}}},
    )  # fmt: skip
    (step,) = edgekd.compress(settings, quiet=True).steps
    assert step.accuracy > step.accuracy_before_recovery


@pytest.mark.parametrize("name", backends.names())
def test_every_bench_backend_times_a_model_or_says_why_it_cannot_here(name: str, tmp_path: Path):
    torch.manual_seed(0)
    model = build_model(card_of("cnn").tiny, in_channels=1, num_classes=10).eval()
    example = torch.randn(1, 1, 8, 8)
    source: Any = model
    mode = "paired"  # an nn.Module runs in this process
    if backends.get(name).reads_onnx:
        source, mode = tmp_path / "model.onnx", "deployment"
        export_onnx(model, source, example)
    try:
        result = benchmark([source], mode=mode, rounds=2, backend=name, batch_sizes=(1, 4), threads=1, warmup_s=0.02,
                           min_iterations=5, min_duration_s=0.05, memory=False, roofline=False, input_shapes={"input": (1, 1, 8, 8)})  # fmt: skip
    except InputError as error:  # e.g. TensorRT without a GPU: a clear message, never a traceback
        assert name in str(error).lower() or "cuda" in str(error).lower()
        return
    assert {case.batch for case in result.cases} == {1, 4}
    assert all(case.latency.median > 0 for case in result.cases)


REGISTRIES = {
    "stages": stages, "methods": methods, "importances": importances, "profiles": profiles, "backends": backends,
    "models": models, "datasets": datasets, "targets": targets,
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_registry_names_a_typo_with_the_one_message(kind: str):
    registry = REGISTRIES[kind]
    name = registry.names()[0]
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    expected = f"unknown {registry.kind} '{typo}'. Did you mean '{name}'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        registry.check(typo)
    with pytest.raises(InputError, match=re.escape(expected)):
        registry.get(typo)


def test_no_module_keeps_its_own_copy_of_the_unknown_name_check():
    """Close matches and the list of known names come from edgekd.registry (unknown_name, close_matches) only."""
    package = Path(edgekd.__file__).parent
    copies = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path != package / "registry.py" and re.search(r"difflib|Did you mean|is not one of|choose one of", path.read_text())
    ]
    assert copies == []
