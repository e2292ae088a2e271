"""The distillation family: each method's loss, where its gradients go, real training on digits,
hooks and training-only parts that never outlive a phase, and errors that name what is wrong."""

import copy

import onnx
import pytest
import torch

import edgekd
from edgekd.distill import DistillConfig, Objective, Phase
from edgekd.errors import InputError, RecipeError
from edgekd.models import build_model
from edgekd.recipe import load_recipe
from edgekd.run import Run

CPU = torch.device("cpu")
LAYER = "layers.1"  # a residual block of resnet_s(depth=8): a (B, C, H, W) feature map

TERMS = {
    "kd": {"method": "kd"},
    "feature": {"method": "feature", "pairs": [[LAYER, LAYER]]},
    "feature-cosine": {"method": "feature", "pairs": [{"student": LAYER, "teacher": LAYER}], "loss": "cosine"},
    "hint": {"method": "hint", "student_layer": LAYER, "teacher_layer": LAYER},
    "attention": {"method": "attention", "pairs": [[LAYER, LAYER], ["layers.2", "layers.2"]]},
    "dml": {"method": "dml", "peers": 1, "select": "student"},
    "self": {"method": "self", "heads": ["layers.0", LAYER]},
}
ZERO_WHEN_EQUAL = {"kd", "feature", "feature-cosine", "hint", "attention"}


@pytest.fixture(scope="module")
def digits_batch():
    from edgekd.data import load_data

    data = load_data("digits", seed=0)
    return data.train.tensors[0][:32], data.train.tensors[1][:32]


def twin_models():
    torch.manual_seed(0)
    teacher = build_model("resnet_s(width=4)", in_channels=1, num_classes=10)
    return teacher, copy.deepcopy(teacher)


def objective_for(term: dict, student, teacher, example, alpha: float = 1.0) -> Objective:
    config = DistillConfig(method=[term], alpha=alpha, kd_on="all")  # the soft term on every sample, right or wrong
    return Objective(Phase(config, student, teacher, CPU), example)


def all_hooks(*models) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for model in models for m in model.modules())


@pytest.mark.parametrize("name", sorted(ZERO_WHEN_EQUAL))
def test_loss_is_zero_when_the_student_equals_the_teacher(name, digits_batch):
    x, y = digits_batch
    teacher, student = twin_models()
    teacher.eval(), student.eval()
    with objective_for(TERMS[name], student, teacher, x[:4]) as objective:
        assert objective(x, y).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_gradients_reach_the_student_and_its_parts_never_the_teacher(name, digits_batch):
    x, y = digits_batch
    teacher, student = twin_models()
    torch.manual_seed(1)
    with torch.no_grad():  # a student that differs from the teacher, as after a pruning step
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = copy.deepcopy(teacher.state_dict())
    teacher.train()  # even a teacher left in train mode must come out untouched
    with objective_for(TERMS[name], student, teacher, x[:4], alpha=0.9) as objective:
        loss = objective(x, y)
        assert torch.isfinite(loss) and loss.item() > 0
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
        assert all(p.grad is not None for p in objective.parameters())
        assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all_hooks(student, teacher) == 0


def test_multi_teacher_target_weightings(digits_batch, tmp_path):
    x, y = digits_batch
    run = prepared_run(tmp_path, teacher_epochs=2)
    other = {"model": "cnn(width=4)", "train": {"epochs": 2, "lr": 0.05}}
    student = copy.deepcopy(run.teacher).requires_grad_(True)
    for weighting, extra in (("mean", {}), ("fixed", {"weights": [1.0, 0.0]}), ("confidence", {})):
        term = {"method": "multi-teacher", "teachers": [other], "weighting": weighting, **extra}
        phase = Phase(DistillConfig(method=[term], alpha=1.0), student, run.teacher, CPU, source=run)
        with Objective(phase, x[:4]) as objective:
            target = objective.terms[0].target(objective_batch(objective, x, y))
            assert torch.allclose(target.sum(1), torch.ones(len(x)))
            if weighting == "fixed":  # all weight on the main teacher, which equals the student
                assert objective(x, y).item() == pytest.approx(0.0, abs=1e-5)


def objective_batch(objective, x, y):
    from edgekd.distill import Batch

    return Batch(objective, x, y)


def prepared_run(tmp_path, teacher_epochs: int = 2, **extra) -> Run:
    recipe = {
        "name": "family", "workdir": str(tmp_path / "run"), "data": {"dataset": "digits"},
        "teacher": {"model": "resnet_s(width=4)", "train": {"epochs": teacher_epochs, "lr": 0.05}},
        "student": "cnn(width=4)", **extra,
    }
    run = Run(load_recipe(recipe), quiet=True)
    run.prepare()
    return run


FAMILY_RECIPES = {
    "feature+kd": [{"method": "kd", "weight": 1}, {"method": "feature", "weight": 1, "pairs": [["features.3", LAYER]]}],
    "hint with stage 1": [{"method": "kd"}, {"method": "hint", "student_layer": "features.3", "teacher_layer": LAYER, "stage1_epochs": 1}],
    "attention+kd": [{"method": "kd"}, {"method": "attention", "weight": 1000, "pairs": [["features.3", LAYER]]}],
    "dml best": [{"method": "dml", "peers": 1, "select": "best"}],
    "self": [{"method": "kd"}, {"method": "self", "heads": ["features.1"]}],
    "ta by spec": [{"method": "ta", "assistant": "cnn(width=6)", "assistant_epochs": 1}],
    "multi-teacher": [{"method": "multi-teacher", "teachers": [{"model": "cnn(width=6)", "train": {"epochs": 1}}], "weighting": "confidence"}],
}


@pytest.mark.parametrize("name", sorted(FAMILY_RECIPES))
def test_each_method_trains_a_real_student_and_exports_clean(name, tmp_path):
    recipe = {
        "name": "family", "workdir": str(tmp_path / "run"), "data": {"dataset": "digits"},
        "teacher": {"model": "resnet_s(width=4)", "train": {"epochs": 2, "lr": 0.05}},
        "student": "cnn(width=4)",
        "distill": {"method": FAMILY_RECIPES[name], "epochs": 1, "lr": 0.05},
        "stages": [{"distill": {}}],
    }
    run = Run(load_recipe(recipe), quiet=True)
    report = run.execute()
    (step,) = report.steps
    assert step.accuracy > step.accuracy_before_recovery
    assert all_hooks(run.student, run.teacher) == 0
    fresh = build_model("cnn(width=4)", in_channels=1, num_classes=10)
    assert run.student.state_dict().keys() == fresh.state_dict().keys()  # no adapter or head inside
    path = tmp_path / "student.onnx"
    torch.onnx.export(run.student.eval(), run.example_input(), path, dynamo=False)
    initializers = {i.name for i in onnx.load(path).graph.initializer}
    assert not any("adapter" in n or "head" in n or "peer" in n for n in initializers)


def test_teacher_assistant_made_by_pruning_the_teacher(tmp_path):
    run = prepared_run(tmp_path)
    from edgekd.distill.strategies import AssistantConfig

    assistant = run.assistant(AssistantConfig(method="ta", assistant_macs=0.5, assistant_epochs=1))
    teacher_macs, assistant_macs = run.measure(run.teacher)["macs"], run.measure(assistant)["macs"]
    assert assistant_macs <= 0.55 * teacher_macs
    assert run.assistant(AssistantConfig(method="ta", assistant_macs=0.5, assistant_epochs=1)) is assistant


def test_cross_modal_student_reads_its_own_view(tmp_path):
    recipe = {
        "name": "views", "workdir": str(tmp_path / "run"),
        "data": {"dataset": "digits", "views": {"low": {"resize": 4}}},
        "teacher": {"model": "resnet_s(width=4)", "train": {"epochs": 2, "lr": 0.05}},
        "student": {"model": "cnn(width=8)", "input": "low"},
        "distill": {"method": "cross-modal", "epochs": 3, "lr": 0.05},
        "stages": [{"distill": {}}],
    }
    report = edgekd.compress(recipe, quiet=True)
    assert report.student.accuracy > 0.5
    assert report.student.macs < report.teacher.macs
    with pytest.raises(InputError, match="different views"):
        edgekd.compress({**recipe, "student": "cnn(width=8)", "workdir": str(tmp_path / "same")}, quiet=True)


def test_early_stopped_teacher_is_a_different_cached_teacher(tmp_path):
    full = prepared_run(tmp_path, teacher_epochs=4)
    recipe = {
        "name": "early", "workdir": str(tmp_path / "run"), "data": {"dataset": "digits"},
        "teacher": {"model": "resnet_s(width=4)", "train": {"epochs": 4, "lr": 0.05}, "checkpoint_epoch": 1},
    }
    early = Run(load_recipe(recipe), quiet=True)
    early.prepare()
    assert len(list((tmp_path / "run").glob("teacher-*.pt"))) == 2
    assert early.report.teacher.accuracy != full.report.teacher.accuracy


@pytest.mark.parametrize(
    "method,expected",
    [
        ("kdd", "unknown distillation method 'kdd'. Did you mean 'kd'"),
        ([{"method": "atention", "pairs": [["a", "b"]]}], "Did you mean 'attention'"),
        ([{"method": "feature"}], "[0].pairs: Field required"),
        ("feature", "write it as method: [{method: feature"),
    ],
)
def test_bad_method_settings_name_the_method(method, expected, tmp_path):
    recipe = {"name": "bad", "teacher": {"model": "cnn", "train": {"epochs": 1}}, "distill": {"method": method}}
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe)
    assert any(expected in p for p in error.value.problems), error.value.problems


def test_a_layer_that_does_not_exist_lists_close_matches(digits_batch):
    x, _ = digits_batch
    teacher, student = twin_models()
    with pytest.raises(InputError, match=r"student layer 'layers\.7' does not exist\. Did you mean .*'layers\.1'"):
        objective_for({"method": "feature", "pairs": [["layers.7", LAYER]]}, student, teacher, x[:4])
    assert all_hooks(student, teacher) == 0
