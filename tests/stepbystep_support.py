"""Tiny real language models (no dropout, so runs repeat exactly) and a character tokenizer for the step-by-step tests (no downloads).

Also run as a script by the generation-cache kill test: `python -m tests.stepbystep_support CACHE BLOCK_AFTER`
generates through the cache and blocks inside the generate call after BLOCK_AFTER batches, waiting to be killed."""

from __future__ import annotations

import sys
import time

import torch

from edgekd.distill.stepbystep import Tokens, encode_pairs, token_cross_entropy

PAD, EOS, FIRST_CHAR = 0, 1, 32
VOCAB = 2 + 127 - FIRST_CHAR


def _encode(text: str) -> list[int]:
    return [2 + ord(c) - FIRST_CHAR if FIRST_CHAR <= ord(c) < 127 else 2 + ord("?") - FIRST_CHAR for c in text.replace("\n", "|")]


def _decode(ids: list[int]) -> str:
    return "".join(chr(i - 2 + FIRST_CHAR) for i in ids if i >= 2).replace("|", "\n")


CHARS = Tokens(encode=_encode, decode=_decode, pad_id=PAD, eos_id=EOS, decoder_start_id=PAD)
"""Printable ASCII, one id per character; newlines travel as '|'."""


def tiny_gpt2(seed: int = 0, positions: int = 512):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def tiny_t5(seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
                      decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS, dropout_rate=0.0)
    return T5ForConditionalGeneration(config)


MODELS = {"decoder": tiny_gpt2, "seq2seq": tiny_t5}


def forward_of(model, architecture: str):
    """Logits aligned with a TokenBatch's targets, for a Hugging Face causal LM or seq2seq model."""

    def forward(batch):
        if architecture == "decoder":
            return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     decoder_input_ids=batch.decoder_input_ids).logits

    return forward


def train_pairs(model, architecture: str, pairs, steps: int, lr: float = 3e-3, batch_size: int = 16, seed: int = 0) -> float:
    """Plain next-token training on text pairs; returns the last loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    forward = forward_of(model, architecture)
    model.train()
    for _ in range(steps):
        chosen = torch.randperm(len(pairs), generator=generator)[:batch_size].tolist()
        batch = encode_pairs([pairs[i] for i in chosen], CHARS, architecture)
        loss = token_cross_entropy(forward(batch), batch.target_ids, batch.target_mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return loss.item()


def cache_prompts(count: int) -> list[str]:
    return [f"Q: what is {i} plus {i % 7}?\nA:" for i in range(count)]


def _generate_until_killed(cache: str, block_after: int) -> None:
    from edgekd.distill.generation_cache import cached_generate
    from edgekd.distill.stepbystep import hf_generate_fn

    generate = hf_generate_fn(tiny_gpt2(), CHARS, "decoder", max_new_tokens=12)
    calls = 0

    def blocking(prompts: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls > block_after:
            while True:  # the parent kills this process here, in the middle of a batch
                time.sleep(1)
        return generate(prompts)

    cached_generate(blocking, cache_prompts(20), cache, batch_size=4)


if __name__ == "__main__":
    _generate_until_killed(sys.argv[1], int(sys.argv[2]))
