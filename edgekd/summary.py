"""The table `edgekd compress` prints at the end: every model the run produced, side by side.

Cells are `Text`, never markup: model specs, paths and the report's name are the user's strings."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _row(name: str, entry: dict[str, Any]) -> list[str]:
    before = entry.get("accuracy_before_recovery")
    accuracy = f"{entry['accuracy']:.2%}" + (f" (from {before:.2%})" if before is not None else "")
    return [name, accuracy, f"{entry['macs']:,}", f"{entry['params']:,}", f"{entry['size_bytes'] / 1024:,.1f} KiB"]


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=Text(f"edgekd · {report['name']}"), title_justify="left")
    for column in ("model", "accuracy", "MACs", "parameters", "size"):
        table.add_column(column, justify="left" if column == "model" else "right")
    table.add_row(*map(Text, _row(f"teacher {report['teacher']['model']}", report["teacher"])))
    for record in report["steps"]:
        step = f" {record['step']}/{record['steps']}" if record["steps"] > 1 else ""
        table.add_row(*map(Text, _row(f"  stages[{record['stage_index']}] {record['stage']}{step}", record)))
    student = report.get("student")
    if student:
        table.add_row(*map(Text, _row(f"student {student['model']}", student)), style="bold")
        for kind, onnx in sorted(student.get("onnx", {}).items()):
            size = f"{onnx['size_bytes'] / 1024:,.1f} KiB"
            accuracy = f"{onnx['accuracy']:.2%}" if onnx.get("accuracy") is not None else "–"
            table.add_row(*map(Text, (f"  ONNX {kind} ({onnx['path']})", accuracy, "", "", size)))
    return table


def print_summary(report: dict[str, Any], console: Console) -> None:
    console.print(summary_table(report))
    speedup = report.get("latency", {}).get("speedup", {})
    for batch, ratio in sorted(speedup.items(), key=lambda kv: int(kv[0])):
        console.print(Text(f"speedup vs teacher at batch {batch}: {ratio['ratio']:.2f}× (95% CI {ratio['ci'][0]:.2f}–{ratio['ci'][1]:.2f})"))
