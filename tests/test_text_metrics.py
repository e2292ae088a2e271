"""Generation metrics against hand computations, and teacher-forced exact match against a real
greedy decoding loop."""

import math

import pytest
import torch

from edgekd.facts import DataFacts
from edgekd.distill.sequence import generate
from edgekd.metrics import GenerationScores, generation_scores
from edgekd.models import build_model


def test_token_accuracy_exact_match_and_perplexity_by_hand():
    # Two sequences over a vocabulary of 3. Sequence 1 scores positions 0 and 1, sequence 2 only position 1.
    logits = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]],
            [[9.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
        ]
    )
    targets = torch.tensor([[0, 1, -100], [-100, 0, -100]])
    scores = generation_scores(logits, targets)
    # Correct: seq 1 both (argmax 0, argmax 1); seq 2 position 1 predicts 2, target 0 → 2 of 3 tokens.
    assert scores["token_accuracy"] == pytest.approx(2 / 3)
    assert scores["exact_match"] == pytest.approx(1 / 2)  # sequence 1 entirely right, sequence 2 not
    nll = [
        -math.log(math.exp(2) / (math.exp(2) + 2)),  # p(0 | [2, 0, 0])
        -math.log(math.e / (math.e + 2)),  # p(1 | [0, 1, 0])
        -math.log(1 / (math.e + 2)),  # p(0 | [0, 0, 1])
    ]
    assert scores["perplexity"] == pytest.approx(math.exp(sum(nll) / 3), rel=1e-6)


def test_scores_accumulate_over_batches_as_over_one():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 5, 11), torch.randint(0, 11, (6, 5))
    targets[:, :2] = -100
    whole = generation_scores(logits, targets)
    parts = GenerationScores()
    for chunk in range(3):
        parts.update(logits[2 * chunk : 2 * chunk + 2], targets[2 * chunk : 2 * chunk + 2])
    assert parts.result() == pytest.approx(whole)


def test_a_sequence_without_scored_tokens_counts_for_nothing():
    scores = generation_scores(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 1], [-100, -100, -100]]))
    assert scores["exact_match"] == 0.0 and GenerationScores().result()["exact_match"] == 0.0


def test_teacher_forced_exact_match_is_greedy_decoding_exact_match():
    facts = DataFacts(inputs="tokens", task="causal-lm", vocab_size=12, max_length=16, pad_id=0, eos_id=2)
    torch.manual_seed(0)
    model = build_model("gpt_s(dim=32, depth=1, heads=2)", facts).eval()
    prompt = [5, 6, 7]
    with torch.no_grad():
        generation = generate(model, [prompt], max_new_tokens=6, eos_token_id=2, pad_token_id=0)  # edgekd's greedy loop
        decoded = generation.tokens[0] + ([2] if generation.finished[0] else [])  # the answer with its end token
        wrong = [(decoded[0] + 1) % 12 or 3, *decoded[1:]]
        for answer, matches in ((decoded, True), (wrong, False)):
            ids = torch.tensor([prompt + answer])
            targets = torch.full_like(ids, -100)
            targets[0, len(prompt) - 1 : -1] = torch.tensor(answer)  # position t predicts token t+1
            assert generation_scores(model(ids), targets)["exact_match"] == float(matches)
