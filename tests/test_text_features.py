"""Feature methods on transformers: hidden states (batch, tokens, dim) from built-in and
Hugging Face layers, padded tokens left out of every feature loss, the logit-reading methods on
text, and what generation data refuses — through the Objective and through `edgekd compress`."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

import edgekd
from edgekd.distill import Batch, DistillConfig, Objective, Phase
from edgekd.distill.registry import methods
from edgekd.distill.taps import FeatureTaps
from edgekd.models import build_model
from edgekd.recipe import TOKEN_METHODS

from tests.conftest import token_facts
from tests.test_exit_codes import assert_bad_input, edgekd_cli, write_recipe
from tests.test_run_generate import generate_recipe
from tests.test_run_text import text_recipe

CPU = torch.device("cpu")
PAD, LENGTH = 0, 10
BLOCK = "encoder.blocks.0"  # a bert_s block: (B, T, dim) hidden states

# Settings on bert_s layers for every method that reads features: a new one must say how it reads a transformer.
TEXT_TERMS = {
    "feature": {"method": "feature", "pairs": [[BLOCK, BLOCK], ["encoder.blocks.1", "encoder.blocks.1"]]},
    "hint": {"method": "hint", "student_layer": BLOCK, "teacher_layer": BLOCK},
    "attention": {"method": "attention", "pairs": [[BLOCK, BLOCK]]},
    "self": {"method": "self", "heads": [BLOCK]},
}
FEATURE_METHODS = [name for name in methods.names() if methods.get(name).reads_features]


def unpack(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch tensor carrying the token ids and, behind them, the attention mask: so a test can change
    the ids of padded tokens and keep the mask."""
    return {"input_ids": x[:, :LENGTH], "attention_mask": x[:, LENGTH:]}


def token_batch(seed: int = 0, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (batch, LENGTH), generator=generator)
    mask = torch.ones_like(ids)
    mask[::2, LENGTH - 4 :] = 0  # every other row padded
    return torch.cat([ids.masked_fill(mask == 0, PAD), mask], dim=1), torch.randint(0, 3, (batch,), generator=generator)


def encoders(student_dim: int = 32) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = build_model("bert_s(dim=32, depth=2, heads=4, mlp_ratio=2)", token_facts("classify", max_length=LENGTH)).eval()
    if student_dim == 32:
        return teacher, copy.deepcopy(teacher)
    return teacher, build_model(f"bert_s(dim={student_dim}, depth=2, heads=2, mlp_ratio=2)", token_facts("classify", max_length=LENGTH))


def objective(term: dict, student, teacher, example, view=unpack, source=None) -> Objective:
    config = DistillConfig(method=[term], alpha=0.9, kd_on="all")
    return Objective(Phase(config, student, teacher, CPU, student_view=view, teacher_view=view, source=source), example)


def test_every_feature_method_has_transformer_settings():
    assert sorted(FEATURE_METHODS) == sorted(TEXT_TERMS)


@pytest.mark.parametrize("name", sorted(set(FEATURE_METHODS) - {"self"}))
def test_a_feature_loss_is_zero_when_the_student_equals_the_teacher(name):
    x, y = token_batch()
    teacher, student = encoders()
    with objective(TEXT_TERMS[name], student, teacher, x[:2]) as built:
        assert built(x, y).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_a_feature_loss_trains_the_student_and_leaves_out_padded_tokens(name):
    """Padded tokens' hidden states change with their ids, the masked loss does not (real tokens never attend to them)."""
    x, y = token_batch()
    teacher, student = encoders()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    other_pads = x.clone()
    other_pads[:, :LENGTH] = torch.where(x[:, LENGTH:] == 0, 7, x[:, :LENGTH])
    with objective(TEXT_TERMS[name], student, teacher, x[:2]) as built:
        student.eval()  # the same forward pass twice
        loss = built(x, y)
        hidden = built.student_taps[BLOCK].detach()
        moved = built(other_pads, y)
        padded = x[:, LENGTH:] == 0
        assert not torch.allclose(built.student_taps[BLOCK][padded], hidden[padded])  # the padded states did change
        assert torch.allclose(built.student_taps[BLOCK][~padded], hidden[~padded], atol=1e-5)
        assert moved.item() == pytest.approx(loss.item(), rel=1e-5)
        assert torch.isfinite(loss) and loss.item() > 0
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
        assert all(p.grad is None for p in teacher.parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in [*student.modules(), *teacher.modules()]) == 0


def test_a_hint_regressor_maps_a_narrower_student_to_the_teacher():
    x, y = token_batch()
    teacher, student = encoders(student_dim=16)
    with objective(TEXT_TERMS["hint"], student, teacher, x[:2]) as built:
        (regressor,) = built.terms[0].adapters
        assert (regressor.in_features, regressor.out_features) == (16, 32)
        built(x, y).backward()
        assert regressor.weight.grad is not None


def test_hugging_face_layers_that_return_tuples_give_their_hidden_state():
    from tests.hf_tiny import bert_classifier, token_batches

    model = bert_classifier()
    layers = ["bert.encoder.layer.0", "bert.encoder.layer.1.attention", "bert.encoder.layer.1.attention.self"]
    taps = FeatureTaps(model, layers, "teacher")
    (inputs,) = token_batches("encoder", count=1)
    with torch.no_grad():
        model(**inputs)
    try:
        assert all(taps[path].shape == (4, 10, 32) for path in layers)
    finally:
        taps.close()


def test_a_hugging_face_student_learns_hints_from_a_wider_teacher():
    from tests.hf_tiny import bert_classifier

    teacher, student = bert_classifier(hidden=32), bert_classifier(seed=1, hidden=16).train()
    term = {"method": "hint", "student_layer": "bert.encoder.layer.1.attention", "teacher_layer": "bert.encoder.layer.1"}
    x, y = token_batch()
    with objective(term, student, teacher, x[:2]) as built:
        loss = built(x, y)
        loss.backward()
        assert torch.isfinite(loss) and student.bert.encoder.layer[0].attention.self.query.weight.grad is not None


@pytest.mark.parametrize("spec", ["gpt_s(dim=32, depth=2, heads=2)", "t5_s(dim=32, depth=2, heads=2)"])
def test_generation_models_distill_hidden_states_of_real_tokens(spec):
    """Causal LM: the attention mask; encoder-decoder: the decoder's real positions are those with a target."""
    task = "causal-lm" if spec.startswith("gpt") else "seq2seq"
    torch.manual_seed(0)
    teacher = build_model(spec, token_facts(task, max_length=16)).eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, _ = token_batch()
    targets = torch.randint(3, 60, (6, 5))
    targets[::2, 3:] = -100
    if task == "seq2seq":
        decoder = torch.cat([torch.zeros(6, 1, dtype=torch.long), targets[:, :-1].clamp(min=0)], dim=1)
        view = lambda x: {**unpack(x), "decoder_input_ids": decoder[: len(x)]}  # noqa: E731
        layer, y = "decoder.blocks.1", targets
    else:
        view, layer, y = unpack, "decoder.blocks.1", x[:, :LENGTH].masked_fill(x[:, LENGTH:] == 0, -100)
    term = {"method": "feature", "pairs": [[layer, layer]]}
    with objective(term, student, teacher, x[:2], view=view) as built:
        from edgekd.distill.features import token_mask

        batch = Batch(built, x, y)
        mask = token_mask(batch, layer, batch.student_feature(layer))
        assert torch.equal(mask, (y != -100) if task == "seq2seq" else x[:, LENGTH:].bool())
        loss = built(x, y)
        assert torch.isfinite(loss) and loss.item() > 0


# ---------------------------------------------------------------- through edgekd compress


def test_a_pruned_text_student_recovers_with_hints_from_the_teacher_layers(tmp_path):
    """Pruning the hidden size makes the student's blocks narrower than the teacher's: the hint regressor maps them."""
    hint = {"method": "hint", "student_layer": "encoder.blocks.1", "teacher_layer": "encoder.blocks.1"}
    recipe = text_recipe(tmp_path, stages=[
        {"prune": {"target_macs": 0.6, "steps": 1, "hidden": True}, "recover": {"method": [{"method": "kd"}, hint], "epochs": 2}},
        {"export": {}},
    ])  # fmt: skip
    report = edgekd.compress(recipe, quiet=True).to_json()
    (step,) = report["steps"]
    run = tmp_path / "run"
    checkpoint = json.loads((run / "progress.json").read_text())["checkpoint"]
    student = torch.load(run / "checkpoints" / checkpoint, weights_only=True)["student"]
    assert student["encoder.blocks.1.norm2.weight"].shape[0] < 32  # narrower than the teacher's 32
    assert step["accuracy"] > 0.5 and step["accuracy"] >= step["accuracy_before_recovery"] - 0.05
    assert report["student"]["onnx"]["fp32"]["parity"]["agreement"] >= 0.999


def test_a_pruned_causal_lm_recovers_with_hints_per_real_token(tmp_path):
    hint = {"method": "hint", "student_layer": "decoder.blocks.1", "teacher_layer": "decoder.blocks.1"}
    recipe = generate_recipe(tmp_path, stages=[
        {"prune": {"target_macs": 0.6, "steps": 1, "hidden": True}, "recover": {"method": [{"method": "kd"}, hint], "epochs": 2}},
    ])  # fmt: skip
    (step,) = edgekd.compress(recipe, quiet=True).to_json()["steps"]
    assert step["accuracy"] > step["accuracy_before_recovery"]  # token accuracy


def test_a_hugging_face_vit_recovers_with_feature_matching(tmp_path, make_recipe):
    pytest.importorskip("transformers")
    vit = ("hf-config:vit(image_size=8, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, "
           "num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)")  # fmt: skip
    feature = {"method": "feature", "pairs": [["vit.layers.1", "vit.layers.1"]]}
    recipe = make_recipe(
        teacher={"model": vit, "train": {"epochs": 2, "lr": 0.003, "optimizer": {"name": "adamw"}}}, student="teacher",
        distill={"epochs": 1, "lr": 0.001, "optimizer": {"name": "adamw"}, "method": [{"method": "kd"}, feature]},
        stages=[{"prune": {"target_macs": 0.6, "steps": 1}}, {"export": {}}],
    )
    report = edgekd.compress(recipe, quiet=True).to_json()
    (step,) = report["steps"]
    assert step["macs"] < report["teacher"]["macs"] and step["accuracy"] > 0.3
    assert report["student"]["onnx"]["fp32"]["parity"]["agreement"] >= 0.999


SMALL = "bert_s(dim=16, depth=1, heads=2, mlp_ratio=2)"
# The methods that change who teaches whom, on text: each through a whole run.
TEACHING_TERMS = {
    "multi-teacher": {"method": "multi-teacher", "weighting": "confidence",
                      "teachers": [{"model": SMALL, "train": {"epochs": 2, "lr": 0.003, "optimizer": {"name": "adamw"}}}]},
    "ta": {"method": "ta", "assistant_macs": 0.5, "assistant_epochs": 3},
    "dml": {"method": "dml", "peers": 1, "select": "best"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TEACHING_TERMS))
def test_a_text_student_learns_from_other_teachers_assistants_and_peers(name, tmp_path):
    recipe = text_recipe(
        tmp_path, student=SMALL, stages=[{"distill": {}}],
        distill={"method": [TEACHING_TERMS[name]], "epochs": 6, "lr": 0.005, "optimizer": {"name": "adamw"}},
    )
    report = edgekd.compress(recipe, quiet=True).to_json()
    (step,) = report["steps"]
    assert step["accuracy"] > 0.5  # the words give the class away; chance is 1/3


@pytest.mark.parametrize("name", [name for name in methods.names() if name not in TOKEN_METHODS])
def test_generation_data_refuses_methods_not_defined_per_token(name, tmp_path, capsys):
    term = {"method": name, **methods.get(name).example}
    recipe = write_recipe(tmp_path / "recipe.yaml", generate_recipe(tmp_path, distill={"method": [term]}))
    code, output = edgekd_cli(["validate", recipe], capsys)
    assert_bad_input(code, output, f"distill.method: {name!r} is not defined per token", "feature, hint or attention")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", [name for name in TOKEN_METHODS if methods.get(name).reads_features])
def test_generation_data_accepts_feature_methods(name, tmp_path, capsys):
    term = {"method": name, **{k: v for k, v in TEXT_TERMS[name].items() if k != "method"}}
    recipe = write_recipe(tmp_path / "recipe.yaml", generate_recipe(tmp_path, distill={"method": [{"method": "kd"}, term]}))
    code, output = edgekd_cli(["validate", recipe], capsys)
    assert code == 0, output
    assert re.search(r"\bok\b|valid", output, re.IGNORECASE), output
