"""How a teacher is asked for rationales, and how its answers are read back.

A few-shot chain-of-thought prompt: every shot is written as `template` (with the shot's input) followed
by `answer` (with its rationale and label), shots are joined by `separator`, and the prompt ends with
`template` for the new input. The teacher continues in the shots' style; `parse`, a regular expression
with named groups `rationale` and `label`, reads its output back. With the defaults a prompt reads

    Q: Ava has 3 bags of 4 plums. ...
    A: There are 3 * 4 = 12 plums. ... The answer is 6.

    Q: <the new input>
    A:

Placeholders use Python's `str.format` syntax, so a literal brace is written `{{` or `}}`. Everything is
checked when the object is built, before any teacher runs: a template without `{input}`, a pattern
without a `label` group, and a shot whose own answer the pattern cannot read back are input errors.

>>> prompting = TeacherPrompting(shots=(Shot("2 + 3?", "2 + 3 = 5.", "5"),))
>>> print(prompting.prompt("4 + 4?"))
Q: 2 + 3?
A: 2 + 3 = 5. The answer is 5.
<BLANKLINE>
Q: 4 + 4?
A:
>>> prompting.parse_output(" 4 + 4 = 8. The answer is 8.\\n\\nQ: next")
Parsed(rationale='4 + 4 = 8.', label='8')
"""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

from edgekd.data.rationales import RationaleExample, normalize_label
from edgekd.errors import InputError

DEFAULT_PARSE = r"(?s)^\s*(?P<rationale>.*?)\s*The answer is\s*(?P<label>[^\n]*?)\s*\.?\s*(?:\n|$)"

Generate = Callable[[list[str]], list[str]]
"""A teacher, as the cache sees it: prompts in, generated continuations (without the prompt) out."""


@dataclass(frozen=True)
class Shot:
    """One worked example in the prompt."""

    input: str
    rationale: str
    label: str


class Parsed(NamedTuple):
    rationale: str
    label: str


def _shot(value: Shot | dict[str, Any], number: int) -> Shot:
    if isinstance(value, Shot):
        return value
    try:
        return Shot(**value)
    except TypeError:
        raise InputError(f"prompt.shots[{number}] must have exactly the fields input, rationale and label, not {sorted(value)}") from None


def _placeholders(text: str, field_name: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise InputError(f"{field_name}: {text!r} is not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None


def _check_placeholders(text: str, field_name: str, needed: set[str]) -> None:
    found = _placeholders(text, field_name)
    missing, unknown = needed - found, found - needed
    if missing:
        listed = ", ".join("{" + n + "}" for n in sorted(missing))
        raise InputError(f"{field_name}: {text!r} has no {listed} placeholder; it must say where the {', '.join(sorted(missing))} goes")
    if unknown:
        listed = ", ".join("{" + n + "}" for n in sorted(unknown))
        allowed = ", ".join("{" + n + "}" for n in sorted(needed))
        raise InputError(f"{field_name}: {text!r} uses unknown placeholder(s) {listed}; it may use {allowed} (a literal brace is {{{{ or }}}})")


@dataclass(frozen=True)
class TeacherPrompting:
    """Few-shot chain-of-thought prompting of a teacher and parsing of its outputs.

    `temperature` 0 is greedy decoding; above 0 the teacher samples, seeded by `seed`. `keep_disagreeing` keeps examples whose parsed label differs from
    the ground truth (their rationale may still teach); False drops them."""

    template: str = "Q: {input}\nA:"
    answer: str = " {rationale} The answer is {label}."
    shots: tuple[Shot, ...] = ()
    separator: str = "\n\n"
    parse: str = DEFAULT_PARSE
    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    keep_disagreeing: bool = True
    _pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_placeholders(self.template, "prompt.template", {"input"})
        _check_placeholders(self.answer, "prompt.answer", {"rationale", "label"})
        object.__setattr__(self, "shots", tuple(_shot(s, number) for number, s in enumerate(self.shots)))
        try:
            pattern = re.compile(self.parse)
        except re.error as exc:
            raise InputError(f"parse: {self.parse!r} is not a valid regular expression: {exc}") from None
        for group in ("label", "rationale"):
            if group not in pattern.groupindex:
                raise InputError(
                    f"parse: the pattern {self.parse!r} has no named group {group!r}; write it as (?P<{group}>…) "
                    "so the teacher's output can be split into rationale and label"
                )
        object.__setattr__(self, "_pattern", pattern)
        if self.max_new_tokens < 1:
            raise InputError(f"generation.max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise InputError(f"generation.temperature must be 0 (greedy) or positive, not {self.temperature}")
        self._check_shots()

    def _check_shots(self) -> None:
        """The teacher imitates the shots: a shot the pattern cannot read back means no output will parse."""
        for number, shot in enumerate(self.shots):
            for name in ("input", "rationale", "label"):
                if not getattr(shot, name).strip():
                    raise InputError(f"prompt.shots[{number}].{name} is empty")
            written = self.answer.format(rationale=shot.rationale, label=shot.label)
            parsed = self.parse_output(written)
            if parsed is None or normalize_label(parsed.label) != normalize_label(shot.label):
                read = "nothing" if parsed is None else f"label {parsed.label!r}"
                raise InputError(
                    f"prompt.shots[{number}]: its answer {written!r} reads back as {read} with the parse pattern "
                    f"{self.parse!r}, not label {shot.label!r}; make prompt.answer and parse agree"
                )

    def prompt(self, input: str) -> str:
        shots = [self.template.format(input=s.input) + self.answer.format(rationale=s.rationale, label=s.label) for s in self.shots]
        return self.separator.join([*shots, self.template.format(input=input)])

    def parse_output(self, output: str) -> Parsed | None:
        """The first match of the pattern in the output; None when there is none or its rationale is empty."""
        match = self._pattern.search(output)
        if match is None or not (match.group("rationale") or "").strip() or not (match.group("label") or "").strip():
            return None
        return Parsed(match.group("rationale").strip(), match.group("label").strip())

    def generation_key(self) -> dict[str, Any]:
        """Everything that changes what the teacher writes (the parse pattern and keep/drop do not)."""
        return {
            "template": self.template, "answer": self.answer, "separator": self.separator,
            "shots": [asdict(s) for s in self.shots],
            "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
            "seed": self.seed if self.temperature > 0 else None,
        }


@dataclass
class ParseStats:
    """What became of the teacher's outputs; `unparsed_examples` keeps a few for the report."""

    total: int = 0
    unparsed: int = 0
    disagreeing: int = 0
    dropped: int = 0
    unparsed_examples: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.total - self.unparsed - self.dropped


MAX_UNPARSED_EXAMPLES = 3


def read_teacher_outputs(
    examples: Sequence[RationaleExample], outputs: Sequence[str], prompting: TeacherPrompting
) -> tuple[list[RationaleExample], ParseStats]:
    """Attach each parsed output to its example as rationale and teacher label. Outputs that do not parse
    are counted and left out; labels that disagree with a ground truth are counted, and dropped unless
    `prompting.keep_disagreeing`. Examples without a ground-truth label cannot disagree."""
    if len(examples) != len(outputs):
        raise ValueError(f"{len(outputs)} teacher outputs for {len(examples)} examples")
    stats, kept = ParseStats(total=len(examples)), []
    for example, output in zip(examples, outputs):
        parsed = prompting.parse_output(output)
        if parsed is None:
            stats.unparsed += 1
            if len(stats.unparsed_examples) < MAX_UNPARSED_EXAMPLES:
                stats.unparsed_examples.append(output)
            continue
        if example.label is not None and normalize_label(parsed.label) != normalize_label(example.label):
            stats.disagreeing += 1
            if not prompting.keep_disagreeing:
                stats.dropped += 1
                continue
        kept.append(RationaleExample(example.input, example.label, parsed.rationale, parsed.label))
    return kept, stats
