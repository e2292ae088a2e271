"""The `export` stage: ONNX files of the teacher and the student, checked in ONNX Runtime.

    - export: {opset: 17, dynamic_batch: true}

writes into the workdir `teacher.onnx` and `student.onnx` (fp32; for a quantized student,
its float weights without fake quantization) and, when the student went through a qat
stage, `student.int8.onnx` with QuantizeLinear/DequantizeLinear nodes. Each student
file must reproduce PyTorch on validation batches (`parity_min_agreement`, top-1), and
every file's test accuracy is measured by running it in ONNX Runtime — the accuracy
the report shows for the exported model."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterator, Literal

import torch
from pydantic import Field
from torch import nn

from edgekd.export.onnx_export import export_onnx, write_metadata
from edgekd.export.runtime import onnx_accuracy, parity
from edgekd.quant.graph import quant_schedule, to_float
from edgekd.records import Artefacts, OnnxFile, Parity, StudentFiles, TeacherFiles
from edgekd.config import StrictModel
from edgekd.stage import Role, Stage, StageContext, StepResult, View, stages


class ParityThresholds(StrictModel):
    """Minimum top-1 agreement between PyTorch and ONNX Runtime, per precision."""

    fp32: float = Field(0.999, ge=0, le=1)
    int8: float = Field(0.99, ge=0, le=1)


class ExportConfig(StrictModel):
    """Settings of an `export:` block. `exporter` applies to the float files: auto uses the
    dynamo exporter at opset ≥ 18 (the first it writes) and TorchScript below; the int8
    file is always TorchScript, the proven path for fake quantization."""

    opset: int = Field(17, ge=13, le=21)
    dynamic_batch: bool = True
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto"
    parity_min_agreement: ParityThresholds = ParityThresholds()
    parity_batches: int = Field(4, ge=1)


@stages.register(name="export")
class ExportStage(Stage):
    Config = ExportConfig
    config: ExportConfig
    compresses = False
    provides = ("onnx",)

    def apply(self, ctx: StageContext, step: int) -> StepResult:
        student = ctx.student
        quantized = quant_schedule(student) is not None
        float_student = to_float(student) if quantized else student
        files = {"fp32": self._write(ctx, float_student, "student", "student.onnx", "fp32")}
        if quantized:
            files["int8"] = self._write(ctx, student, "student", "student.int8.onnx", "int8")
        teacher = self._write(ctx, ctx.teacher, "teacher", "teacher.onnx", "fp32", check_parity=False)
        return StepResult(artefacts=Artefacts(teacher=TeacherFiles(onnx=teacher), student=StudentFiles(onnx=files)))

    def _write(
        self, ctx: StageContext, model: nn.Module, role: Role, name: str, precision: str, check_parity: bool = True
    ) -> OnnxFile:
        """Export one file, check it against PyTorch, measure its test accuracy in ONNX Runtime."""
        config = self.config
        path = Path(ctx.workdir) / name
        view = ctx.view(role)
        exporter = export_onnx(
            model, path, ctx.example_input(role=role), opset=config.opset, dynamic_batch=config.dynamic_batch,
            exporter=config.exporter if precision == "fp32" else "torchscript",
            metadata={"precision": precision, "recipe_hash": ctx.recipe_hash, "recipe": ctx.name},
        )
        agreement = None
        if check_parity:
            threshold = getattr(config.parity_min_agreement, precision)
            images = (x for x, _ in islice(_batches(ctx, "val", view), config.parity_batches))
            agreement = Parity.model_validate(parity(model, path, images, min_agreement=threshold))
        accuracy = onnx_accuracy(path, _batches(ctx, "test", view))
        write_metadata(path, {"test_accuracy": f"{accuracy:.6f}"})
        # Paths relative to the workdir, so a report stays valid when the run folder moves (CI artefacts).
        return OnnxFile(path=name, exporter=exporter, parity=agreement, accuracy=accuracy, size_bytes=path.stat().st_size)


def _batches(ctx: StageContext, split: str, view: View) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A split's (images, labels) as the model reads them (its view of the data)."""
    return ((view(x.to(ctx.device)), y) for x, y in ctx.loader(split))
