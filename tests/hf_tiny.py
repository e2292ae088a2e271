"""Tiny random-initialised Hugging Face transformers for tests, one per family (no download).

They are built the way a recipe builds them: an `hf-config:TYPE(...)` spec and the data's
facts through `edgekd.models.build_model`, so the tests exercise that path too. No dropout,
so training steps in tests repeat exactly. Importing this module skips the test file where
`transformers` is not installed."""

from __future__ import annotations

import pytest
import torch

from edgekd.facts import DataFacts
from edgekd.models import build_model
from tests.conftest import token_facts

transformers = pytest.importorskip("transformers")

VOCAB = 96
PAD, EOS, START = 0, 1, 2


def tokens_facts(task: str, *, vocab: int = VOCAB, positions: int = 64, labels: int = 3, start: int = START) -> DataFacts:
    """The facts of a tokenized dataset with the special tokens above."""
    return token_facts(task, vocab=vocab, max_length=positions, pad=PAD, eos=EOS, start=start, labels=labels)


def tiny(spec: str, facts: DataFacts, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(spec, facts).eval()


def bert_classifier(seed: int = 0, hidden: int = 32, labels: int = 3, init_range: float = 0.02) -> torch.nn.Module:
    spec = (
        f"hf-config:bert(hidden_size={hidden}, num_hidden_layers=2, num_attention_heads=2, intermediate_size={2 * hidden}, "
        f"initializer_range={init_range}, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)"
    )
    return tiny(spec, tokens_facts("classify", labels=labels), seed)


def gpt2_lm(
    seed: int = 0, hidden: int = 32, layers: int = 2, init_range: float = 0.02, vocab: int = VOCAB, positions: int = 64
) -> torch.nn.Module:
    """A wide `init_range` gives a random model whose greedy generations vary (not one token repeated)."""
    spec = (
        f"hf-config:gpt2(n_embd={hidden}, n_layer={layers}, n_head=2, initializer_range={init_range}, "
        "resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)"
    )
    return tiny(spec, tokens_facts("causal-lm", vocab=vocab, positions=positions), seed)


def t5_seq2seq(
    seed: int = 0, hidden: int = 32, init_range: float = 1.0, vocab: int = VOCAB, layers: int = 2, start: int = START
) -> torch.nn.Module:
    """T5 scales its initialisation by `initializer_factor` (1.0 is its default)."""
    spec = (
        f"hf-config:t5(d_model={hidden}, d_kv=16, d_ff={2 * hidden}, num_layers={layers}, num_heads=2, "
        f"initializer_factor={init_range}, dropout_rate=0.0)"
    )
    return tiny(spec, tokens_facts("seq2seq", vocab=vocab, start=start), seed)


def prompts(count: int, seed: int = 0, shortest: int = 3, longest: int = 9) -> list[list[int]]:
    """Token lists of varied lengths, ids above the special tokens."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(shortest, longest + 1, (count,), generator=generator).tolist()
    return [torch.randint(3, VOCAB, (n,), generator=generator).tolist() for n in lengths]


FAMILY_MODELS = {
    "encoder": lambda: bert_classifier(hidden=64, init_range=0.2),
    "decoder": lambda: gpt2_lm(hidden=64, init_range=0.2),
    "seq2seq": lambda: t5_seq2seq(hidden=64),
}


def token_batches(family: str, count: int = 3, seed: int = 0, batch: int = 4, length: int = 10) -> list[dict[str, torch.Tensor]]:
    """Random token batches with one right-padded row (and decoder inputs for seq2seq)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, length - 3 :] = 0
        entry = {"input_ids": ids, "attention_mask": mask}
        if family == "seq2seq":
            entry["decoder_input_ids"] = torch.randint(3, VOCAB, (batch, length // 2), generator=generator)
        batches.append(entry)
    return batches
