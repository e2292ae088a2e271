"""Pruning transformers: whole attention heads, MLP widths and the hidden size, for every built-in
text model (parametrised over the registry), Hugging Face BERT, GPT-2, T5 and ViT (whose configs
must keep describing them, so save_pretrained → from_pretrained reloads the pruned student), and
custom attention modules that declare where their head count lives."""

import pytest
import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.facts import DataFacts
from edgekd.models import build_model, card_of, model_names
from edgekd.outputs import logits_of, run_model
from edgekd.prune import ChannelPruner, PruneConfig, load_pruned, save_pruned
from edgekd.prune.attention import AttentionUnit, find_attention
from tests.conftest import token_facts

VOCAB = token_facts("classify").vocab_size


def text_batch(task: str, batch: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (batch, 12), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs["attention_mask"][-1, 9:] = 0
    if task == "seq2seq":
        inputs["decoder_input_ids"] = ids[:, :6]
    return inputs


def units(model: nn.Module, example) -> list[AttentionUnit]:
    return find_attention(model, example, {})


def prune(model: nn.Module, example, fraction: float, **settings) -> tuple[int, int]:
    pruner = ChannelPruner(model, example, PruneConfig(target_params=0.5, **settings))
    start = pruner.measure("params")
    return start, pruner.prune_to(start * fraction)


@pytest.mark.parametrize("hidden", [False, True], ids=["heads+mlp", "heads+mlp+hidden"])
@pytest.mark.parametrize("name", model_names("tokens"))
def test_every_builtin_text_model_prunes_to_a_target_and_runs(name, hidden):
    task = card_of(name).tasks[0]
    torch.manual_seed(0)
    model = build_model(card_of(name).tiny, token_facts(task))
    example = text_batch(task)
    widths_before = {u.name: (u.heads, u.head_dim, u.output.out_features) for u in units(model, example)}
    start, reached = prune(model, example, 0.5, hidden=hidden)
    assert reached <= 0.5 * start
    after = units(model, example)
    assert {u.name for u in after} == set(widths_before)
    for unit in after:
        heads, head_dim, hidden_width = widths_before[unit.name]
        assert unit.head_dim == head_dim and 1 <= unit.heads <= heads  # whole heads go; their size stays
        assert all(p.out_features == unit.heads * head_dim for p in unit.projections)
        assert unit.output.in_features == unit.heads * head_dim
        assert (unit.output.out_features < hidden_width) if hidden else (unit.output.out_features == hidden_width)
    if not hidden:  # with the hidden size shrinking too, the target may come before the first head goes
        assert sum(u.heads for u in after) < sum(h for h, _, _ in widths_before.values())
    logits = logits_of(run_model(model.eval(), text_batch(task, batch=3)))
    assert torch.isfinite(logits).all()


def test_a_pruned_builtin_round_trips_through_the_pickle_free_format(tmp_path):
    facts = token_facts("causal-lm")
    model = build_model("gpt_s(dim=32, depth=2, heads=4)", facts)
    prune(model, text_batch("causal-lm"), 0.5, hidden=True)
    save_pruned(model, tmp_path / "gpt.pt", "gpt_s(dim=32, depth=2, heads=4)", facts)
    loaded = load_pruned(tmp_path / "gpt.pt")
    batch = text_batch("causal-lm")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), model.eval()(**batch))
    assert [u.heads for u in units(loaded, batch)] == [u.heads for u in units(model, batch)]


def test_taylor_ranks_heads_and_channels_from_token_gradients():
    task = "causal-lm"
    model = build_model("gpt_s(dim=32, depth=1, heads=4)", token_facts(task))
    example = text_batch(task)
    targets = example["input_ids"].roll(-1, dims=1)
    pruner = ChannelPruner(model, example, PruneConfig(target_params=0.5, importance="taylor"))
    start = pruner.measure("params")
    assert pruner.prune_to(start * 0.7, gradient_batches=[(example, targets)]) <= start * 0.7
    assert model(**example).shape == (2, 12, VOCAB)


# --- Hugging Face -------------------------------------------------------------------------------

HF = {
    "bert": ("hf-config:bert(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)", "classify"),
    "gpt2": ("hf-config:gpt2(n_embd=32, n_layer=2, n_head=4)", "causal-lm"),
    "t5": ("hf-config:t5(d_model=32, d_kv=8, num_layers=2, num_heads=4, d_ff=64)", "seq2seq"),
    "vit": ("hf-config:vit(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=4)", "image"),
}


def hf_model(family: str) -> tuple[nn.Module, object, DataFacts]:
    pytest.importorskip("transformers")
    spec, task = HF[family]
    facts = DataFacts(in_channels=1, num_classes=3, image_size=16) if task == "image" else token_facts(task)
    torch.manual_seed(0)
    model = build_model(spec, facts)
    example = torch.randn(2, 1, 16, 16) if task == "image" else text_batch(task)
    return model, example, facts


@pytest.mark.parametrize(
    "family, hidden", [("bert", False), ("gpt2", False), ("t5", False), ("vit", False), ("vit", True)],
)
def test_a_pruned_hugging_face_model_keeps_its_config_and_reloads_from_pretrained(family, hidden, tmp_path):
    from edgekd.prune.hf import save_pretrained

    model, example, facts = hf_model(family)
    start, reached = prune(model, example, 0.6, hidden=hidden)
    assert reached <= 0.6 * start
    found = units(model, example)
    heads = {u.heads for u in found}
    assert len(heads) == 1 and heads.pop() < 4  # every layer alike: the config holds one head count
    config = model.config
    assert config.num_attention_heads == found[0].heads
    # BERT and GPT-2 derive the head size from hidden / heads, so their hidden size follows the heads.
    tied = family in ("bert", "gpt2")
    assert config.hidden_size == (found[0].heads * 8 if tied or hidden else 32)
    save_pretrained(model, tmp_path / family)
    reloaded = build_model(f"hf:{tmp_path / family}", facts).eval()
    with torch.no_grad():
        torch.testing.assert_close(logits_of(run_model(reloaded, example)), logits_of(run_model(model.eval(), example)))


def test_a_pruned_hugging_face_model_round_trips_through_the_pickle_free_format(tmp_path):
    model, example, facts = hf_model("gpt2")
    prune(model, example, 0.6)
    save_pruned(model, tmp_path / "gpt2.pt", HF["gpt2"][0], facts)
    loaded = load_pruned(tmp_path / "gpt2.pt")
    assert loaded.config.n_head == model.config.n_head and loaded.config.n_embd == model.config.n_embd
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # tied again
    with torch.no_grad():
        torch.testing.assert_close(logits_of(loaded(**example)), logits_of(model.eval()(**example)))


def test_hugging_face_limits_are_explained():
    model, example, _ = hf_model("t5")
    with pytest.raises(InputError, match="prune.hidden: .*shares a tensor with another residual stream"):
        ChannelPruner(model, example, PruneConfig(target_params=0.5, hidden=True))
    with pytest.raises(InputError, match="global_pruning: false"):
        ChannelPruner(model, example, PruneConfig(target_params=0.5, global_pruning=True))
    bert, bert_example, _ = hf_model("bert")
    with pytest.raises(InputError, match="hidden size can only shrink with its heads"):
        ChannelPruner(bert, bert_example, PruneConfig(target_params=0.5, heads=False, hidden=True))


# --- custom attention ---------------------------------------------------------------------------


class CustomAttention(nn.Module):
    """User code: the head count lives in `heads`, a name edgekd does not know."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.per_head = dim // heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(batch, tokens, self.heads, self.per_head).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        weights = (q @ k.transpose(-2, -1) * self.per_head**-0.5).softmax(-1)
        return self.to_out((weights @ v).transpose(1, 2).reshape(batch, tokens, self.heads * self.per_head))


class CustomBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = CustomAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


class CustomTransformer(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, num_classes: int = 5):
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.blocks = nn.Sequential(CustomBlock(dim, heads), CustomBlock(dim, heads))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)).mean(dim=1))


def test_a_declared_custom_attention_loses_whole_heads_and_its_attribute_follows():
    torch.manual_seed(0)
    model = CustomTransformer()
    x = torch.randn(2, 6, 8)
    start, reached = prune(model, x, 0.5, attention_heads={"blocks.*.attn": "heads"})
    assert reached <= 0.5 * start
    for block in model.blocks:
        attention = block.attn
        assert attention.heads < 4 and attention.per_head == 8
        assert attention.to_q.out_features == attention.heads * 8 == attention.to_out.in_features
    assert model(x).shape == (2, 5)


def test_undeclared_custom_attention_breaks_and_the_error_says_how_to_declare_it():
    model = CustomTransformer()
    with pytest.raises(InputError, match="prune.attention_heads"):
        prune(model, torch.randn(2, 6, 8), 0.5)


def test_a_bad_declaration_is_named_with_what_the_model_has():
    x = torch.randn(2, 6, 8)
    with pytest.raises(InputError, match=r"'block.\*.attn' matches no module.*Did you mean"):
        ChannelPruner(CustomTransformer(), x, PruneConfig(target_params=0.5, attention_heads={"block.*.attn": "heads"}))
    with pytest.raises(InputError, match=r"no int attribute 'head_count' holding its head count: unknown int attribute 'head_count'.* Known: heads, per_head\."):
        ChannelPruner(CustomTransformer(), x, PruneConfig(target_params=0.5, attention_heads={"blocks.*.attn": "head_count"}))
    with pytest.raises(InputError, match="module 'head' ran no layers that split into 32 heads"):
        ChannelPruner(CustomTransformer(), x, PruneConfig(target_params=0.5, attention_heads={"head": "in_features"}))
