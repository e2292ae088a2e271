"""What every rendering of a run shares: the gate table's rows, the verdict sentence, and
GitHub-flavoured Markdown tables (report.md, the GitHub step summary)."""

from __future__ import annotations

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


def markdown_table(headers: Iterable[str], rows: Iterable[Iterable[Any]], align: str = "") -> str:
    """A GitHub-flavoured table; `align` holds one l/r per column (default: all left)."""

    def cells(values: Iterable[Any]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    headers = list(headers)
    rules = ["---:" if a == "r" else "---" for a in align.ljust(len(headers), "l")]
    lines = [cells(headers), cells(rules), *(cells(row) for row in rows)]
    return "\n".join(lines) + "\n"
