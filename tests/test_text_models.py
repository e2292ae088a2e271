"""The built-in text transformers, parametrised over the registry: every model that takes tokens
builds from data facts, respects padding and causality, traces with torch.fx and exports to ONNX
with dynamic batch and sequence axes."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgekd.errors import InputError
from edgekd.facts import DataFacts
from edgekd.models import build_model, card_of, model_names
from edgekd.outputs import run_model
from tests.conftest import card_facts

TEXT_MODELS = model_names("tokens")
VOCAB, PAD = card_facts(TEXT_MODELS[0]).vocab_size, card_facts(TEXT_MODELS[0]).pad_id


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(card_of(name).tiny, card_facts(name)).eval()


def batch(name: str, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    inputs = {"input_ids": ids, "attention_mask": (ids != PAD).long()}
    if card_of(name).tasks[0] == "seq2seq":
        inputs["decoder_input_ids"] = torch.tensor([[PAD, 7, 8, 9, 10]]).expand(len(ids), -1)
    return inputs


def test_the_registry_has_an_encoder_a_decoder_and_an_encoder_decoder():
    assert {card_of(name).tasks[0] for name in TEXT_MODELS} >= {"classify", "causal-lm", "seq2seq"}


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_padding_changes_nothing_for_the_real_tokens(name):
    model = tiny(name)
    real = torch.tensor([[5, 6, 7, 8, 9, 10]])
    padded = torch.cat([real, torch.full((1, 4), PAD)], dim=1)
    with torch.no_grad():
        alone = run_model(model, batch(name, real))
        with_padding = run_model(model, batch(name, padded))
    if card_of(name).tasks[0] == "causal-lm":
        with_padding = with_padding[:, : real.shape[1]]  # the padded positions' own predictions are never scored
    torch.testing.assert_close(with_padding, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in TEXT_MODELS if card_of(n).tasks[0] != "classify"])
def test_decoders_do_not_see_later_tokens(name):
    model = tiny(name)
    ids = torch.randint(3, VOCAB, (1, 8))
    inputs = batch(name, ids)
    changed = {k: v.clone() for k, v in inputs.items()}
    decoded = "decoder_input_ids" if "decoder_input_ids" in inputs else "input_ids"
    changed[decoded][:, 3:] = 4  # everything after position 2
    with torch.no_grad():
        before, after = run_model(model, inputs), run_model(model, changed)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3:], after[:, 3:])


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_models_trace_with_fx_and_export_to_onnx_with_dynamic_batch_and_length(name, tmp_path):
    model = tiny(name)
    example = batch(name, torch.randint(3, VOCAB, (2, 9)))
    traced = torch.fx.symbolic_trace(model, concrete_args=None)
    with torch.no_grad():
        torch.testing.assert_close(run_model(traced, example), run_model(model, example))
    names = list(example)
    path = tmp_path / f"{name}.onnx"
    axes = {key: {0: "batch", 1: f"{key}_length"} for key in names}
    torch.onnx.export(
        model, (), str(path), kwargs=example, dynamo=False, opset_version=17, input_names=names, output_names=["logits"],
        dynamic_axes={**axes, "logits": {0: "batch"}},
    )
    other = batch(name, torch.randint(3, VOCAB, (3, 13)))  # another batch size and sequence length
    other["attention_mask"][1, 10:] = 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {k: v.numpy() for k, v in other.items()})
    with torch.no_grad():
        expected = run_model(model, other).numpy()
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_a_sequence_longer_than_max_length_is_refused_with_the_fix(name):
    model = tiny(name)
    with pytest.raises(InputError, match="17 tokens is longer than the model's max_length \\(16\\)"):
        run_model(model, batch(name, torch.randint(3, VOCAB, (1, 17))))


def test_a_text_model_built_for_the_wrong_task_says_which_models_fit():
    with pytest.raises(InputError, match="'t5_s' takes tokens inputs for seq2seq, but the data gives tokens inputs for classify"):
        build_model("t5_s", card_facts("bert_s"))
    with pytest.raises(InputError, match="for image: cnn"):
        build_model("gpt_s", in_channels=1, num_classes=10)


def test_the_data_facts_size_the_model_unless_the_spec_says_otherwise():
    facts = DataFacts(inputs="tokens", task="causal-lm", vocab_size=77, max_length=24, pad_id=3)
    model = build_model("gpt_s(dim=32, depth=1, heads=2)", facts)
    assert model.lm_head.out_features == 77 and model.decoder.positions.num_embeddings == 24
    assert model.decoder.tokens.padding_idx == 3
    assert build_model("gpt_s(dim=32, depth=1, heads=2, max_length=40)", facts).decoder.positions.num_embeddings == 40
