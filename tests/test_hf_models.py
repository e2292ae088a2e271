"""Hugging Face models from configs and from local folders, with heads that follow the data's task;
never a download. Tiny random models: ViT and ConvNeXt image classifiers, BERT, GPT-2, T5."""

import json
import sys

import pytest
import torch

from edgekd.errors import InputError
from edgekd.facts import DataFacts
from edgekd.models import build_model
from edgekd.outputs import logits_of, run_model
from tests.conftest import token_facts

transformers = pytest.importorskip("transformers")

IMAGES = DataFacts(in_channels=1, num_classes=4, image_size=16)
CLASSIFY, CAUSAL, SEQ2SEQ = (token_facts(task, vocab=90, max_length=32) for task in ("classify", "causal-lm", "seq2seq"))

# spec, facts, model class, logits shape for the inputs below
FAMILIES = {
    "vit": ("hf-config:vit(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=4)", IMAGES, "ViTForImageClassification", (2, 4)),
    "convnext": ("hf-config:convnext(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2)", IMAGES, "ConvNextForImageClassification", (2, 4)),
    "bert": ("hf-config:bert(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)", CLASSIFY, "BertForSequenceClassification", (2, 3)),
    "gpt2": ("hf-config:gpt2(n_embd=32, n_layer=2, n_head=4)", CAUSAL, "GPT2LMHeadModel", (2, 10, 90)),
    "t5": ("hf-config:t5(d_model=32, d_kv=8, num_layers=2, num_heads=4, d_ff=64)", SEQ2SEQ, "T5ForConditionalGeneration", (2, 5, 90)),
}


def inputs_for(facts: DataFacts):
    torch.manual_seed(1)
    if facts.inputs == "image":
        return torch.randn(2, 1, 16, 16)
    ids = torch.randint(3, 90, (2, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if facts.task == "seq2seq":
        batch["decoder_input_ids"] = ids[:, :5]
    return batch


@pytest.mark.parametrize("family", FAMILIES)
def test_a_config_spec_builds_the_head_the_task_needs_sized_by_the_data(family):
    spec, facts, cls, shape = FAMILIES[family]
    model = build_model(spec, facts).eval()
    assert type(model).__name__ == cls
    with torch.no_grad():
        assert logits_of(run_model(model, inputs_for(facts))).shape == shape
    config = model.config
    if facts.inputs == "tokens":
        assert config.vocab_size == 90 and config.pad_token_id == 0
    else:
        assert config.num_channels == 1
    if facts.task == "classify":
        assert config.num_labels == facts.num_classes


def test_the_spec_wins_over_the_data_facts():
    model = build_model("hf-config:gpt2(n_embd=32, n_layer=1, n_head=4, n_positions=64)", CAUSAL)
    assert model.config.n_positions == 64 and model.config.vocab_size == 90


@pytest.mark.parametrize("family", ["vit", "bert", "gpt2", "t5"])
def test_a_saved_model_loads_from_its_folder_with_the_same_outputs(family, tmp_path):
    spec, facts, _, _ = FAMILIES[family]
    model = build_model(spec, facts).eval()
    model.save_pretrained(tmp_path / family)
    loaded = build_model(f"hf:{tmp_path / family}", facts).eval()
    batch = inputs_for(facts)
    with torch.no_grad():
        torch.testing.assert_close(logits_of(run_model(loaded, batch)), logits_of(run_model(model, batch)))


def test_a_body_without_a_trained_classifier_gets_a_head_of_the_data_s_size(tmp_path):
    body = transformers.BertModel(transformers.BertConfig(vocab_size=90, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64))
    body.save_pretrained(tmp_path)
    model = build_model(f"hf:{tmp_path}", CLASSIFY)
    assert model.classifier.out_features == 3


def test_a_local_folder_that_does_not_fit_the_data_is_refused(tmp_path):
    spec, facts, _, _ = FAMILIES["bert"]
    build_model(spec, facts).save_pretrained(tmp_path / "three")
    with pytest.raises(InputError, match="classifies into 3 classes but the data has 5"):
        build_model(f"hf:{tmp_path / 'three'}", DataFacts(inputs="tokens", task="classify", vocab_size=90, num_classes=5))
    with pytest.raises(InputError, match="knows 90 tokens but the data's tokenizer has 500"):
        build_model(f"hf:{tmp_path / 'three'}", DataFacts(inputs="tokens", task="classify", vocab_size=500, num_classes=3))


def test_a_missing_folder_is_named_and_never_downloaded(tmp_path):
    with pytest.raises(InputError, match=f"the folder '{tmp_path / 'nothing'}' does not exist.*never downloads"):
        build_model(f"hf:{tmp_path / 'nothing'}", CLASSIFY)
    with pytest.raises(InputError, match="has no config.json"):
        build_model(f"hf:{tmp_path}", CLASSIFY)
    with pytest.raises(InputError, match="'bert-base-uncased' does not exist"):
        build_model("hf:bert-base-uncased", CLASSIFY)  # a hub name is a folder name like any other


def test_config_spec_mistakes_are_named_with_close_matches():
    with pytest.raises(InputError, match=r"unknown transformers model_type 'gtp2'\. Did you mean 'gpt2'.*Known: .*, … \(\d+ in all\)\."):
        build_model("hf-config:gtp2(n_layer=1)", CAUSAL)
    with pytest.raises(InputError, match="unknown GPT2Config field 'n_layers'. Did you mean 'n_layer'"):
        build_model("hf-config:gpt2(n_layers=1)", CAUSAL)
    with pytest.raises(InputError, match="literals"):
        build_model("hf-config:gpt2(n_layer=__import__('os'))", CAUSAL)
    with pytest.raises(InputError, match="no Hugging Face head"):
        build_model("hf-config:vit", DataFacts(inputs="image", task="seq2seq"))


def test_without_transformers_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` sees when it is not installed
    with pytest.raises(InputError, match=r"pip install 'edgekd\[text\]'"):
        build_model("hf-config:gpt2", CAUSAL)
    assert build_model("cnn(width=4)", in_channels=1, num_classes=10)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_a_folder_is_loaded_as_data_under_no_user_code_and_its_own_code_never_runs(tmp_path, monkeypatch):
    """--no-user-code allows `hf:DIR`; a folder whose config asks for its own modeling code is refused
    (trust_remote_code stays off), and no spec argument can switch that on."""
    from edgekd.registry import NO_USER_CODE_ENV

    monkeypatch.setenv(NO_USER_CODE_ENV, "1")
    spec, facts, _, _ = FAMILIES["bert"]
    build_model(spec, facts).save_pretrained(tmp_path / "bert")
    assert type(build_model(f"hf:{tmp_path / 'bert'}", facts)).__name__ == "BertForSequenceClassification"
    with pytest.raises(InputError, match="unknown BertConfig field 'trust_remote_code'"):
        build_model(f"hf:{tmp_path / 'bert'}(trust_remote_code=True)", facts)

    custom = tmp_path / "custom"
    custom.mkdir()
    canary = tmp_path / "canary"
    (custom / "configuration_mine.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    config = {"model_type": "edgekd-test-mine", "auto_map": {"AutoConfig": "configuration_mine.MineConfig"}}
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"asks for the folder's own modeling code \(auto_map\).*never runs code"):
        build_model(f"hf:{custom}", facts)
    assert not canary.exists()
