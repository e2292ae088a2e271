"""The step-by-step training loop, label exact match, and a tiny teacher → rationales → student run, on real models."""

from __future__ import annotations

import pytest
import torch

from edgekd.data.rationales import RationaleExample
from edgekd.data.tokenizer import TextTokenizer, TokenizerTraining, train_tokenizer
from edgekd.data.wordproblems import generate as word_problems
from edgekd.distill.generation_cache import module_digest, teacher_rationales
from edgekd.distill.prompting import TeacherPrompting
from edgekd.distill.sequence import greedy_generate_fn
from edgekd.distill.stepbystep import StepByStepConfig
from edgekd.distill.stepbystep_train import (
    label_exact_match, prompting_pairs, text_tokens, train_prompted_teacher, train_text_student,
)
from edgekd.errors import InputError
from edgekd.models.transformer import gpt_s, t5_s
from tests.stepbystep_support import CHARS, VOCAB

BUILTIN = {"decoder": gpt_s, "seq2seq": t5_s}
EXAMPLES = [
    RationaleExample(f"{a} plus {b}", str(a + b), f"{a} + {b} = {a + b}.") for a, b in [(1, 2), (3, 4), (5, 1), (2, 2), (6, 3), (4, 1)]
]


def tiny(architecture: str, seed: int = 0):
    torch.manual_seed(seed)
    return BUILTIN[architecture](vocab_size=VOCAB, max_length=256, dim=32, depth=1, heads=2)


@pytest.mark.parametrize("architecture", sorted(BUILTIN))
@pytest.mark.parametrize("position", ["separate", "after_label"])
def test_a_student_learns_its_training_labels_and_is_scored_on_the_label_alone(architecture, position):
    config = StepByStepConfig(rationale_position=position)
    model = tiny(architecture)
    before, _ = label_exact_match(model, EXAMPLES, config, CHARS, architecture, max_new_tokens=20)
    losses = train_text_student(model, EXAMPLES, config, CHARS, architecture, epochs=120, batch_size=6, lr=1e-2)
    after, predictions = label_exact_match(model, EXAMPLES, config, CHARS, architecture, max_new_tokens=20)
    assert losses[-1] < losses[0] / 4
    assert before == 0 and after == 1.0
    assert predictions == [e.label for e in EXAMPLES]  # the rationale after the label is cut off


@pytest.mark.parametrize("architecture", sorted(BUILTIN))
def test_label_only_training_is_the_two_task_objective_at_alpha_one(architecture):
    label_only = tiny(architecture)
    train_text_student(label_only, EXAMPLES, StepByStepConfig(), CHARS, architecture, rationales=False, epochs=2, batch_size=4)
    alpha_one = tiny(architecture)
    train_text_student(alpha_one, EXAMPLES, StepByStepConfig(alpha=1.0), CHARS, architecture, epochs=2, batch_size=4)
    for (name, a), b in zip(label_only.state_dict().items(), alpha_one.state_dict().values()):
        assert torch.equal(a, b), name


def test_label_only_needs_no_rationale_but_step_by_step_refuses_an_empty_one_before_any_step():
    examples = [*EXAMPLES[:3], RationaleExample("9 plus 9", "18", "")]
    train_text_student(tiny("seq2seq"), examples, StepByStepConfig(), CHARS, "seq2seq", rationales=False, epochs=1)
    model = tiny("seq2seq")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match="example 3 .* empty rationale"):
        train_text_student(model, examples, StepByStepConfig(), CHARS, "seq2seq", epochs=1)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_no_examples_and_bad_epochs_are_input_errors():
    with pytest.raises(InputError, match="no training examples"):
        train_text_student(tiny("decoder"), [], StepByStepConfig(), CHARS, "decoder", epochs=1)
    with pytest.raises(InputError, match="epochs and batch_size"):
        train_text_student(tiny("decoder"), EXAMPLES, StepByStepConfig(), CHARS, "decoder", epochs=0)


def test_the_teacher_learns_answers_its_own_pattern_reads_back():
    prompting = TeacherPrompting()
    pairs = prompting_pairs(EXAMPLES, prompting)
    assert pairs[0].source == "Q: 1 plus 2\nA:" and pairs[0].target == " 1 + 2 = 3. The answer is 3."
    assert all(prompting.parse_output(p.target) == (e.rationale, e.label) for p, e in zip(pairs, EXAMPLES))
    with pytest.raises(InputError, match="seed example 0 .* rationale and a label"):
        prompting_pairs([RationaleExample("1 plus 1", "2", " ")], prompting)


def test_text_tokens_round_trip_a_trained_tokenizer_and_need_an_end_token():
    tokenizer = train_tokenizer([e.input + " " + e.rationale for e in EXAMPLES], TokenizerTraining(vocab_size=300, min_frequency=1))
    tokens = text_tokens(tokenizer)
    assert tokens.decode(tokens.encode("3 plus 4")) == "3 plus 4"
    assert tokens.eos_id not in tokens.encode("3 plus 4")  # no special tokens: sources and targets are joined by hand
    with pytest.raises(InputError, match="no end token"):
        text_tokens(TextTokenizer(tokenizer.backend, pad_id=0, eos_id=None, source="a file"))


def test_a_tiny_teacher_writes_rationales_for_generated_problems_and_a_student_trains_on_them(tmp_path):
    problems = [RationaleExample(p.question, str(p.answer), p.rationale) for p in word_problems(24, seed=3)]
    seed_set, inputs = problems[:16], [RationaleExample(e.input, e.label) for e in problems[16:]]
    prompting = TeacherPrompting(max_new_tokens=40)
    teacher = tiny("seq2seq", seed=1)
    train_prompted_teacher(teacher, seed_set, prompting, CHARS, "seq2seq", epochs=3, batch_size=8)
    generate = greedy_generate_fn(teacher, CHARS, "seq2seq", max_new_tokens=prompting.max_new_tokens)
    digest = module_digest(teacher)
    kept, summary = teacher_rationales(generate, inputs, prompting, tmp_path, digest, batch_size=4)
    assert summary["generated"] == len(inputs) and summary["reused"] == 0
    assert summary["unparsed"] + summary["kept"] + summary["dropped"] == len(inputs) == 8
    again, summary = teacher_rationales(generate, inputs, prompting, tmp_path, digest, batch_size=4)
    assert summary["generated"] == 0 and summary["reused"] == len(inputs) and again == kept
    # Whatever parsed trains a student; pad with seed examples so the run never depends on the tiny teacher's luck.
    training = kept + [RationaleExample(e.input, e.label, e.rationale, e.label) for e in seed_set[:4]]
    config = StepByStepConfig(label_source="teacher")
    student = tiny("seq2seq", seed=2)
    losses = train_text_student(student, training, config, CHARS, "seq2seq", epochs=2, batch_size=8)
    score, predictions = label_exact_match(student, inputs, config, CHARS, "seq2seq", max_new_tokens=6)
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    assert 0.0 <= score <= 1.0 and len(predictions) == len(inputs)
