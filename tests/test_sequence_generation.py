"""Greedy generation (batched, right-padded, EOS) against a one-prompt-at-a-time loop and against
Hugging Face's own `.generate`, and sequence-level distillation through the generation cache:
a student trained on a teacher's cached generations reproduces them."""

from __future__ import annotations

import pytest
import torch

from edgekd.decoding import exact_match
from edgekd.distill.generation_cache import cached_generate
from edgekd.distill.sequence import generate, greedy_generate_fn
from edgekd.distill.stepbystep import TrainingPair, encode_pairs, hf_generate_fn, token_cross_entropy
from edgekd.outputs import logits_of
from tests.hf_tiny import EOS, PAD, START, gpt2_lm, prompts, t5_seq2seq
from tests.stepbystep_support import CHARS, VOCAB as CHAR_VOCAB, forward_of


def one_by_one(model, prompt, max_new_tokens, seq2seq):
    """The plainest greedy loop: one unpadded row, the whole prefix every step."""
    with torch.no_grad():
        out, ids = [], torch.tensor([prompt])
        decoder = torch.tensor([[START]])
        for _ in range(max_new_tokens):
            if seq2seq:
                logits = logits_of(model(input_ids=ids, decoder_input_ids=decoder))
            else:
                logits = logits_of(model(input_ids=ids))
            token = int(logits[0, -1].argmax())
            if token == EOS:
                break
            out.append(token)
            if seq2seq:
                decoder = torch.cat([decoder, torch.tensor([[token]])], 1)
            else:
                ids = torch.cat([ids, torch.tensor([[token]])], 1)
        return out


@pytest.mark.parametrize("family", ["decoder", "seq2seq"])
def test_batched_generation_equals_one_prompt_at_a_time(family):
    seq2seq = family == "seq2seq"
    model = t5_seq2seq() if seq2seq else gpt2_lm()
    batch = prompts(6)
    generation = generate(model, batch, max_new_tokens=7, eos_token_id=EOS, pad_token_id=PAD,
                          decoder_start_token_id=START if seq2seq else None)  # fmt: skip
    assert generation.tokens == [one_by_one(model, p, 7, seq2seq) for p in batch]
    assert all(len(t) == 7 or done for t, done in zip(generation.tokens, generation.finished))


def test_eos_stops_a_row():
    model = gpt2_lm(seed=3)
    batch = prompts(8, seed=1)
    free = generate(model, batch, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD)
    stop_token = free.tokens[0][2]  # make a token row 0 produces the end of sequence
    stopped = generate(model, batch, max_new_tokens=5, eos_token_id=stop_token, pad_token_id=PAD)
    assert stopped.finished[0] and stopped.tokens[0] == free.tokens[0][: free.tokens[0].index(stop_token)]
    for free_row, row, done in zip(free.tokens, stopped.tokens, stopped.finished):
        assert row == (free_row[: free_row.index(stop_token)] if done else free_row)


def char_prompts(count: int, seed: int) -> list[str]:
    return [CHARS.decode(p) for p in prompts(count, seed=seed)]


@pytest.mark.parametrize("architecture", ["decoder", "seq2seq"])
def test_greedy_generate_fn_writes_what_hugging_face_generate_writes(architecture):
    """The shared loop (right padding, whole prefix) and HF's (left padding for decoders, KV cache) agree."""
    model = (gpt2_lm if architecture == "decoder" else t5_seq2seq)(seed=5, init_range=0.5 if architecture == "decoder" else 1.0, vocab=CHAR_VOCAB)
    texts = char_prompts(8, seed=6)
    ours = greedy_generate_fn(model, CHARS, architecture, max_new_tokens=6)(texts)
    theirs = hf_generate_fn(model, CHARS, architecture, max_new_tokens=6)(texts)
    assert ours == theirs and len(set(ours)) > 1


def test_sequence_level_kd_teaches_the_student_the_teachers_cached_generations(tmp_path):
    """Kim & Rush's sequence-level KD: a smaller student trained with cross-entropy on the teacher's
    greedy answers (generated once, then read from the cache) reproduces them."""
    teacher = gpt2_lm(seed=0, hidden=48, init_range=0.5, vocab=CHAR_VOCAB)
    student = gpt2_lm(seed=1, hidden=32, vocab=CHAR_VOCAB)
    texts = char_prompts(16, seed=2)
    teacher_fn = greedy_generate_fn(teacher, CHARS, "decoder", max_new_tokens=6)
    answers, counts = cached_generate(teacher_fn, texts, tmp_path / "cache")
    assert counts == {"generated": 16, "reused": 0}
    assert cached_generate(teacher_fn, texts, tmp_path / "cache") == (answers, {"generated": 0, "reused": 16})
    student_fn = greedy_generate_fn(student, CHARS, "decoder", max_new_tokens=6)
    before = student_fn(texts)
    batch = encode_pairs([TrainingPair(t, a, "label") for t, a in zip(texts, answers)], CHARS, "decoder")
    forward = forward_of(student, "decoder")
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    student.train()
    for _ in range(120):
        loss = token_cross_entropy(forward(batch), batch.target_ids, batch.target_mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    student.eval()
    assert exact_match(before, answers) < 0.2
    assert exact_match(student_fn(texts), answers) >= 0.9
