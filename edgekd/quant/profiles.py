"""Target profiles: where a deployment runtime wants Q/DQ nodes and in which types.

A profile is data, not code: the one placement pass (`edgekd.quant.graph`) and the
one ONNX finishing pass (`edgekd.export.qdq`) read these fields.

>>> profiles.get("ort-x86").activation_dtype
'uint8'
>>> profiles.get("tensorrt").fold_batchnorm
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgekd.registry import Registry


@dataclass(frozen=True)
class QuantProfile:
    """How a target runs int8. Weights are always int8, symmetric, per output channel
    (axis 0; axis 1 for ConvTranspose, whose weight is laid out (in, out, …))."""

    name: str
    description: str
    # Activations: int8 is symmetric (zero point 0); uint8 is asymmetric.
    activation_dtype: Literal["int8", "uint8"]
    # Fold BatchNorm into the preceding conv before quantizing (the runtime would fold it anyway).
    fold_batchnorm: bool
    # True: every tensor is requantized — op outputs (after a fused ReLU), Add inputs and output,
    # pooling input and output — so the runtime can run whole chains in integers.
    # False: Q/DQ only on the inputs of Conv/Gemm/MatMul and on the residual input of Add.
    requantize_outputs: bool
    # Store biases as int32 with scale = input scale × weight scale (what integer kernels consume).
    int32_bias: bool
    # Regular convs reading at most this many channels are the image stem. QAT trains them in int8 like
    # every layer; the export may ship them float instead (its `stem` setting: int8, float, or auto =
    # whichever measures faster in deployment mode). 0: no stem choice, always int8.
    stem_channels: int = 0


profiles: Registry[QuantProfile] = Registry("quantization profile")

profiles.register(
    QuantProfile(
        name="tensorrt",
        description="TensorRT explicit quantization: symmetric int8 everywhere, BatchNorm left for TensorRT to fuse",
        activation_dtype="int8",
        fold_batchnorm=False,
        requantize_outputs=False,
        int32_bias=False,
    ),
    name="tensorrt",
)

profiles.register(
    QuantProfile(
        name="ort-x86",
        description=(
            "ONNX Runtime CPU (x86): BatchNorm folded, uint8 activations with int8 per-channel weights, "
            "every tensor requantized so Conv/Add/pool/Gemm fuse into QLinear* kernels"
        ),
        activation_dtype="uint8",
        fold_batchnorm=True,
        requantize_outputs=True,
        int32_bias=True,
        # A float stem conv beats ORT's int8 one on 1–3 input channels (dot products of length 9–27 suit
        # no int8 GEMM kernel), but it adds layout changes around it (NCHWc reorder, Transposes) that
        # quantize_static's all-int8 graph does not have; which wins depends on model and machine state
        # (bench/RESULTS.md, issue 13), so the export measures both.
        stem_channels=3,
    ),
    name="ort-x86",
)
