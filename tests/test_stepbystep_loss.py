"""Step-by-step targets, the two-task loss, and the label-only inference path, on tiny real models."""

import math

import pytest
import torch

from edgekd.data.rationales import RationaleExample, exact_match
from edgekd.distill.stepbystep import (
    StepByStepConfig, TaskBatches, TokenBatch, encode_examples, encode_pairs, extract_label, hf_generate_fn,
    label_pairs, predict_labels, step_by_step_loss, token_cross_entropy, training_pairs,
)
from edgekd.errors import InputError
from tests.stepbystep_support import CHARS, MODELS, forward_of, train_pairs

EXAMPLES = [
    RationaleExample("2 + 3?", "5", "2 + 3 = 5.", teacher_label="5"),
    RationaleExample("4 * 2?", "8", "4 * 2 = 8.", teacher_label="6"),
    RationaleExample("9 - 7?", "2", "9 - 7 = 2.", teacher_label="2"),
]


def test_targets_for_each_rationale_position_and_label_source():
    label, rationale = training_pairs(EXAMPLES, StepByStepConfig())
    assert label[1] == ("predict: 4 * 2?", "8", "label") and rationale[1] == ("explain: 4 * 2?", "4 * 2 = 8.", "rationale")
    (after,), none = training_pairs(EXAMPLES[:1], StepByStepConfig(rationale_position="after_label"))
    assert after.target == "5 Explanation: 2 + 3 = 5." and none == []
    (before,), _ = training_pairs(EXAMPLES[:1], StepByStepConfig(rationale_position="before_label"))
    assert before.source == "predict: 2 + 3?" and before.target == "2 + 3 = 5. Answer: 5"
    teacher = training_pairs(EXAMPLES, StepByStepConfig(label_source="teacher", label_prefix="[label] ", rationale_prefix="[why] "))
    assert [p.target for p in teacher[0]] == ["5", "6", "2"] and teacher[1][0].source == "[why] 2 + 3?"
    for position in ("before_label", "after_label"):
        config = StepByStepConfig(rationale_position=position)
        assert [extract_label(p.target, config) for p in training_pairs(EXAMPLES, config)[0]] == ["5", "8", "2"]


@pytest.mark.parametrize("settings, message", [
    ({"rationale_position": "after"}, r"rationale_position: unknown rationale position 'after'\. Did you mean 'after_label'"),
    ({"label_source": "llm"}, r"label_source: unknown label source 'llm'\. Known: ground_truth, teacher\."),
    ({"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
    ({"alpha": 0.5, "rationale_position": "after_label"}, r"alpha weighs the label and rationale tasks of rationale_position: separate"),
    ({"rationale_prefix": "predict: "}, r"prefixes\.rationale 'predict: ' must be non-empty and differ"),
    ({"label_prefix": " "}, r"prefixes\.label is empty"),
])
def test_bad_settings_are_input_errors(settings, message):
    with pytest.raises(InputError, match=message):
        StepByStepConfig(**settings)


def test_missing_labels_or_rationales_are_input_errors_naming_the_example():
    with pytest.raises(InputError, match=r"example 0 \('q'\) has no teacher label, which label_source: teacher needs"):
        label_pairs([RationaleExample("q", "1", "r")], StepByStepConfig(label_source="teacher"))
    with pytest.raises(InputError, match=r"example 1 \('q2'\) has an empty rationale"):
        training_pairs([RationaleExample("q", "1", "r"), RationaleExample("q2", "1", " ")], StepByStepConfig())
    with pytest.raises(InputError, match=r"example 0: its label 'x Answer: y' contains the marker 'Answer:'"):
        training_pairs([RationaleExample("q", "x Answer: y", "r")], StepByStepConfig(rationale_position="before_label"))


def test_decoder_targets_cover_only_the_target_and_seq2seq_decoders_are_teacher_forced():
    pairs = label_pairs(EXAMPLES, StepByStepConfig())
    decoder = encode_pairs(pairs, CHARS, "decoder")
    for row, (source, target, _) in enumerate(pairs):
        scored = decoder.target_ids[row][decoder.target_mask[row].bool()].tolist()
        assert scored == CHARS.encode(target) + [CHARS.eos_id]
        length = int(decoder.attention_mask[row].sum())
        assert decoder.input_ids[row, :length].tolist() == CHARS.encode(source + target)  # source + target, eos only predicted
        assert torch.equal(decoder.input_ids[row, 1:length], decoder.target_ids[row, : length - 1])
    seq2seq = encode_pairs(pairs, CHARS, "seq2seq")
    assert seq2seq.input_ids[0].tolist()[: len("predict: 2 + 3?") + 1] == CHARS.encode("predict: 2 + 3?") + [CHARS.eos_id]
    assert seq2seq.decoder_input_ids[0, :2].tolist() == [CHARS.pad_id, CHARS.encode("5")[0]]
    with pytest.raises(InputError, match=r"pair 0: the prompt and target is 16 tokens, over max_length 10"):
        encode_pairs(pairs, CHARS, "decoder", max_length=10)


def cross_entropy_by_hand(logits, targets, mask):
    terms = []
    for b in range(len(targets)):
        for t in range(len(targets[b])):
            if mask[b][t]:
                row = logits[b][t]
                terms.append(math.log(sum(math.exp(v) for v in row)) - row[targets[b][t]])
    return sum(terms) / len(terms)


def test_the_two_task_loss_against_a_hand_computation():
    torch.manual_seed(0)
    label = TokenBatch(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([[1, 2, 0], [3, 1, 2]]), torch.tensor([[1, 1, 0], [0, 1, 1]]))
    rationale = TokenBatch(torch.zeros(2, 4), torch.ones(2, 4), torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]),
                           torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]))
    logits = {id(label): torch.randn(2, 3, 5), id(rationale): torch.randn(2, 4, 5)}
    by_hand = {key: cross_entropy_by_hand(logits[id(b)].tolist(), b.target_ids.tolist(), b.target_mask.tolist())
               for key, b in (("label", label), ("rationale", rationale))}
    # Token means over the batch: 4 label tokens and 5 rationale tokens, padding and masked steps excluded.
    for alpha in (0.5, 0.3, 0.0):
        loss = step_by_step_loss(lambda batch: logits[id(batch)], TaskBatches(label, rationale), alpha)
        assert float(loss) == pytest.approx(alpha * by_hand["label"] + (1 - alpha) * by_hand["rationale"], rel=1e-6)
    one_target = step_by_step_loss(lambda batch: logits[id(batch)], TaskBatches(label, None), 0.5)
    assert float(one_target) == pytest.approx(by_hand["label"], rel=1e-6)
    with pytest.raises(ValueError, match="no target tokens"):
        token_cross_entropy(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2))


@pytest.mark.parametrize("architecture", sorted(MODELS))
def test_alpha_one_is_label_only_training_loss_gradients_and_weights(architecture):
    pytest.importorskip("transformers")
    config = StepByStepConfig(alpha=1.0)
    step_by_step, label_only = MODELS[architecture](), MODELS[architecture]()
    # The label-only run is built without the rationale machinery: the label task's pairs alone.
    batches = encode_examples(EXAMPLES, config, CHARS, architecture)
    assert batches.rationale is not None
    plain = encode_pairs(label_pairs(EXAMPLES, config), CHARS, architecture)
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (step_by_step, label_only)]
    for _ in range(3):
        ours = step_by_step_loss(forward_of(step_by_step, architecture), batches, config.alpha)
        theirs = token_cross_entropy(forward_of(label_only, architecture)(plain), plain.target_ids, plain.target_mask)
        assert torch.equal(ours, theirs)
        for optimizer, loss in zip(optimizers, (ours, theirs)):
            optimizer.zero_grad()
            loss.backward()
        for (name, a), (_, b) in zip(step_by_step.named_parameters(), label_only.named_parameters()):
            assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad), name
        for optimizer in optimizers:
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(step_by_step.parameters(), label_only.parameters()))
    # Below 1 the rationale task changes the step.
    half = step_by_step_loss(forward_of(step_by_step, architecture), batches, 0.5)
    assert not torch.equal(half, step_by_step_loss(forward_of(step_by_step, architecture), batches, 1.0))


TOY = [RationaleExample(word, str(len(word)), f"{' '.join(word)} has {len(word)} letters.")
       for word in ("cat", "horse", "ox", "zebra", "mouse", "ant", "camel", "yak")]


@pytest.mark.parametrize("architecture, position", [("decoder", "separate"), ("decoder", "after_label"), ("seq2seq", "before_label")])
def test_only_the_label_task_runs_at_inference_and_exact_match_reads_the_label(architecture, position):
    pytest.importorskip("transformers")
    config = StepByStepConfig(rationale_position=position)
    model = MODELS[architecture](seed=1)
    label, rationale = training_pairs(TOY, config)
    train_pairs(model, architecture, label + rationale, steps=400, lr=1e-2)
    generate = hf_generate_fn(model, CHARS, architecture, max_new_tokens=40)
    seen, outputs = [], []

    def recording(prompts):
        seen.extend(prompts)
        outputs.extend(generate(prompts))
        return outputs[-len(prompts):]

    predictions = predict_labels(recording, [e.input for e in TOY], config)
    assert seen == [f"predict: {e.input}" for e in TOY]  # the explain: task never runs
    assert exact_match(predictions, [e.label for e in TOY]) == 1.0, list(zip(outputs, predictions))
    if position != "separate":  # the model wrote its rationale too; the label was read out of it
        assert all(len(o) > len(p) for o, p in zip(outputs, predictions)), outputs
