"""A character tokenizer and tiny real language models (those of tests.hf_tiny, sized for its vocabulary) for the step-by-step tests.

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
    from tests.hf_tiny import gpt2_lm  # imports transformers, so only tests that build a model need it

    return gpt2_lm(seed, vocab=VOCAB, positions=positions)


def tiny_t5(seed: int = 0):
    from tests.hf_tiny import t5_seq2seq

    return t5_seq2seq(seed, vocab=VOCAB, layers=1, start=PAD)


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


def sum_rows(path, count: int = 400, seed: int = 0, rationale: bool = True):
    """JSONL rows of one-step sums with a rationale: `{"input": "3 plus 4", "rationale": "3 and 4 make 7", "label": "7"}`."""
    import json
    import random

    rng = random.Random(seed)
    with open(path, "w") as handle:
        for _ in range(count):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            row = {"input": f"{a} plus {b}", "label": str(a + b), **({"rationale": f"{a} and {b} make {a + b}"} if rationale else {})}
            handle.write(json.dumps(row) + "\n")
    return path


STUDENT = "gpt_s(dim=32, depth=2, heads=4, mlp_ratio=2)"


def step_by_step_recipe(tmp_path, stages=None, term=None, **extra):
    """A text recipe that trains a tiny decoder student step by step on `sum_rows`, rationales from the data."""
    from tests.conftest import text_pipeline_recipe

    term = {"method": "step-by-step", **(term or {})}
    recipe = text_pipeline_recipe(
        tmp_path / "run", sum_rows(tmp_path / "sums.jsonl"), {"task": "generate", "input": "input", "target": "label", "max_length": 20},
        {"model": STUDENT, "train": {"epochs": 1, "lr": 0.01, "optimizer": {"name": "adamw"}}},
        student=STUDENT, rationales={"source": "data"},
        distill={"method": [term], "epochs": 1, "lr": 0.01, "optimizer": {"name": "adamw"}},
    )
    recipe["stages"] = stages if stages is not None else [{"distill": {"epochs": 20}}]
    recipe.update(extra)
    return recipe
