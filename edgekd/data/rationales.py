"""Inputs with rationales in JSONL: the production format for step-by-step distillation.

A rationale is the reasoning that leads from an input to its label, written by a large model. The
production path is to have any LLM write them offline and store them beside the data, one JSON object
per line (UTF-8):

    {"input": "Ava buys 3 packs of 12 pencils ... How many pencils are left?",
     "rationale": "3 packs of 12 pencils make 3 * 12 = 36 pencils. After giving 10 away, 36 - 10 = 26 are left.",
     "label": "26"}

- `input`: the text the student reads (a non-empty string).
- `label`: the ground-truth answer, the target of the label task. A string; a JSON number is accepted
  and kept as written (`26` → "26").
- `rationale`: the reasoning, a non-empty string. No label marker is needed inside it: training adds the
  task prefixes and joins rationale and label itself.
- `teacher_label` (optional): the label the LLM gave together with its rationale; training reads it when
  told to learn the teacher's labels instead of the ground truth.
- Any other field (an id, a source) is ignored.

The field names are configurable (`RationaleFields`). `edgekd.data.wordproblems` writes this format
(`python -m edgekd.data.wordproblems DIR`).

In a recipe the same rows are text data, read with `rationales: {source: data, field: rationale}`:

    data: {dataset: text, root: DIR, options: {task: generate, input: input, target: label}}

`target` names the label field; every row read (test rows included) must hold a non-empty rationale,
which `edgekd validate` checks, naming file, line and field. With `label_source: teacher` each row also
needs `teacher_label` (`rationales.teacher_label_field`). See `edgekd.distill.stepbystep_method`.

Labels are compared after `normalize_label`, so "1,200", "1200.0" and " 1200." are one answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from edgekd import decoding
from edgekd.errors import InputError
from edgekd.files import json_object, write_atomic
from edgekd.registry import close_matches


@dataclass(frozen=True)
class RationaleExample:
    """One training input with what step-by-step distillation learns from it; absent parts are None."""

    input: str
    label: str | None
    rationale: str | None = None
    teacher_label: str | None = None


@dataclass(frozen=True)
class RationaleFields:
    """Which JSONL field holds each part of an example."""

    input: str = "input"
    label: str = "label"
    rationale: str = "rationale"
    teacher_label: str = "teacher_label"


def _text(value: Any, where: str, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"{where}: field {field!r} must be a string, not {type(value).__name__} ({value!r})")
    return value if isinstance(value, str) else str(value)


def read_rationale_jsonl(
    path: str | Path, fields: RationaleFields = RationaleFields(), *, required: Sequence[str] = ("input", "label", "rationale")
) -> list[RationaleExample]:
    """Read and check every row. `required` names the parts (attributes of `RationaleFields`) that each row
    must hold as a non-empty string; the first bad row stops the read with an InputError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"rationale data {str(path)!r} does not exist")
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                examples.append(_row(line, f"{path} line {number}", fields, required))
    if not examples:
        raise InputError(f"rationale data {str(path)!r} holds no rows (expected one JSON object per line)")
    return examples


def _row(line: str, where: str, fields: RationaleFields, required: Sequence[str]) -> RationaleExample:
    row = json_object(line, where)
    parts = {}
    for part in ("input", "label", "rationale", "teacher_label"):
        name = getattr(fields, part)
        value = _text(row.get(name), where, name)
        if part in required:
            if name not in row:
                hint = close_matches(name, list(row))
                raise InputError(f"{where} has no field {name!r} (the {part}).{hint} It has: {', '.join(row)}.")
            if not (value or "").strip():
                raise InputError(
                    f"{where}: field {name!r} (the {part}) is empty; every row needs one"
                    + (" — or let the recipe's teacher write the rationales" if part == "rationale" else "")
                )
        parts[part] = value
    return RationaleExample(**parts)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` atomically and durably (`edgekd.files.write_atomic`), creating the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, text)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as JSONL (UTF-8, one object per line) atomically."""
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def normalize_label(text: str) -> str:
    """The form labels are compared in: case, surrounding spaces and punctuation, runs of spaces,
    thousands separators and a trailing ".0" do not count.

    >>> normalize_label(" 1,200.0. ") == normalize_label("1200")
    True
    >>> normalize_label("Entailment") == normalize_label("entailment")
    True
    """
    label = " ".join(text.split()).strip(" .!?,;:").casefold()
    number = label.replace(",", "")
    if _NUMBER.fullmatch(number):
        value = Decimal(number)
        return str(int(value)) if value == value.to_integral_value() else format(value.normalize(), "f")
    return label


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after `normalize_label` (`edgekd.decoding.exact_match`)."""
    return decoding.exact_match(predictions, references, normalize=normalize_label)
