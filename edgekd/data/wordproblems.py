"""SYNTHETIC multi-step arithmetic word problems (SVAMP-like), generated here — nothing is downloaded.

Each problem comes from one of 45 hand-written templates in five story families (shopping, sharing,
rates, comparison, combined), with 2 to 4 arithmetic steps. A template draws integers, checks that
every intermediate result is a whole number from 2 to 1000 (so every noun is plural), and writes the
question, a gold step-by-step rationale that states each intermediate result, and the answer. The
answer is the last step's value, so it is checkable, and every "a op b = c" in a rationale is true
arithmetic.

The problems exist to test and benchmark rationale distillation offline at small scale. They are
synthetic: the language is templated and the numbers are small, so results on them say how a method
behaves, not how it does on human-written problems.

`max_value` (default 1000) bounds every number, drawn or computed, to [2, max_value]: at 20 or 30 the
same templates, steps and rationales remain, but each `a op b = c` comes from a table of a few hundred
facts, which a small model trained from scratch can learn, where multi-digit arithmetic up to 1000 is
beyond one (what `bench/step_by_step.py` found). A template's slot range above `max_value` is cut to it.

`make_splits` holds out whole templates (one per family) as well as unseen samples of the seen
templates, so a test can measure generalisation to new phrasings and not only to new numbers.
`WordProblem.record()` is the JSONL row the rationale reader expects (see `edgekd.data.rationales`);
`write_splits` writes the three splits as files.

>>> problems = generate(3, seed=0)
>>> [p.steps >= 2 for p in problems]
[True, True, True]
>>> problems == generate(3, seed=0)
True
"""

from __future__ import annotations

import ast
import operator
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgekd.data.rationales import write_jsonl
from edgekd.registry import unknown_name

FAMILIES = ("shopping", "sharing", "rates", "comparison", "combined")

NAMES = (
    "Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
    "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe",
)
GOODS = ("pencils", "stickers", "marbles", "erasers", "cards", "buttons", "stamps", "beads")
FRUIT = ("apples", "oranges", "plums", "pears", "lemons", "peaches", "mangoes", "limes")
BAKED = ("cookies", "muffins", "cupcakes", "rolls", "bagels", "scones", "tarts", "pretzels")
THINGS = ("backpack", "lamp", "kite", "board game", "scarf", "water bottle", "puzzle", "helmet")

MAX_VALUE = 1000  # keeps numbers small enough for a small student to be asked about them
SMALLEST_MAX_VALUE = 20  # below it some templates (four steps, each result at least 2) can hardly be drawn
MAX_ATTEMPTS = 20000


@dataclass(frozen=True)
class Step:
    """One reasoning step: `name = expr`, written as `text`; `{calc}` in `text` becomes e.g. `3 * 12 = 36`."""

    name: str
    expr: str
    text: str


@dataclass(frozen=True)
class Template:
    """A story with integer slots. `numbers` maps a slot to an inclusive range or to an expression of
    earlier slots (drawn in order; slots the question never shows may only serve to make a division
    exact). `words` maps a slot to its vocabulary; `name`, `name2`, `name3` are always distinct people."""

    id: str
    family: str
    question: str
    numbers: Mapping[str, tuple[int, int] | str]
    steps: tuple[Step, ...]
    words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class WordProblem:
    id: str
    template: str
    family: str
    question: str
    rationale: str
    answer: int
    steps: int

    def record(self) -> dict[str, Any]:
        """The JSONL row: `input`, `rationale`, `label` (a string: the generate task's target), plus provenance."""
        return {
            "id": self.id, "input": self.question, "rationale": self.rationale, "label": str(self.answer),
            "template": self.template, "family": self.family, "steps": self.steps,
        }


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


class _Rejected(Exception):
    """A draw that breaks a rule (below 2, fractional or too large); the template draws again."""


def _evaluate(expr: str, values: Mapping[str, int], max_value: int = MAX_VALUE) -> int:
    """Integer arithmetic on slot names with + - * and exact /; anything else is a template bug."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            numerator, denominator = walk(node.left), walk(node.right)
            if denominator == 0 or numerator % denominator:
                raise _Rejected
            return numerator // denominator
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"unsupported expression {expr!r}")

    result = walk(ast.parse(expr, mode="eval"))
    if not 2 <= result <= max_value:
        raise _Rejected
    return result


def _calculation(expr: str, values: Mapping[str, int], result: int) -> str:
    shown = re.sub(r"[A-Za-z_]\w*", lambda m: str(values[m.group()]), expr)
    return f"{shown} = {result}"


def _fill_words(template: Template, rng: random.Random) -> dict[str, str]:
    name, name2, name3 = rng.sample(NAMES, 3)
    words = {"name": name, "name2": name2, "name3": name3}
    for slot, vocabulary in dict(template.words).items():
        taken = set(words.values())
        words[slot] = rng.choice([w for w in vocabulary if w not in taken])
    return words


def _slot_range(low: int, high: int, max_value: int) -> tuple[int, int]:
    """A template's range for a slot under `max_value`: cut at `max_value`, and where that leaves less than
    half of it, widened down to 2 so the slot still varies (a price of 30..90 becomes 2..20 at 20). Ranges
    already within `max_value` are kept as written, so the default problems do not change."""
    if high <= max_value:
        return low, high
    return (low if 2 * low <= max_value else 2), max_value


def _check_max_value(max_value: int) -> None:
    if not SMALLEST_MAX_VALUE <= max_value <= MAX_VALUE:
        raise ValueError(f"max_value must lie in [{SMALLEST_MAX_VALUE}, {MAX_VALUE}], not {max_value}")


def instantiate(template: Template, rng: random.Random, problem_id: str, max_value: int = MAX_VALUE) -> WordProblem:
    """Draw slots until every number — drawn, derived, and each step's result — is an integer in
    [2, `max_value`]."""
    _check_max_value(max_value)
    for _ in range(MAX_ATTEMPTS):
        try:
            values: dict[str, int] = {}
            for slot, spec in template.numbers.items():
                values[slot] = (
                    rng.randint(*_slot_range(*spec, max_value)) if isinstance(spec, tuple) else _evaluate(spec, values, max_value)
                )
            sentences = []
            for step in template.steps:
                result = _evaluate(step.expr, values, max_value)
                calc = _calculation(step.expr, values, result)
                values[step.name] = result
                sentences.append((step.text, calc))
        except _Rejected:
            continue
        words = _fill_words(template, rng)
        fields = {**words, **{k: str(v) for k, v in values.items()}}
        rationale = " ".join(text.format(calc=calc, **fields) for text, calc in sentences)
        return WordProblem(
            id=problem_id, template=template.id, family=template.family,
            question=template.question.format(**fields), rationale=rationale,
            answer=values[template.steps[-1].name], steps=len(template.steps),
        )
    raise RuntimeError(f"template {template.id!r} drew no valid numbers in {MAX_ATTEMPTS} attempts")


def _t(id: str, question: str, numbers: dict[str, tuple[int, int] | str], steps: list[tuple[str, str, str]],
       **words: tuple[str, ...]) -> Template:
    return Template(id, id.rsplit("-", 1)[0], question, numbers, tuple(Step(*s) for s in steps), words)


TEMPLATES: tuple[Template, ...] = (
    # shopping
    _t("shopping-01", "{name} buys {a} packs of {item} with {b} {item} in each pack and gives {c} {item} to {name2}. "
       "How many {item} does {name} have left?", {"a": (2, 9), "b": (3, 12), "c": (2, 30)},
       [("total", "a * b", "{a} packs of {b} {item} make {calc} {item}."),
        ("left", "total - c", "After giving {c} to {name2}, {name} has {calc} {item} left.")], item=GOODS),
    _t("shopping-02", "{name} buys {a} {item} for {p} dollars each and a {thing} for {q} dollars. "
       "How many dollars does {name} spend?", {"a": (2, 9), "p": (2, 15), "q": (5, 60)},
       [("cost", "a * p", "The {item} cost {calc} dollars."),
        ("total", "cost + q", "With the {thing}, {name} spends {calc} dollars.")], item=GOODS, thing=THINGS),
    _t("shopping-03", "{name} has {m} dollars and buys {a} {item} at {p} dollars each. How many dollars are left?",
       {"a": (2, 9), "p": (2, 12), "m": (20, 150)},
       [("cost", "a * p", "{a} {item} at {p} dollars cost {calc} dollars."),
        ("left", "m - cost", "{name} has {calc} dollars left.")], item=FRUIT),
    _t("shopping-04", "{name} buys {a} {item} at {p} dollars each and {b} {item2} at {q} dollars each. "
       "How many dollars does {name} pay in all?", {"a": (2, 8), "p": (2, 9), "b": (2, 8), "q": (2, 9)},
       [("first", "a * p", "The {item} cost {calc} dollars."),
        ("second", "b * q", "The {item2} cost {calc} dollars."),
        ("total", "first + second", "Together {name} pays {calc} dollars.")], item=GOODS, item2=FRUIT),
    _t("shopping-10", "{name} buys {a} packs of {b} {item} for {p} dollars a pack and sells every one of the {item} "
       "for {q} dollars. How many dollars of profit does {name} make?", {"a": (2, 6), "b": (3, 10), "p": (2, 20), "q": (2, 6)},
       [("count", "a * b", "{name} has {calc} {item}."),
        ("income", "count * q", "Selling them brings {calc} dollars."),
        ("cost", "a * p", "The packs cost {calc} dollars."),
        ("profit", "income - cost", "The profit is {calc} dollars.")], item=GOODS),
    _t("shopping-05", "{name} pays {m} dollars for {a} {item} and gets {r} dollars back in change. "
       "How many dollars does each of the {item} cost?", {"a": (2, 9), "p": (2, 12), "r": (2, 20), "m": "a * p + r"},
       [("spent", "m - r", "{name} spent {calc} dollars."),
        ("each", "spent / a", "Each of the {a} {item} costs {calc} dollars.")], item=GOODS),
    _t("shopping-06", "A shop sells {item} in boxes of {b}, and each box costs {p} dollars. {name} needs {n} {item}. "
       "How many dollars does {name} pay?", {"b": (3, 12), "k": (2, 9), "n": "b * k", "p": (2, 15)},
       [("boxes", "n / b", "{name} needs {calc} boxes."),
        ("cost", "boxes * p", "The boxes cost {calc} dollars.")], item=FRUIT),
    _t("shopping-07", "{name} has {m} dollars and saves {s} dollars a week for {w} weeks, then buys a {thing} "
       "for {p} dollars. How many dollars does {name} have now?", {"m": (5, 50), "s": (2, 20), "w": (2, 10), "p": (10, 90)},
       [("saved", "s * w", "In {w} weeks {name} saves {calc} dollars."),
        ("total", "m + saved", "That makes {calc} dollars."),
        ("left", "total - p", "After the {thing}, {name} has {calc} dollars.")], thing=THINGS),
    _t("shopping-08", "At a market, {item} cost {p} dollars each. {name} buys {a} of them and {name2} buys {d} more than {name}. "
       "How many dollars do they spend together?", {"p": (2, 9), "a": (2, 9), "d": (2, 6)},
       [("other", "a + d", "{name2} buys {calc} {item}."),
        ("count", "a + other", "Together they buy {calc} {item}."),
        ("cost", "count * p", "They spend {calc} dollars.")], item=BAKED),
    _t("shopping-09", "A {thing} costs {p} dollars. In a sale its price drops by {d} dollars, and {name} buys {a} "
       "of them. How many dollars does {name} pay?", {"p": (10, 60), "d": (2, 9), "a": (2, 6)},
       [("price", "p - d", "The sale price is {calc} dollars."),
        ("cost", "price * a", "{a} of them cost {calc} dollars.")], thing=THINGS),
    # sharing
    _t("sharing-01", "{name} has {a} bags with {b} {item} in each bag and shares all the {item} equally among "
       "{k} friends. How many {item} does each friend get?", {"k": (2, 8), "a": (2, 9), "b": (2, 12)},
       [("total", "a * b", "There are {calc} {item}."),
        ("each", "total / k", "Each of the {k} friends gets {calc} {item}.")], item=FRUIT),
    _t("sharing-02", "{name} baked {n} {item}, ate {e} of them and shared the rest equally among {k} friends. "
       "How many {item} did each friend get?", {"k": (2, 8), "q": (2, 10), "e": (2, 6), "n": "k * q + e"},
       [("rest", "n - e", "{calc} {item} were left to share."),
        ("each", "rest / k", "Each friend got {calc} {item}.")], item=BAKED),
    _t("sharing-03", "{n} students are split into teams of {k}, and each team gets {b} balls. "
       "How many balls are needed?", {"k": (2, 6), "t": (2, 9), "n": "k * t", "b": (2, 5)},
       [("teams", "n / k", "There are {calc} teams."),
        ("balls", "teams * b", "They need {calc} balls.")]),
    _t("sharing-04", "{name} and {name2} share {n} {item}, and {name2} gets {d} more than {name}. "
       "How many {item} does {name} get?", {"x": (2, 30), "d": (2, 12), "n": "2 * x + d"},
       [("rest", "n - d", "Without the extra {d}, there are {calc} {item}."),
        ("mine", "rest / 2", "Split in two, {name} gets {calc} {item}.")], item=GOODS),
    _t("sharing-05", "{name} and {name2} share {n} {item}, and {name2} gets {d} more than {name}. "
       "How many {item} does {name2} get?", {"x": (2, 30), "d": (2, 12), "n": "2 * x + d"},
       [("rest", "n - d", "Without the extra {d}, there are {calc} {item}."),
        ("half", "rest / 2", "{name} gets {calc} {item}."),
        ("theirs", "half + d", "{name2} gets {calc} {item}.")], item=GOODS),
    _t("sharing-06", "A teacher has {a} boxes of {b} crayons, keeps {r} and gives the rest equally to {k} students. "
       "How many crayons does each student get?", {"k": (2, 9), "a": (2, 8), "b": (6, 24), "r": (2, 12)},
       [("total", "a * b", "There are {calc} crayons."),
        ("given", "total - r", "The teacher gives away {calc} crayons."),
        ("each", "given / k", "Each student gets {calc} crayons.")]),
    _t("sharing-07", "{n} {item} are packed into bags of {b}, and {s} bags are sold. How many bags are left?",
       {"b": (2, 10), "g": (3, 20), "n": "b * g", "s": (2, 15)},
       [("bags", "n / b", "The {item} fill {calc} bags."),
        ("left", "bags - s", "{calc} bags are left.")], item=FRUIT),
    _t("sharing-08", "{name} cuts {a} pizzas into {b} slices each, and {k} people share the slices equally. "
       "How many slices does each person get?", {"k": (2, 8), "a": (2, 6), "b": (4, 12)},
       [("slices", "a * b", "There are {calc} slices."),
        ("each", "slices / k", "Each person gets {calc} slices.")]),
    # rates
    _t("rates-01", "A car drives {v} km per hour for {t} hours and then {w} km per hour for {u} hours. "
       "How many km does it drive?", {"v": (30, 90), "t": (2, 5), "w": (20, 80), "u": (2, 4)},
       [("first", "v * t", "First it drives {calc} km."),
        ("second", "w * u", "Then it drives {calc} km."),
        ("total", "first + second", "In all it drives {calc} km.")]),
    _t("rates-02", "{name} reads {p} pages a day of a book with {n} pages. How many pages are left after {d} days?",
       {"p": (5, 30), "d": (2, 9), "n": (100, 400)},
       [("read", "p * d", "In {d} days {name} reads {calc} pages."),
        ("left", "n - read", "{calc} pages are left.")]),
    _t("rates-03", "A machine makes {r} {item} an hour and runs {h} hours a day. How many {item} does it make "
       "in {d} days?", {"r": (5, 40), "h": (2, 8), "d": (2, 7)},
       [("daily", "r * h", "Each day it makes {calc} {item}."),
        ("total", "daily * d", "In {d} days it makes {calc} {item}.")], item=GOODS),
    _t("rates-04", "A tap pours {r} liters a minute into a tank that holds {n} liters and already has {s} liters. "
       "How many minutes does it take to fill the tank?", {"r": (2, 12), "m": (2, 20), "s": (2, 80), "n": "s + r * m"},
       [("need", "n - s", "The tank needs {calc} more liters."),
        ("minutes", "need / r", "It takes {calc} minutes.")]),
    _t("rates-05", "{name} earns {w} dollars an hour, works {h} hours a day for {d} days and spends {s} dollars. "
       "How many dollars does {name} keep?", {"w": (5, 20), "h": (2, 8), "d": (2, 6), "s": (10, 200)},
       [("daily", "w * h", "{name} earns {calc} dollars a day."),
        ("earned", "daily * d", "In {d} days that is {calc} dollars."),
        ("kept", "earned - s", "{name} keeps {calc} dollars.")]),
    _t("rates-06", "A train goes {n} km in {t} hours. At the same speed, how many km does it go in {u} hours?",
       {"t": (2, 6), "v": (20, 90), "n": "v * t", "u": (2, 9)},
       [("speed", "n / t", "Its speed is {calc} km per hour."),
        ("distance", "speed * u", "In {u} hours it goes {calc} km.")]),
    _t("rates-07", "{name} walks {a} km every morning and {b} km every evening. How many km does {name} walk "
       "in {d} days?", {"a": (2, 9), "b": (2, 9), "d": (2, 14)},
       [("daily", "a + b", "Each day {name} walks {calc} km."),
        ("total", "daily * d", "In {d} days {name} walks {calc} km.")]),
    _t("rates-08", "A printer prints {r} pages a minute. {name} prints {k} copies of a {p}-page report. "
       "How many minutes does it take?", {"r": (2, 10), "k": (2, 9), "p": (2, 20)},
       [("pages", "k * p", "That is {calc} pages."),
        ("minutes", "pages / r", "It takes {calc} minutes.")]),
    _t("rates-09", "A factory has {m} machines that each make {r} {item} an hour for {h} hours. The {item} are packed "
       "in boxes of {k} and {s} boxes are shipped. How many boxes are still in the factory?",
       {"m": (2, 5), "r": (2, 12), "h": (2, 8), "k": (2, 10), "s": (2, 20)},
       [("each", "r * h", "Each machine makes {calc} {item}."),
        ("made", "each * m", "The {m} machines make {calc} {item}."),
        ("boxes", "made / k", "They fill {calc} boxes."),
        ("left", "boxes - s", "{calc} boxes are still there.")], item=GOODS),
    # comparison
    _t("comparison-01", "{name} has {a} {item} and {name2} has {k} times as many. How many {item} do they have "
       "together?", {"a": (2, 30), "k": (2, 6)},
       [("other", "a * k", "{name2} has {calc} {item}."),
        ("total", "a + other", "Together they have {calc} {item}.")], item=GOODS),
    _t("comparison-02", "{name} has {a} {item}, {name2} has {d} fewer than {name}, and {name3} has twice as many "
       "as {name2}. How many {item} does {name3} have?", {"a": (5, 60), "d": (2, 20)},
       [("second", "a - d", "{name2} has {calc} {item}."),
        ("third", "second * 2", "{name3} has {calc} {item}.")], item=GOODS),
    _t("comparison-03", "{name} is {a} years old and {name2} is {d} years older. How old will {name2} be in "
       "{y} years?", {"a": (4, 40), "d": (2, 15), "y": (2, 20)},
       [("age", "a + d", "{name2} is {calc} years old now."),
        ("later", "age + y", "In {y} years {name2} will be {calc}.")]),
    _t("comparison-04", "A red box holds {a} {item} and a blue box holds {k} times as many. How many more {item} "
       "does the blue box hold?", {"a": (2, 40), "k": (2, 7)},
       [("blue", "a * k", "The blue box holds {calc} {item}."),
        ("more", "blue - a", "That is {calc} more.")], item=BAKED),
    _t("comparison-05", "{name} scored {a} points, {name2} scored {d} more than {name}, and {name3} scored {e} "
       "fewer than {name2}. How many points did they score in all?", {"a": (5, 60), "d": (2, 20), "e": (2, 20)},
       [("second", "a + d", "{name2} scored {calc} points."),
        ("third", "second - e", "{name3} scored {calc} points."),
        ("total", "a + second + third", "In all they scored {calc} points.")]),
    _t("comparison-06", "{name} has {a} {item}, which is {k} times as many as {name2} has. How many more {item} "
       "does {name} have than {name2}?", {"k": (2, 6), "x": (2, 25), "a": "x * k"},
       [("other", "a / k", "{name2} has {calc} {item}."),
        ("more", "a - other", "{name} has {calc} more.")], item=GOODS),
    _t("comparison-07", "A tower is {a} meters tall, a second tower is {d} meters shorter, and a third is three "
       "times as tall as the second. How much taller is the third tower than the first?",
       {"a": (10, 80), "d": (2, 30)},
       [("second", "a - d", "The second tower is {calc} meters tall."),
        ("third", "second * 3", "The third is {calc} meters tall."),
        ("taller", "third - a", "It is {calc} meters taller than the first.")]),
    _t("comparison-08", "{name} has {a} dollars and {name2} has {b} dollars. How many dollars must {name} give "
       "{name2} so that they have the same?", {"b": (2, 50), "x": (2, 25), "a": "b + 2 * x"},
       [("gap", "a - b", "{name} has {calc} dollars more."),
        ("give", "gap / 2", "Giving half the gap, {name} gives {calc} dollars.")]),
    # combined
    _t("combined-01", "{name} buys {a} boxes of {b} {item}. {c} of them are broken, and {name} packs the rest into "
       "bags of {k}. How many bags does {name} fill?", {"k": (2, 6), "c": (2, 9), "a": (2, 6), "b": (4, 12)},
       [("total", "a * b", "There are {calc} {item}."),
        ("good", "total - c", "{calc} are not broken."),
        ("bags", "good / k", "They fill {calc} bags.")], item=BAKED),
    _t("combined-02", "A farmer has {a} rows of {b} trees, each tree gives {c} {item}, and the farmer sells them in "
       "crates of {k}. How many crates does the farmer fill?", {"k": (2, 10), "a": (2, 6), "b": (2, 8), "c": (2, 10)},
       [("trees", "a * b", "There are {calc} trees."),
        ("fruit", "trees * c", "They give {calc} {item}."),
        ("crates", "fruit / k", "That fills {calc} crates.")], item=FRUIT),
    _t("combined-03", "{name} has {m} dollars, buys {a} {item} at {p} dollars each and {b} {item2} at {q} dollars "
       "each. How many dollars are left?", {"a": (2, 6), "p": (2, 9), "b": (2, 6), "q": (2, 9), "m": (30, 150)},
       [("first", "a * p", "The {item} cost {calc} dollars."),
        ("second", "b * q", "The {item2} cost {calc} dollars."),
        ("spent", "first + second", "{name} spends {calc} dollars."),
        ("left", "m - spent", "{name} has {calc} dollars left.")], item=GOODS, item2=FRUIT),
    _t("combined-04", "A class has {n} students and {g} of them are girls. Each boy gets {p} pencils and each girl "
       "gets {q} pencils. How many pencils are given out?", {"g": (2, 15), "n": (10, 30), "p": (2, 5), "q": (2, 5)},
       [("boys", "n - g", "There are {calc} boys."),
        ("for_boys", "boys * p", "The boys get {calc} pencils."),
        ("for_girls", "g * q", "The girls get {calc} pencils."),
        ("total", "for_boys + for_girls", "In all {calc} pencils are given out.")]),
    _t("combined-05", "A bus starts with {s} passengers. At the first stop {a} get off and {b} get on. At the second "
       "stop {c} get off. How many passengers are on the bus now?", {"s": (10, 50), "a": (2, 15), "b": (2, 15), "c": (2, 15)},
       [("first", "s - a", "After {a} get off, {calc} are on the bus."),
        ("boarded", "first + b", "After {b} get on, {calc} are on the bus."),
        ("now", "boarded - c", "After the second stop, {calc} are on the bus.")]),
    _t("combined-06", "A bakery bakes {a} trays of {b} {item} in the morning and {c} more in the afternoon, and "
       "sells {d} of them. How many {item} are left?", {"a": (2, 6), "b": (6, 12), "c": (5, 40), "d": (10, 90)},
       [("morning", "a * b", "In the morning it bakes {calc} {item}."),
        ("baked", "morning + c", "In all it bakes {calc} {item}."),
        ("left", "baked - d", "{calc} {item} are left.")], item=BAKED),
    _t("combined-07", "{name} runs {a} laps of {b} meters on each of {d} days and {e} extra meters on the last day. "
       "How many meters does {name} run?", {"a": (2, 8), "b": (20, 60), "d": (2, 5), "e": (5, 60)},
       [("daily", "a * b", "Each day {name} runs {calc} meters."),
        ("days", "daily * d", "In {d} days that is {calc} meters."),
        ("total", "days + e", "With the extra, {name} runs {calc} meters.")]),
    _t("combined-08", "A garden has {a} beds of {b} plants. {name} gives each plant {c} liters of water from a can "
       "that holds {k} liters. How many times does {name} fill the can?",
       {"k": (2, 10), "a": (2, 6), "b": (2, 9), "c": (2, 5)},
       [("plants", "a * b", "There are {calc} plants."),
        ("liters", "plants * c", "They need {calc} liters."),
        ("fills", "liters / k", "{name} fills the can {calc} times.")]),
    _t("combined-09", "{name} collects {a} {item} a day for {d} days, gives {g} to {name2} and puts the rest equally "
       "into {k} jars. How many {item} go in each jar?", {"a": (2, 12), "d": (2, 9), "k": (2, 6), "g": (2, 20)},
       [("total", "a * d", "{name} collects {calc} {item}."),
        ("rest", "total - g", "After giving {g} away, {calc} are left."),
        ("each", "rest / k", "Each jar gets {calc} {item}.")], item=GOODS),
    _t("combined-10", "A school orders {a} boxes of {b} {item} and {c} boxes of {d} {item}, and shares them equally "
       "among {k} classes. How many {item} does each class get?",
       {"a": (2, 6), "b": (4, 12), "c": (2, 6), "d": (4, 12), "k": (2, 8)},
       [("first", "a * b", "The first boxes hold {calc} {item}."),
        ("second", "c * d", "The other boxes hold {calc} {item}."),
        ("total", "first + second", "That is {calc} {item}."),
        ("each", "total / k", "Each class gets {calc} {item}.")], item=GOODS),
)

HELDOUT_TEMPLATES = ("shopping-09", "sharing-08", "rates-08", "comparison-08", "combined-09")
"""One template per family that `make_splits` keeps out of training: unseen phrasings of known stories."""


def templates(names: Sequence[str] | None = None) -> tuple[Template, ...]:
    by_id = {t.id: t for t in TEMPLATES}
    if names is None:
        return TEMPLATES
    for name in names:
        if name not in by_id:
            raise KeyError(unknown_name("word-problem template", name, by_id))
    return tuple(by_id[n] for n in names)


def _stream(pool: Sequence[Template], rng: random.Random, prefix: str, seen: set[str], max_value: int = MAX_VALUE):
    """Problems cycling through `pool` in a shuffled order per round; a question already seen is skipped."""
    index = 0
    while True:
        order = list(pool)
        rng.shuffle(order)
        for template in order:
            problem = instantiate(template, rng, f"{prefix}-{index:05d}", max_value)
            if problem.question not in seen:
                seen.add(problem.question)
                index += 1
                yield problem


def _take(stream, n: int) -> list[WordProblem]:
    return [next(stream) for _ in range(n)]


def generate(
    n: int, seed: int, pool: Sequence[Template] = TEMPLATES, prefix: str = "wp", max_value: int = MAX_VALUE
) -> list[WordProblem]:
    """`n` distinct problems drawn evenly from `pool`, the same for the same seed."""
    return _take(_stream(pool, random.Random(seed), prefix, set(), max_value), n)


def make_splits(
    seed: int, train: int, test: int, unseen: int, holdout: Sequence[str] = HELDOUT_TEMPLATES,
    max_value: int = MAX_VALUE,
) -> dict[str, list[WordProblem]]:
    """`train` and `test` from the same templates (no question in both), `test_unseen` from the held-out
    templates only, every number in [2, `max_value`]. Deterministic in `seed`."""
    held = {t.id for t in templates(holdout)}
    seen_pool = [t for t in TEMPLATES if t.id not in held]
    rng, questions = random.Random(seed), set()
    train_items = _take(_stream(seen_pool, rng, "train", questions, max_value), train)
    test_items = _take(_stream(seen_pool, rng, "test", questions, max_value), test)
    unseen_items = _take(_stream(templates(holdout), rng, "unseen", questions, max_value), unseen)
    return {"train": train_items, "test": test_items, "test_unseen": unseen_items}


def write_splits(
    folder: str | Path, seed: int, train: int, test: int, unseen: int, max_value: int = MAX_VALUE
) -> dict[str, Path]:
    """`make_splits` written as train.jsonl, test.jsonl and test_unseen.jsonl in `folder` (the rationale
    JSONL format); returns the paths by split name."""
    return {
        name: write_jsonl(Path(folder) / f"{name}.jsonl", [p.record() for p in problems])
        for name, problems in make_splits(seed, train, test, unseen, max_value=max_value).items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m edgekd.data.wordproblems DIR [--seed N] [--train N] [--test N] [--unseen N] [--max-value N]`: write the
    splits (train.jsonl, test.jsonl, test_unseen.jsonl) in the rationale JSONL format, offline."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edgekd.data.wordproblems", description=main.__doc__)
    parser.add_argument("folder", nargs="?", default="runs/data/wordproblems", help="where to write the splits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2000, help="training problems (default 2000)")
    parser.add_argument("--test", type=int, default=300, help="test problems from the training templates (default 300)")
    parser.add_argument("--unseen", type=int, default=300, help="test problems from held-out templates (default 300)")
    parser.add_argument("--max-value", type=int, default=1000, help="largest number drawn or computed (20…1000, default 1000)")
    args = parser.parse_args(argv)
    written = write_splits(args.folder, args.seed, args.train, args.test, args.unseen, max_value=args.max_value)
    print("wrote " + ", ".join(str(path) for path in written.values()))


if __name__ == "__main__":
    main()
