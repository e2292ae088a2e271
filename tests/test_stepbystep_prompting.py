"""Few-shot prompting of a teacher and parsing of its outputs into rationale and label."""

import pytest

from edgekd.data.rationales import RationaleExample
from edgekd.distill.prompting import Shot, TeacherPrompting, read_teacher_outputs
from edgekd.errors import InputError

SHOTS = (
    Shot("Ava has 3 bags of 4 plums. How many plums?", "There are 3 * 4 = 12 plums.", "12"),
    Shot("Ben has 9 cards and gives 2 away. How many are left?", "9 - 2 = 7 cards are left.", "7"),
)


def test_the_prompt_shows_every_shot_then_the_new_input():
    prompting = TeacherPrompting(shots=SHOTS)
    prompt = prompting.prompt("Cleo has 5 pens and buys 5 more. How many pens?")
    assert prompt == (
        "Q: Ava has 3 bags of 4 plums. How many plums?\nA: There are 3 * 4 = 12 plums. The answer is 12.\n\n"
        "Q: Ben has 9 cards and gives 2 away. How many are left?\nA: 9 - 2 = 7 cards are left. The answer is 7.\n\n"
        "Q: Cleo has 5 pens and buys 5 more. How many pens?\nA:"
    )
    custom = TeacherPrompting(template="Question: {input}\nReasoning:", answer=" {rationale}\nLabel: {label}",
                              parse=r"(?s)(?P<rationale>.+?)\nLabel: (?P<label>\w+)", shots=({"input": "a?", "rationale": "b.", "label": "c"},),
                              separator="\n---\n")
    assert custom.prompt("x?") == "Question: a?\nReasoning: b.\nLabel: c\n---\nQuestion: x?\nReasoning:"


@pytest.mark.parametrize("output, parsed", [
    (" 5 + 5 = 10 pens. The answer is 10.", ("5 + 5 = 10 pens.", "10")),
    (" 5 + 5 = 10 pens. The answer is 10.\n\nQ: Dan has 2 cats", ("5 + 5 = 10 pens.", "10")),  # runs on into a new question
    ("\n 2 * 3 = 6.\n6 + 1 = 7. The answer is 7", ("2 * 3 = 6.\n6 + 1 = 7.", "7")),  # no final full stop
    (" It costs 2.5 dollars. The answer is 2.5.", ("It costs 2.5 dollars.", "2.5")),
    (" 5 + 5 = 10 pens.", None),           # no answer
    (" The answer is 10.", None),          # no rationale
    (" Cleo has pens. The answer is .", None),  # empty label
    ("", None),
])
def test_outputs_parse_into_rationale_and_label_or_fail(output, parsed):
    result = TeacherPrompting(shots=SHOTS).parse_output(output)
    assert (tuple(result) if result else None) == parsed


def examples():
    return [RationaleExample("q1", "10"), RationaleExample("q2", "7"), RationaleExample("q3", "4"), RationaleExample("q4", None)]


OUTPUTS = [" 5 + 5 = 10. The answer is 10.", " 9 - 2 = 6. The answer is 6.", " I do not know.", " 1 + 1 = 2. The answer is 2."]


@pytest.mark.parametrize("keep", [True, False])
def test_teacher_outputs_are_counted_unparsed_and_disagreeing_then_kept_or_dropped(keep):
    kept, stats = read_teacher_outputs(examples(), OUTPUTS, TeacherPrompting(keep_disagreeing=keep))
    assert (stats.total, stats.unparsed, stats.disagreeing) == (4, 1, 1)  # q3 did not parse; q2 says 6, not 7
    assert stats.unparsed_examples == [" I do not know."]
    assert [e.input for e in kept] == (["q1", "q2", "q4"] if keep else ["q1", "q4"])  # q4 has no ground truth to disagree with
    assert (stats.dropped, stats.kept) == ((0, 3) if keep else (1, 2))
    first = kept[0]
    assert (first.rationale, first.teacher_label, first.label) == ("5 + 5 = 10.", "10", "10")


def test_a_template_without_the_input_placeholder_is_an_input_error():
    with pytest.raises(InputError, match=r"prompt\.template: 'Question: \?' has no \{input\} placeholder") as error:
        TeacherPrompting(template="Question: ?")
    assert error.value.exit_code == 2


@pytest.mark.parametrize("pattern, group", [
    (r"(?s)(?P<rationale>.*?) The answer is (\d+)", "label"),
    (r"The answer is (?P<label>\d+)", "rationale"),
])
def test_a_pattern_without_a_label_or_rationale_group_is_an_input_error(pattern, group):
    with pytest.raises(InputError, match=rf"parse: the pattern .* has no named group '{group}'; write it as \(\?P<{group}>"):
        TeacherPrompting(parse=pattern)


@pytest.mark.parametrize("settings, message", [
    ({"template": "Q: {input} {context}"}, r"prompt\.template: .* unknown placeholder\(s\) \{context\}"),
    ({"template": "Q: {input"}, r"prompt\.template: .* is not a valid template"),
    ({"answer": " {rationale}"}, r"prompt\.answer: .* has no \{label\} placeholder"),
    ({"parse": "(?P<label>[0-9"}, r"parse: .* is not a valid regular expression"),
    ({"max_new_tokens": 0}, r"generation\.max_new_tokens must be at least 1"),
    ({"temperature": -0.5}, r"generation\.temperature must be 0 \(greedy\) or positive"),
    ({"shots": ({"input": "a", "rationale": "b"},)}, r"prompt\.shots\[0\] must have exactly the fields"),
    ({"shots": (Shot("a", "", "1"),)}, r"prompt\.shots\[0\]\.rationale is empty"),
    # The teacher imitates the shots: a shot the pattern cannot read back is caught before any generation.
    ({"shots": SHOTS, "answer": " {rationale} So: {label}."}, r"prompt\.shots\[0\]: its answer .* reads back as nothing"),
])
def test_bad_prompting_is_refused_before_any_teacher_runs(settings, message):
    with pytest.raises(InputError, match=message):
        TeacherPrompting(**settings)


def test_the_generation_key_ignores_what_only_changes_parsing():
    base = TeacherPrompting(shots=SHOTS)
    assert base.generation_key() == TeacherPrompting(shots=SHOTS, parse=r"(?s)(?P<rationale>.+?)The answer is (?P<label>\d+)",
                                                     keep_disagreeing=False).generation_key()
    assert base.generation_key() == TeacherPrompting(shots=SHOTS, seed=5).generation_key()  # greedy: the seed is unused
    for changed in ({"max_new_tokens": 64}, {"temperature": 0.7}, {"shots": SHOTS[:1]}, {"template": "Q: {input}\nA: "}):
        assert TeacherPrompting(**{"shots": SHOTS, **changed}).generation_key() != base.generation_key()
