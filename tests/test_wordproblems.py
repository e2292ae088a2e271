"""The synthetic word problems: many templates, true arithmetic, deterministic splits, JSONL round trip."""

import random
import re
from collections import Counter

import pytest

from edgekd.data.rationales import exact_match, normalize_label, read_rationale_jsonl, write_jsonl
from edgekd.data.wordproblems import (
    FAMILIES, HELDOUT_TEMPLATES, TEMPLATES, generate, instantiate, make_splits, write_splits,
)
from edgekd.errors import InputError

CALCULATION = re.compile(r"(\d+(?: [-+*/] \d+)+) = (\d+)")


def test_the_templates_are_many_and_cover_every_family_with_two_to_four_steps():
    assert len(TEMPLATES) >= 30 and len({t.id for t in TEMPLATES}) == len(TEMPLATES)
    families = Counter(t.family for t in TEMPLATES)
    assert set(families) == set(FAMILIES) and min(families.values()) >= 6
    assert {len(t.steps) for t in TEMPLATES} == {2, 3, 4}
    assert all(t in {x.id for x in TEMPLATES} for t in HELDOUT_TEMPLATES)
    assert {t.split("-")[0] for t in HELDOUT_TEMPLATES} == set(FAMILIES)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.id)
def test_every_rationale_states_true_arithmetic_that_ends_in_the_answer(template):
    rng = random.Random(template.id)
    for n in range(40):
        problem = instantiate(template, rng, f"x{n}")
        calculations = CALCULATION.findall(problem.rationale)
        assert len(calculations) == problem.steps == len(template.steps)
        for expression, result in calculations:
            # An independent check of the generator's own evaluator; Python's / is exact here.
            assert eval(expression) == int(result), (problem.rationale, expression)  # noqa: S307 (digits and operators only)
        assert int(calculations[-1][1]) == problem.answer and 2 <= problem.answer <= 1000
        assert "{" not in problem.question + problem.rationale and problem.question.endswith("?")


@pytest.mark.parametrize("max_value", [20, 30])
def test_small_numbers_keep_every_number_in_range_and_the_arithmetic_true(max_value):
    for template in TEMPLATES:  # every template can still be drawn, with its steps and a true rationale
        rng = random.Random(template.id)
        for n in range(10):
            problem = instantiate(template, rng, f"x{n}", max_value=max_value)
            calculations = CALCULATION.findall(problem.rationale)
            assert len(calculations) == problem.steps == len(template.steps)
            for expression, result in calculations:
                assert eval(expression) == int(result), (problem.rationale, expression)  # noqa: S307
            numbers = [int(x) for x in re.findall(r"\d+", problem.question + " " + problem.rationale)]
            assert all(2 <= x <= max_value for x in numbers), (max_value, problem.question, problem.rationale)
            assert int(calculations[-1][1]) == problem.answer
    splits = make_splits(seed=0, train=90, test=20, unseen=10, max_value=max_value)
    assert splits == make_splits(seed=0, train=90, test=20, unseen=10, max_value=max_value)
    assert len({p.answer for p in splits["train"]}) > max_value // 2  # the answers spread over the range
    with pytest.raises(ValueError, match="max_value must lie in"):
        generate(1, seed=0, max_value=10)


def test_generation_is_deterministic_and_seed_dependent():
    assert generate(30, seed=1) == generate(30, seed=1)
    assert generate(30, seed=1) != generate(30, seed=2)
    problems = generate(len(TEMPLATES) * 2, seed=0)
    assert Counter(p.template for p in problems) == Counter({t.id: 2 for t in TEMPLATES})  # drawn evenly


def test_splits_hold_out_whole_templates_and_never_share_a_question():
    splits = make_splits(seed=0, train=300, test=60, unseen=40)
    assert [len(splits[s]) for s in ("train", "test", "test_unseen")] == [300, 60, 40]
    questions = [p.question for part in splits.values() for p in part]
    assert len(set(questions)) == len(questions)
    held = set(HELDOUT_TEMPLATES)
    assert not any(p.template in held for p in splits["train"] + splits["test"])
    assert {p.template for p in splits["test_unseen"]} == held
    assert make_splits(seed=0, train=300, test=60, unseen=40) == splits
    with pytest.raises(KeyError, match="unknown word-problem template"):
        make_splits(seed=0, train=1, test=1, unseen=1, holdout=["shopping-99"])


def test_problems_round_trip_through_the_rationale_jsonl_format(tmp_path):
    problems = generate(25, seed=3)
    path = write_jsonl(tmp_path / "train.jsonl", [p.record() for p in problems])
    examples = read_rationale_jsonl(path)
    assert [(e.input, e.rationale, e.label) for e in examples] == [(p.question, p.rationale, str(p.answer)) for p in problems]
    assert exact_match([e.label for e in examples], [str(p.answer) for p in problems]) == 1.0
    paths = write_splits(tmp_path / "splits", seed=0, train=20, test=5, unseen=5)
    assert sorted(paths) == ["test", "test_unseen", "train"]
    assert [e.input for e in read_rationale_jsonl(paths["test_unseen"])] == [p.question for p in make_splits(0, 20, 5, 5)["test_unseen"]]


def test_labels_compare_in_normal_form():
    assert normalize_label(" 1,200.0. ") == normalize_label("1200") == "1200"
    assert normalize_label("2.50") == "2.5" and normalize_label("Yes!") == "yes"
    assert exact_match(["12", "13.", "x"], ["12.0", "14", "X"]) == pytest.approx(2 / 3)


def write_lines(path, *lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_an_empty_rationale_is_an_input_error_naming_file_and_line(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", '{"input": "2 + 2?", "rationale": "2 + 2 = 4.", "label": "4"}', "",
                       '{"input": "3 + 3?", "rationale": "  ", "label": "6"}')
    with pytest.raises(InputError, match=r"data\.jsonl line 3: field 'rationale' \(the rationale\) is empty") as error:
        read_rationale_jsonl(path)
    assert error.value.exit_code == 2
    # Without rationales (the teacher will write them) the same file reads.
    assert [e.rationale for e in read_rationale_jsonl(path, required=("input", "label"))] == ["2 + 2 = 4.", "  "]


@pytest.mark.parametrize("line, message", [
    ('{"input": "q", "rational": "r", "label": "1"}', r"line 1 has no field 'rationale' \(the rationale\)\. Did you mean 'rational'"),
    ('{"input": "q", "rationale": "r", "label": [1]}', r"line 1: field 'label' must be a string, not list"),
    ('{"input": "q", "rationale": "r"', r"line 1 is not valid JSON"),
    ('["q", "r", "1"]', r"line 1 must be a JSON object"),
])
def test_bad_rows_are_input_errors_naming_the_line(tmp_path, line, message):
    with pytest.raises(InputError, match=message):
        read_rationale_jsonl(write_lines(tmp_path / "bad.jsonl", line))


def test_missing_and_empty_files_and_numeric_labels(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_rationale_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="holds no rows"):
        read_rationale_jsonl(write_lines(tmp_path / "empty.jsonl", ""))
    path = write_lines(tmp_path / "n.jsonl", '{"question": "q", "why": "r", "answer": 26, "llm": 25}')
    from edgekd.data.rationales import RationaleFields

    fields = RationaleFields(input="question", rationale="why", label="answer", teacher_label="llm")
    (example,) = read_rationale_jsonl(path, fields)
    assert (example.input, example.rationale, example.label, example.teacher_label) == ("q", "r", "26", "25")
