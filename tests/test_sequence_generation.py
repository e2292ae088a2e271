"""Greedy generation (batched, right-padded, EOS) against a one-prompt-at-a-time loop, and
sequence-level distillation: a student trained on a teacher's generations reproduces them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgekd.decoding import Generation, exact_match
from edgekd.distill.sequence import answers_with_eos, causal_lm_batch, generate, model_inputs, seq2seq_batch
from edgekd.outputs import logits_of
from tests.hf_tiny import EOS, PAD, START, gpt2_lm, prompts, t5_seq2seq

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
    model.config.eos_token_id = EOS
    batch = prompts(6)
    generation = generate(model, batch, max_new_tokens=7, eos_token_id=EOS, pad_token_id=PAD,
                          decoder_start_token_id=START if seq2seq else None)  # fmt: skip
    assert generation.tokens == [one_by_one(model, p, 7, seq2seq) for p in batch]
    assert all(len(t) == 7 or done for t, done in zip(generation.tokens, generation.finished))


def test_eos_stops_a_row_and_generations_round_trip(tmp_path):
    model = gpt2_lm(seed=3)
    batch = prompts(8, seed=1)
    free = generate(model, batch, max_new_tokens=5, eos_token_id=None, pad_token_id=PAD)
    stop_token = free.tokens[0][2]  # make a token row 0 produces the end of sequence
    stopped = generate(model, batch, max_new_tokens=5, eos_token_id=stop_token, pad_token_id=PAD)
    assert stopped.finished[0] and stopped.tokens[0] == free.tokens[0][: free.tokens[0].index(stop_token)]
    for free_row, row, done in zip(free.tokens, stopped.tokens, stopped.finished):
        assert row == (free_row[: free_row.index(stop_token)] if done else free_row)
    stopped.save(tmp_path / "generations.npz")
    assert Generation.load(tmp_path / "generations.npz") == stopped


def test_sequence_level_kd_teaches_the_student_the_teachers_generations():
    """A smaller student trained with cross-entropy on the teacher's greedy answers reproduces them."""
    teacher, student = gpt2_lm(seed=0, hidden=48, init_range=0.5), gpt2_lm(seed=1, hidden=32)
    train = prompts(16, seed=2)
    answers = answers_with_eos(generate(teacher, train, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD), EOS)
    batch = causal_lm_batch(train, answers, PAD)
    before = generate(student, train, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    student.train()
    for _ in range(120):
        logits = logits_of(student(**model_inputs(batch)))
        loss = F.cross_entropy(logits[batch["target_mask"]], batch["targets"][batch["target_mask"]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = generate(student, train, max_new_tokens=6, eos_token_id=EOS, pad_token_id=PAD)
    target = [a[:-1] if a[-1] == EOS else a for a in answers]
    assert exact_match(before.tokens, target) < 0.2
    assert exact_match(after.tokens, target) >= 0.9


def test_seq2seq_batch_is_teacher_forcing():
    batch = seq2seq_batch([[5, 6], [7]], [[8, EOS], [9, 10, EOS]], PAD, START)
    assert batch["decoder_input_ids"].tolist() == [[START, 8, EOS], [START, 9, 10]]
    assert batch["targets"][batch["target_mask"]].tolist() == [8, EOS, 9, 10, EOS]
    model = t5_seq2seq()
    logits = logits_of(model(**model_inputs(batch)))
    assert logits.shape == (2, 3, model.config.vocab_size)
