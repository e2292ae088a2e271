"""What the terminal shows: the table `edgekd compress` prints at the end (every model the run
produced, side by side) and the gate verdicts.

Cells are `Text`, never markup: model specs, paths and the report's name are the user's strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgekd.records import GateResult, ModelMetrics, Report, as_report
from edgekd.report.tables import GATE_ALIGN, GATE_HEADERS, gate_rows, verdict_line


def _row(name: str, entry: ModelMetrics, before: float | None = None) -> list[str]:
    accuracy = f"{entry.accuracy:.2%}" + (f" (from {before:.2%})" if before is not None else "")
    return [name, accuracy, f"{entry.macs:,}", f"{entry.params:,}", f"{entry.size_bytes / 1024:,.1f} KiB"]


def summary_table(report: Report | Mapping[str, Any]) -> Table:
    report = as_report(report)
    table = Table(title=Text(f"edgekd · {report.name}"), title_justify="left")
    for column in ("model", "accuracy", "MACs", "parameters", "size"):
        table.add_column(column, justify="left" if column == "model" else "right")
    table.add_row(*map(Text, _row(f"teacher {report.teacher.model}", report.teacher)))
    for record in report.steps:
        step = f" {record.step}/{record.steps}" if record.steps > 1 else ""
        table.add_row(*map(Text, _row(f"  stages[{record.stage_index}] {record.stage}{step}", record, record.accuracy_before_recovery)))
    student = report.student
    if student:
        table.add_row(*map(Text, _row(f"student {student.model}", student)), style="bold")
        for kind, onnx in sorted(student.onnx.items()):
            accuracy = f"{onnx.accuracy:.2%}" if onnx.accuracy is not None else "–"
            table.add_row(*map(Text, (f"  ONNX {kind} ({onnx.path})", accuracy, "", "", f"{onnx.size_bytes / 1024:,.1f} KiB")))
    return table


def print_summary(report: Report | Mapping[str, Any], console: Console) -> None:
    report = as_report(report)
    console.print(summary_table(report))
    for batch, speedup in report.speedups():
        console.print(Text(f"speedup vs teacher at batch {batch}: {speedup.ratio:.2f}× (95% CI {speedup.ci[0]:.2f}–{speedup.ci[1]:.2f})"))


def render_gates(results: list[GateResult], console: Console, title: str = "edgekd gates") -> None:
    """The verdict table, then each gate's reason on its own line (terminals in CI are often 80 columns)."""
    table = Table(title=Text(title), title_justify="left")
    for header, align in zip(GATE_HEADERS[:4], GATE_ALIGN):
        table.add_column(header, justify="right" if align == "r" else "left", no_wrap=True)
    for row, result in zip(gate_rows(results), results):
        verdict = Text("pass", style="green") if result.passed else Text("FAIL", style="bold red")
        table.add_row(*map(Text, row[:3]), verdict)
    console.print(table)
    for result in results:
        mark = Text("✓", style="green") if result.passed else Text("✗", style="bold red")
        console.print(Text.assemble(mark, f" {result.name}: {result.reason}"), highlight=False)
    console.print(Text(verdict_line(results)), style="green" if all(r.passed for r in results) else "bold red")
