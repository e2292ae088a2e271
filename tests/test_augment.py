"""Augmentation and the soft labels that survive it: seeded views, mixing targets, the teacher cache
per view, kd_on and α schedules, per-phase validation, and bad settings caught before training."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import edgekd
from edgekd.data import load_data
from edgekd.data.augment import OPERATIONS, AugmentStep, TrainBatches, make_augmenter
from edgekd.distill import Batch, DistillConfig, Objective, Phase, fit
from edgekd.distill.losses import kd_loss, soft_weights
from edgekd.quant.stage import QATConfig, QATStage
from edgekd.recipe import load_recipe
from edgekd.run import Run

CROP_FLIP_ERASE = [{"random_crop": {"padding": 1}}, "horizontal_flip", {"rotation": {"degrees": 10}}, {"random_erasing": {"p": 0.5}}]
EVERYTHING = [*CROP_FLIP_ERASE, {"mixup": {"alpha": 0.4}}, {"cutmix": {"alpha": 1.0}}]


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def augmenter(steps, data, seed=0):
    return make_augmenter([AugmentStep.model_validate(s) for s in steps], data, seed)


def view_of(aug, data, index, view):
    return aug(data.train.tensors[0][index], data.train.tensors[1][index], index, view)


def test_a_view_depends_on_seed_view_and_sample_only(digits):
    aug = augmenter(EVERYTHING, digits)
    index = torch.arange(48)
    images, targets = view_of(aug, digits, index, 5)
    # Any batch composition and order gives each sample the same augmented image and target.
    shuffled = torch.randperm(48, generator=torch.Generator().manual_seed(1))
    for part in shuffled.split(7):
        again, again_targets = view_of(augmenter(EVERYTHING, digits), digits, part, 5)
        assert torch.equal(again, images[part]) and torch.equal(again_targets, targets[part])
    assert not torch.equal(view_of(aug, digits, index, 6)[0], images)  # another view
    assert not torch.equal(view_of(augmenter(EVERYTHING, digits, seed=1), digits, index, 5)[0], images)  # another seed
    assert not torch.equal(images, digits.train.tensors[0][index])


@pytest.fixture(scope="module")
def colour_images():
    from edgekd.data import make_bundle

    rng = np.random.default_rng(0)
    return make_bundle("rgb", rng.random((120, 3, 12, 12)), np.arange(120) % 4, None, None, seed=0, val_split=0.1, test_split=0.2)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_keeps_the_shape_changes_the_images_and_repeats_exactly(name, colour_images):
    settings = {"random_crop": {"padding": 2}, "horizontal_flip": {"p": 1.0}, "random_erasing": {"p": 1.0}}.get(name, {})
    aug = augmenter([{name: settings}], colour_images)
    index = torch.arange(len(colour_images.train))
    images, targets = view_of(aug, colour_images, index, 0)
    assert images.shape == colour_images.train.tensors[0].shape and torch.isfinite(images).all()
    assert not torch.equal(images, colour_images.train.tensors[0])
    again, again_targets = view_of(augmenter([{name: settings}], colour_images), colour_images, index.flip(0), 0)
    assert torch.equal(again, images.flip(0)) and torch.equal(again_targets, targets.flip(0))


def test_ranks_see_disjoint_deterministic_views(digits):
    aug = augmenter(CROP_FLIP_ERASE, digits)
    single = TrainBatches(digits.loader("train", 32, shuffle=True, seed=3, indexed=True), aug, lambda epoch: epoch, torch.device("cpu"))
    seen = {}
    for rank in (0, 1):
        loader = digits.loader("train", 32, shuffle=True, seed=3, indexed=True, shard=(rank, 2))
        batches = TrainBatches(loader, aug, lambda epoch: epoch, torch.device("cpu"))
        batches.set_epoch(2)
        for x, _, index, view in batches:
            assert view == 2
            expected, _ = view_of(aug, digits, index, 2)
            assert torch.equal(x, expected)
            seen.setdefault(rank, []).append(index)
    first, second = (set(torch.cat(seen[r]).tolist()) for r in (0, 1))
    padding = -len(digits.train) % 2  # DistributedSampler repeats samples to give ranks equal shares
    assert len(first & second) == padding and len(first | second) == len(digits.train)
    assert len(single) == len(digits.loader("train", 32))


def test_mixup_targets_mix_each_sample_with_its_drawn_partner(digits):
    aug = augmenter([{"mixup": {"alpha": 0.4}}], digits)
    index = torch.arange(len(digits.train))
    images, targets = view_of(aug, digits, index, 2)
    draws = aug.draws(2)
    partner, keep = torch.from_numpy(draws.partner), torch.from_numpy(draws.keep)
    assert sorted(partner.tolist()) == index.tolist() and not (partner == index).any()  # a permutation, nobody alone
    assert (keep < 1).float().mean() > 0.9  # p = 1: nearly every sample is mixed (λ can round to 1)
    x, y = digits.train.tensors
    w = keep.view(-1, 1, 1, 1)
    assert torch.allclose(images, w * x + (1 - w) * x[partner], atol=1e-6)
    expected = keep[:, None] * F.one_hot(y, 10) + (1 - keep[:, None]) * F.one_hot(y[partner], 10)
    assert torch.allclose(targets, expected) and torch.allclose(targets.sum(1), torch.ones(len(index)))


def test_cutmix_pastes_the_partner_box_and_weights_targets_by_area(digits):
    aug = augmenter([{"cutmix": {"alpha": 1.0}}], digits)
    index = torch.arange(200)
    images, targets = view_of(aug, digits, index, 0)
    draws = aug.draws(0)
    x, y = digits.train.tensors
    boxes_seen = 0
    for i in index.tolist():
        top, bottom, left, right = draws.cut[i]
        partner = int(draws.partner[i])
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(images[i][:, inside], x[partner][:, inside])
        assert torch.equal(images[i][:, ~inside], x[i][:, ~inside])
        own = 1 - inside.float().mean()
        assert targets[i, y[i]] >= own - 1e-6 if y[i] == y[partner] else torch.isclose(targets[i, y[i]], own)
        boxes_seen += int(inside.any())
    assert boxes_seen > 100


def test_kd_on_teacher_correct_masks_the_samples_the_teacher_gets_wrong():
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [4.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2, 2, 1])
    assert soft_weights(teacher, labels, "teacher_correct").tolist() == [1.0, 0.0, 1.0, 0.0]
    assert soft_weights(teacher, labels, "all") is None
    mixed = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.5, 0.5], [0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])  # mixup targets
    assert soft_weights(teacher, mixed, "teacher_correct").tolist() == [1.0, 1.0, 0.0, 0.0]
    confidence = soft_weights(teacher, labels, "confidence")
    assert torch.allclose(confidence, F.softmax(teacher, 1)[torch.arange(4), labels])

    student = torch.randn(4, 3, requires_grad=True)
    mask = soft_weights(teacher, labels, "teacher_correct")
    loss = kd_loss(student, teacher, labels, 4.0, 0.9 * mask)
    per_sample = [
        kd_loss(student[i : i + 1], teacher[i : i + 1], labels[i : i + 1], 4.0, 0.9 if mask[i] else 0.0) for i in range(4)
    ]
    assert torch.isclose(loss, torch.stack(per_sample).mean())
    # The term inside a phase uses the same mask: a student equal to the teacher keeps only the CE of the wrong samples.
    from edgekd.models import build_model

    torch.manual_seed(0)
    net = build_model("cnn(width=4)", in_channels=1, num_classes=10).eval()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        logits = net(x)
    y = torch.where(torch.arange(16) % 2 == 0, logits.argmax(1), (logits.argmax(1) + 1) % 10)
    config = DistillConfig(alpha=0.7, kd_on="teacher_correct")
    with Objective(Phase(config, net, net, torch.device("cpu")), x[:2]) as objective, torch.no_grad():
        term = objective(x, y)
    wrong = torch.arange(16) % 2 == 1
    expected = F.cross_entropy(logits, y, reduction="none") * wrong.float() * 1.0
    expected = expected + F.cross_entropy(logits, y, reduction="none") * (~wrong).float() * 0.3
    assert torch.isclose(term, expected.mean(), atol=1e-6)


def test_alpha_schedule_runs_from_alpha_to_alpha_end_over_the_phase(make_recipe):
    config = DistillConfig(alpha=0.9, alpha_end=0.5)
    assert [config.alpha_at(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.9, 0.7, 0.5])
    assert DistillConfig(alpha=0.0, alpha_end=0.3).uses_soft_targets and not DistillConfig(alpha=0.0).uses_soft_targets
    run = Run(load_recipe(make_recipe()), quiet=True)
    run.prepare()
    student = run._build("cnn(width=4)", "student")
    seen = []
    original = Phase.alpha.fget

    class Watch(Phase):
        @property
        def alpha(self):
            seen.append(original(self))
            return seen[-1]

    batches = run.training_batches(7, recovery=True)
    settings = DistillConfig(epochs=2, alpha=0.9, alpha_end=0.5)
    phase = Watch(settings, student, run.teacher, run.device)
    fit(student, Objective(phase, next(iter(batches))[0][:4]), batches, settings, device=run.device, description="t")
    assert seen[0] == pytest.approx(0.9) and seen[-1] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(seen, seen[1:])) and len(seen) == 2 * len(batches)


def _raw_rows(data) -> set[bytes]:
    return {row.numpy().tobytes() for split in (data.train, data.val, data.test) for row in split.tensors[0]}


def test_calibration_and_evaluation_read_the_samples_as_stored(make_recipe):
    recipe = make_recipe(student="teacher", data={"dataset": "digits", "batch_size": 64, "augment": CROP_FLIP_ERASE})
    run = Run(load_recipe(recipe), quiet=True)
    run.prepare()
    run._start_fresh()
    raw = _raw_rows(run.data)
    inputs: list[torch.Tensor] = []
    depth = [0]  # record what the outermost module of a forward pass reads (inner layers may see it quantized)

    def record(module, args):
        if depth[0] == 0 and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4 and args[0].shape[1:] == (1, 8, 8):
            inputs.append(args[0].detach().clone())
        depth[0] += 1

    def leave(module, args, output):
        depth[0] -= 1

    hooks = torch.nn.modules.module
    handles = [hooks.register_module_forward_pre_hook(record), hooks.register_module_forward_hook(leave)]
    try:
        QATStage(QATConfig(calibration_batches=2), 0).apply(run, 1)  # calibrates on training batches
        assert inputs, "calibration ran no batch"
        run.evaluate(run.student)
        run.evaluate(run.teacher, "val", "teacher")
        assert all(row.numpy().tobytes() in raw for batch in inputs for row in batch)
        inputs.clear()
        run.train(run.student, DistillConfig(epochs=1, lr=1e-4), seed=1, description="recovery")
        augmented = sum(row.numpy().tobytes() not in raw for batch in inputs for row in batch)
        assert augmented > len(run.data.train) // 2  # the same check sees training augmentation
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cached_soft_labels_of_augmented_views_equal_the_live_teacher(make_recipe, precision):
    recipe = make_recipe(data={"dataset": "digits", "batch_size": 64, "augment": EVERYTHING, "augment_views": 3},
                         runtime={"teacher_cache_precision": precision})
    run = Run(load_recipe(recipe), quiet=True)
    run.prepare()
    cache = run.soft_labels()
    phase = Phase(DistillConfig(), run.teacher, run.teacher, run.device, soft_labels=run.soft_labels)
    batches = run.training_batches(seed=11, recovery=True)
    with Objective(phase, run.data.train.tensors[0][:4]) as objective, torch.no_grad():
        for epoch in (1, 2, 3, 4):
            batches.set_epoch(epoch)
            x, y, index, view = next(iter(batches))
            assert view in range(3)
            live = run.teacher(x)
            cached = objective.cached_soft_labels.logits(view, index)
            expected = live if precision == "fp32" else live.to(torch.float16).float()
            assert torch.equal(cached, expected)
            assert torch.equal(Batch(objective, x, y, index, view).teacher_logits, expected)  # what training reads
    summary = cache.summary()
    assert summary["views"] == 3 and summary["bytes"] > 0 and summary["build_seconds"] >= 0
    assert summary["precision"] == (["float32"] if precision == "fp32" else ["float16"])
    # A second run reads the stored views instead of computing them.
    again = Run(load_recipe(recipe), quiet=True)
    again.prepare()
    again.soft_labels().compute = None  # building would now fail
    assert torch.equal(again.soft_labels().all_logits(1), cache.all_logits(1))


def test_top_k_soft_labels_keep_the_top_probabilities_and_the_rest(make_recipe):
    run = Run(load_recipe(make_recipe(runtime={"teacher_cache_top_k": 3, "teacher_cache_precision": "fp32"})), quiet=True)
    run.prepare()
    cached = run.soft_labels().all_logits(None)
    with torch.no_grad():
        live = torch.cat([run.teacher(x) for x, _ in run.loader("train")])
    p_live, p_cached = F.softmax(live, 1), F.softmax(cached, 1)
    top = p_live.topk(3, dim=1)
    assert torch.allclose(p_cached.gather(1, top.indices), top.values, atol=1e-5)
    assert torch.allclose(1 - top.values.sum(1), 1 - p_cached.gather(1, top.indices).sum(1), atol=1e-5)
    assert run.soft_labels().summary()["format"] == "top-3 logits + tail"


def test_resumed_augmented_run_reaches_the_numbers_of_an_uninterrupted_one(tmp_path, make_recipe):
    data = {"dataset": "digits", "batch_size": 64, "augment": EVERYTHING, "augment_views": 2}
    distill = {"epochs": 2, "lr": 0.05, "alpha_end": 0.5, "kd_on": "teacher_correct"}
    stages = [{"distill": {"epochs": 2}}, {"distill": {"epochs": 3}}]
    whole = edgekd.compress(make_recipe(str(tmp_path / "whole"), data=data, distill=distill, stages=stages), quiet=True).to_json()
    edgekd.compress(make_recipe(str(tmp_path / "parts"), data=data, distill=distill, stages=stages[:1]), quiet=True)
    resumed = edgekd.compress(make_recipe(str(tmp_path / "parts"), data=data, distill=distill, stages=stages), resume=True, quiet=True).to_json()
    assert [s["accuracy"] for s in resumed["steps"]] == [s["accuracy"] for s in whole["steps"]]
    assert resumed["student"]["accuracy"] == whole["student"]["accuracy"]
    cache = resumed["teacher_cache"]
    assert cache["views"] == 2 and cache["bytes"] > 0 and "build_seconds" in cache


def test_each_recovery_reports_validation_of_teacher_and_student(make_recipe, capsys):
    recipe = make_recipe(teacher={"model": "resnet_s(width=4)", "train": {"epochs": 1, "lr": 0.01}}, student="cnn(width=8)",
                         stages=[{"distill": {"epochs": 8, "alpha": 0.0, "lr": 0.05}}])
    report = edgekd.compress(recipe).to_json()
    output = " ".join(capsys.readouterr().out.split())
    (step,) = report["steps"]
    assert step["teacher_val_accuracy"] == report["teacher"]["val_accuracy"]
    assert step["passes_teacher"] is True and step["val_accuracy"] > step["teacher_val_accuracy"]
    assert f"validation {step['val_accuracy']:.2%} vs teacher {step['teacher_val_accuracy']:.2%}: the student passes the teacher" in output


@pytest.mark.parametrize("augment, field", [
    ([{"random_crop": {"size": 12, "padding": 1}}], "data.augment[0].random_crop.size"),
    (["horizontal_flip", "color_jitter"], "data.augment[1].color_jitter"),
    ([{"mixup": {"alpha": 0}}], "data.augment[0].mixup.alpha"),
    ([{"cutmix": {"alpha": -1}}], "data.augment[0].cutmix.alpha"),
])
def test_bad_augmentation_exits_2_naming_the_field_before_training(tmp_path, make_recipe, capsys, augment, field):
    from edgekd.cli import main

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(make_recipe(data={"dataset": "digits", "augment": augment})))
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(path), "--quiet"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert field in " ".join((captured.out + captured.err).split())
    assert not list(Path(tmp_path / "run").glob("teacher-*.pt"))  # nothing trained


def test_an_augmented_recipe_loads_back_from_its_json_dump(make_recipe):
    recipe = load_recipe(make_recipe(data={"dataset": "digits", "augment": [*EVERYTHING, "color_jitter"]}))
    dumped = recipe.model_dump(mode="json")
    assert dumped["data"]["augment"][1] == {"horizontal_flip": {"p": 0.5}}  # only the operation given
    assert load_recipe(dumped).fingerprint() == recipe.fingerprint()
