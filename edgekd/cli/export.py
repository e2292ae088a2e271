"""The `edgekd check` and `edgekd export` commands (plain functions; the CLI registers them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from edgekd import api, terminal
from edgekd.errors import EdgekdError, InputError
from edgekd.files import output_file


def check_command(
    model: Annotated[Path, typer.Argument(help="ONNX file with QuantizeLinear/DequantizeLinear nodes.")],
    target: Annotated[str, typer.Option(help="Deployment target whose rules to apply.")] = "tensorrt",
) -> None:
    """Check an int8 ONNX file against what a deployment target accepts; runs without the target.

    The file must first pass onnx.checker (an empty, unparsable or invalid file, or an unknown
    operator, is exit 2). Exit code 1 when the target's rules find errors, 0 when there are none
    (warnings only report).

    Example:  edgekd check runs/demo/student.int8.onnx --target tensorrt
    """
    findings = api.check(model, target)
    console = terminal.console()
    if not findings:
        console.print(f"{model}: ready for {target} (no findings)", soft_wrap=True)
        return
    table = Table(title=f"{model} — {target}")
    for column in ("severity", "rule", "node", "message"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        style = "red" if finding.severity == "error" else "yellow"
        table.add_row(Text(finding.severity, style=style), finding.rule, finding.node, finding.message)
    console.print(table)
    errors = sum(f.severity == "error" for f in findings)
    if errors:
        raise EdgekdError(f"{model}: {errors} error(s) that {target} rejects (and {len(findings) - errors} warning(s)); see the table above")


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x1x28x28' → (1, 1, 28, 28)."""
    if not re.fullmatch(r"\d+(x\d+)+", text):
        raise InputError(f"--input-shape {text!r}: expected sizes joined by x, e.g. 1x1x28x28 (batch x channels x height x width)")
    return tuple(int(size) for size in text.split("x"))


def export_command(
    run: Annotated[Optional[Path], typer.Argument(help="A run folder (edgekd compress's workdir): export its latest student.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model spec, e.g. 'resnet_s(width=16)' (without a run folder).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="state_dict file (torch.save(model.state_dict(), path)).")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="Example input shape, e.g. 1x1x28x28.")] = None,
    output: Annotated[Path, typer.Option(help="ONNX file to write (without a run folder).")] = Path("model.onnx"),
    num_classes: Annotated[int, typer.Option(help="Classes the model predicts.")] = 10,
    opset: Annotated[int, typer.Option(min=13, max=21, help="ONNX opset.")] = 17,
    dynamic_batch: Annotated[bool, typer.Option(help="Leave the batch axis dynamic.")] = True,
    force_unlock: Annotated[
        bool, typer.Option("--force-unlock", help="Take over the run folder's lock held from another host (only if no run is active there).")
    ] = False,
) -> None:
    """Export a student to checked ONNX files: the latest checkpoint of a run (pruned and
    quantized students included: teacher.onnx, student.onnx, student.int8.onnx in the run
    folder, each checked against PyTorch and evaluated in ONNX Runtime), or a float model
    from a spec and a state_dict.

    Example:  edgekd export runs/quickstart --opset 17
    Example:  edgekd export --model 'resnet_s(width=16)' --weights student.pt --input-shape 1x1x28x28 --output student.onnx
    """
    if run is not None:
        files = api.export_run(run, opset=opset, dynamic_batch=dynamic_batch, force_unlock=force_unlock)
        for kind, entry in (files.student.onnx if files.student else {}).items():
            terminal.console().print(f"{kind}: {run / entry.path} — ONNX Runtime test accuracy {entry.accuracy:.2%}, {entry.size_bytes:,} bytes")
        return
    if model is None or weights is None or input_shape is None:
        raise InputError("give a run folder (edgekd export runs/x), or --model, --weights and --input-shape together")
    output_file(output, "--output")
    exporter = api.export_model(model, weights, parse_shape(input_shape), output, num_classes=num_classes, opset=opset, dynamic_batch=dynamic_batch)
    terminal.console().print(f"wrote {output} ({output.stat().st_size:,} bytes, {exporter} exporter, opset {opset})")
