"""Exporting PyTorch models to checked ONNX files with a dynamic batch axis.

A fake-quant model (`edgekd.quant`) is exported with the TorchScript exporter, which
turns each FakeQuantize into QuantizeLinear → DequantizeLinear; the file is then
finished (`edgekd.export.qdq`) to hold int8 weights. Float models go through the
dynamo exporter where it produces the requested opset (it emits opset 18 and up),
otherwise through TorchScript. Which exporter wrote a file is in its metadata.

>>> import tempfile, pathlib
>>> from edgekd.models import build_model
>>> net = build_model("cnn(width=4)", in_channels=1, num_classes=10)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "cnn.onnx"
>>> export_onnx(net, path, torch.zeros(1, 1, 8, 8), metadata={"note": "demo"})
'torchscript'
>>> read_metadata(path)["note"]
'demo'
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Literal

import onnx
import torch
from torch import nn

from edgekd.version import __version__
from edgekd.errors import EdgekdError, InputError
from edgekd.files import write_atomic
from edgekd.export.qdq import finish_qdq
from edgekd.outputs import LogitsOnly
from edgekd.quant.graph import quant_schedule
from edgekd.quant.profiles import profiles

Exporter = Literal["auto", "dynamo", "torchscript"]
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DYNAMO_MIN_OPSET = 18


def choose_exporter(model: nn.Module, requested: Exporter, opset: int) -> Literal["dynamo", "torchscript"]:
    quantized = quant_schedule(model) is not None
    if requested == "dynamo" and quantized:
        raise InputError("exporter: dynamo cannot export fake quantization; a quantized student is exported with torchscript")
    if requested == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise InputError(f"exporter: dynamo writes opset {DYNAMO_MIN_OPSET} or later; set opset ≥ {DYNAMO_MIN_OPSET} or use torchscript")
    if requested == "auto":
        return "dynamo" if not quantized and opset >= DYNAMO_MIN_OPSET else "torchscript"
    return requested


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_input: torch.Tensor,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    exporter: Exporter = "auto",
    metadata: dict[str, str] | None = None,
) -> str:
    """Write `model` to `path` as a checked ONNX file (input "input", output "logits"); returns the exporter used.

    `metadata` lands in the file's metadata_props next to the edgekd version, the
    exporter, and for a quantized model its profile and how its weights were stored."""
    path = Path(path)
    chosen = choose_exporter(model, exporter, opset)
    was_training = model.training
    model.eval()
    try:
        proto = _export(_returning_logits(model, example_input), example_input, opset, dynamic_batch, chosen)
    finally:
        model.train(was_training)
    schedule = quant_schedule(model)
    extra: dict[str, str] = {}
    if schedule is not None:
        counts = finish_qdq(proto, int32_bias=profiles.get(schedule.profile).int32_bias)
        extra = {"quant_profile": schedule.profile, **{k: str(v) for k, v in counts.items()}}
    save_checked(proto, path, {"exporter": chosen, **extra, **(metadata or {})})
    return chosen


class _ImageLogits(LogitsOnly):
    """One positional input named as the graph's: the dynamo exporter matches dynamic axes by name."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 — the graph input's name
        return super().forward(input)


@torch.no_grad()
def _returning_logits(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The graph's one output is the logits: a model that returns a tensor is exported as it is (its
    node names unchanged), one that returns a tuple, dict or ModelOutput through a wrapper."""
    return model if isinstance(model(example), torch.Tensor) else _ImageLogits(model)


def save_checked(proto: onnx.ModelProto, path: Path, metadata: dict[str, str]) -> None:
    """Check the model with onnx.checker, stamp the edgekd version and `metadata`, and write it."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # checker errors are several classes
        raise EdgekdError(f"the exported ONNX model for {path.name} does not pass onnx.checker: {exc}") from None
    _set_metadata(proto, {"edgekd_version": __version__, **metadata})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, proto.SerializeToString())


def _export(model: nn.Module, example: torch.Tensor, opset: int, dynamic_batch: bool, exporter: str) -> onnx.ModelProto:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    # Both exporters are chatty (deprecation notes, progress lines); what matters is checked below.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes=axes, verbose=False,
            )
            assert program is not None
            return program.model_proto
        torch.onnx.export(
            model, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _set_metadata(proto: onnx.ModelProto, values: dict[str, str]) -> None:
    current = {p.key: p.value for p in proto.metadata_props}
    current.update({k: str(v) for k, v in values.items()})
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, current)


def write_metadata(path: str | Path, values: dict[str, str]) -> None:
    """Add or replace metadata_props entries of an ONNX file (e.g. its measured test accuracy)."""
    proto = onnx.load(path)
    _set_metadata(proto, values)
    write_atomic(path, proto.SerializeToString())


def read_metadata(path: str | Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
