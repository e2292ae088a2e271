"""Reading ONNX model files for the bench: existence checks, the graph without its weights'
external data, declared inputs. Errors are InputErrors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from google.protobuf.message import DecodeError

from edgekd.bench.inputs import InputSpec
from edgekd.errors import InputError

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def require_file(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise InputError(f"model {str(path)!r} is not a file")
    return path


def load_graph(path: Path) -> onnx.ModelProto:
    """The model's graph and tensor shapes; external weight data is not read."""
    require_file(path)
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{str(path)!r} is not an ONNX model, or the file is corrupt: {exc}") from None


def graph_input_specs(model: onnx.ModelProto) -> tuple[InputSpec, ...]:
    """Graph inputs that are not initializers, with dims as declared (dim_param/unknown → dynamic)."""
    weights = {init.name for init in model.graph.initializer}
    return tuple(
        InputSpec(value.name, _dims(value), np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)))
        for value in model.graph.input
        if value.name not in weights
    )


def has_qdq(model: onnx.ModelProto) -> bool:
    """True for explicitly quantized models (QuantizeLinear / DequantizeLinear nodes)."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim
    )
