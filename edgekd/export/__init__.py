"""ONNX export, ONNX Runtime parity and accuracy, the TensorRT readiness check, the `export` stage."""

from edgekd.export import stage  # noqa: F401  (registers the export stage)
from edgekd.export.onnx_export import export_onnx, read_metadata, write_metadata
from edgekd.export.runtime import onnx_accuracy, optimized_op_counts, parity
from edgekd.export.stage import ExportConfig, ExportStage
from edgekd.export.trt_lint import Finding, lint_tensorrt, targets

__all__ = [
    "ExportConfig", "ExportStage", "Finding", "export_onnx", "lint_tensorrt", "onnx_accuracy",
    "optimized_op_counts", "parity", "read_metadata", "targets", "write_metadata",
]
