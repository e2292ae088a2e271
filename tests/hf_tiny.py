"""Tiny random-initialised Hugging Face transformers built from configs (no download): one
per family the sequence modules support, without dropout so that training steps in tests are
deterministic. Skipped where `transformers` is not installed."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 96
PAD, EOS, START = 0, 1, 2


def bert_classifier(seed: int = 0, hidden: int = 32, labels: int = 3, init_range: float = 0.02) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden,
        max_position_embeddings=64, num_labels=labels, pad_token_id=PAD, initializer_range=init_range,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config).eval()


def gpt2_lm(seed: int = 0, hidden: int = 32, layers: int = 2, init_range: float = 0.02, vocab: int = VOCAB) -> torch.nn.Module:
    """A wide `init_range` gives a random model whose greedy generations vary (not one token repeated)."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=2, n_positions=64,
        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD, initializer_range=init_range,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def t5_seq2seq(seed: int = 0, hidden: int = 32, init_range: float = 1.0, vocab: int = VOCAB) -> torch.nn.Module:
    """T5 scales its initialisation by `initializer_factor` (1.0 is its default)."""
    torch.manual_seed(seed)
    config = transformers.T5Config(
        vocab_size=vocab, d_model=hidden, d_kv=16, d_ff=2 * hidden, num_layers=2, num_heads=2,
        decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=EOS, initializer_factor=init_range, dropout_rate=0.0,
    )
    return transformers.T5ForConditionalGeneration(config).eval()


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
