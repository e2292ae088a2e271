"""Divergence is never silent: the last update is checked, NaN outputs fail evaluation and parity,
report.json stays strict JSON, and the advice names the learning rate that was actually used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekd
from edgekd.distill import TrainingDiverged
from edgekd.errors import NotFinite
from edgekd.export.onnx_export import export_onnx
from edgekd.export.runtime import onnx_accuracy, parity
from edgekd.models import build_model
from tests.conftest import tiny_recipe

# 200 digits → about 144 training images: one batch of 256 per epoch, so an epoch is a single update.
ONE_UPDATE = {"limit": 200, "batch_size": 256}


def strict_json(path: Path) -> dict:
    return json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(f"{path.name} holds {token}"))


def test_a_blow_up_on_the_last_update_stops_the_run_and_names_the_stage_lr(tmp_path):
    recipe = tiny_recipe(
        tmp_path / "run", data={"dataset": "digits", **ONE_UPDATE},
        teacher={"model": "cnn(width=4)", "train": {"epochs": 1, "lr": 0.05}},
        stages=[{"distill": {"epochs": 1, "lr": 1e30, "optimizer": {"momentum": 0}}}],
    )
    with pytest.raises(TrainingDiverged) as error:
        edgekd.compress(recipe, quiet=True)
    message = str(error.value)
    assert "became NaN or infinite" in message and "epoch 1" in message
    assert "from stages[0].distill.lr" in message and "--set stages[0].distill.lr=1e+29" in message
    assert "stages[0].distill.grad_clip" in message and "last good checkpoint is intact" in message
    workdir = Path(recipe["workdir"])
    assert not (workdir / "progress.json").exists()  # the diverged student was never checkpointed
    assert strict_json(workdir / "report.json")["complete"] is False


def test_an_inherited_learning_rate_is_named_where_it_is_set(tmp_path):
    recipe = tiny_recipe(
        tmp_path / "run", data={"dataset": "digits", **ONE_UPDATE},
        teacher={"model": "cnn(width=4)", "train": {"epochs": 1, "lr": 0.05}},
        distill={"epochs": 1, "lr": 1e30, "optimizer": {"momentum": 0}},
        stages=[{"prune": {"ratio": 0.5}}],
    )
    with pytest.raises(TrainingDiverged, match=r"from distill\.lr: lower it .* or set stages\[0\]\.recover\.grad_clip"):
        edgekd.compress(recipe, quiet=True)


def test_a_diverging_teacher_names_teacher_train_lr(tmp_path):
    recipe = tiny_recipe(
        tmp_path / "run", data={"dataset": "digits", **ONE_UPDATE},
        teacher={"model": "cnn(width=4)", "train": {"epochs": 1, "lr": 1e30, "optimizer": {"momentum": 0}}},
    )
    with pytest.raises(TrainingDiverged, match=r"teacher cnn\(width=4\).*from teacher\.train\.lr"):
        edgekd.compress(recipe, quiet=True)


def _nan_model() -> torch.nn.Module:
    model = build_model("cnn(width=4)", in_channels=1, num_classes=10).eval()
    with torch.no_grad():
        model.fc.weight[3, 0] = float("nan")
    return model


def test_parity_and_onnx_accuracy_fail_on_nan_outputs(tmp_path):
    model = _nan_model()
    path = tmp_path / "nan.onnx"
    export_onnx(model, path, torch.zeros(1, 1, 8, 8))
    images = [torch.randn(16, 1, 8, 8)]
    with pytest.raises(NotFinite, match="NaN or infinite logits for 16 of 16"):
        parity(model, path, images, min_agreement=0.999)
    with pytest.raises(NotFinite, match="nan.onnx: ONNX Runtime computes NaN"):
        onnx_accuracy(path, [(images[0], torch.zeros(16, dtype=torch.long))])


def test_evaluating_a_model_with_nan_logits_is_refused():
    from edgekd.metrics import accuracy

    loader = [(torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))]
    with pytest.raises(NotFinite, match="8 of 8 samples"):
        accuracy(_nan_model(), loader, torch.device("cpu"))


def test_a_checkpoint_with_nan_weights_is_bad_input(tmp_path):
    from edgekd.errors import InputError
    from edgekd.models import load_state_dict_file

    torch.save(_nan_model().state_dict(), tmp_path / "nan.pt")
    with pytest.raises(InputError, match=r"nan\.pt.*NaN or infinite values in fc\.weight"):
        load_state_dict_file(build_model("cnn(width=4)", in_channels=1, num_classes=10), tmp_path / "nan.pt")
    assert np.isfinite(build_model("cnn(width=4)", in_channels=1, num_classes=10).fc.weight.detach().numpy()).all()
