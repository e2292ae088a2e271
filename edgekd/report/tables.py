"""What every rendering of a run shares: the gate table's rows, the verdict sentence, and
GitHub-flavoured Markdown tables (report.md, the GitHub step summary)."""

from __future__ import annotations

import html
import re
from typing import Any, Iterable

from edgekd.records import GateResult, format_value

GATE_HEADERS = ("gate", "measured", "threshold", "result", "reason")
GATE_ALIGN = "lrrll"


def gate_rows(results: list[GateResult]) -> list[tuple[str, str, str, str, str]]:
    """The table every output shows (terminal, JUnit-adjacent summaries, report.md/html)."""
    return [
        (
            r.name,
            format_value(r.measured, r.unit),
            f"{'≥' if r.is_lower_bound else '≤'} {format_value(r.threshold, r.unit)}",
            "pass" if r.passed else "FAIL",
            r.reason,
        )
        for r in results
    ]


def verdict_line(results: list[GateResult]) -> str:
    failed = [r.name for r in results if not r.passed]
    if failed:
        return f"{len(failed)} of {len(results)} gates failed: {', '.join(failed)}"
    return f"all {len(results)} gates passed"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*|])")


def markdown_text(value: Any) -> str:
    """A value as inline Markdown text, whatever it holds: control characters (a newline starts a
    heading or a block) become spaces, HTML is escaped, and table pipes, emphasis, code spans and
    links lose their meaning."""
    text = html.escape(_CONTROL.sub(" ", str(value)), quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("](", "]\\(")


def markdown_table(headers: Iterable[str], rows: Iterable[Iterable[Any]], align: str = "") -> str:
    """A GitHub-flavoured table; `align` holds one l/r per column (default: all left)."""

    def cells(values: Iterable[Any]) -> str:
        return "| " + " | ".join(markdown_text(v) for v in values) + " |"

    headers = list(headers)
    rules = ["---:" if a == "r" else "---" for a in align.ljust(len(headers), "l")]
    lines = [cells(headers), cells(rules), *(cells(row) for row in rows)]
    return "\n".join(lines) + "\n"
