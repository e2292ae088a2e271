"""The reversible swap of a weighted layer (Conv*, ConvTranspose*, Linear, Hugging Face's
Conv1D) for its quantized wrapper, whose weight passes through a per-channel FakeQuantize
(int8 by default; block-wise int4 for weight-only decoders) and, where the layer's input is
quantized by the wrapper itself (module swapping, `edgekd.quant.swap`), its input too.

>>> conv = nn.Conv2d(3, 8, 3)
>>> wrapped = QuantLayer.from_float(conv)
>>> wrapped.weight_fq.scheme
QuantScheme(dtype='int8', axis=0, block_size=None)
>>> wrapped.to_float() is conv
True
"""

from __future__ import annotations

import sys

import torch
from torch import nn
import torch.nn.functional as F

from edgekd.quant.fake_quant import FakeQuantize, QuantScheme

WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def hf_conv1d() -> type | None:
    """Hugging Face's Conv1D (GPT-2's linear layer: weight (in, out), y = x·W + b), when transformers is loaded.

    Looked up, never imported: a model holding one has imported transformers already."""
    return getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)


def linear_layer_types() -> tuple[type, ...]:
    """Layers that compute x·Wᵀ + b, whichever way round they store W."""
    conv1d = hf_conv1d()
    return (nn.Linear,) if conv1d is None else (nn.Linear, conv1d)


def weight_axis(layer: nn.Module) -> int:
    """The output-channel axis of a layer's weight: 1 for ConvTranspose (in, out/groups, …) and Conv1D (in, out), else 0."""
    conv1d = hf_conv1d()
    transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd) or (conv1d is not None and isinstance(layer, conv1d))
    return 1 if transposed else 0


class QuantLayer(nn.Module):
    """A weighted layer computing with its fake-quantized weight; the float weight keeps training.

    `input_fq`, when set, quantizes the layer's input (module swapping places input quantizers
    this way; the fx placement pass puts them in the graph instead)."""

    def __init__(self, layer: nn.Module, weight_fq: FakeQuantize, input_fq: FakeQuantize | None = None):
        super().__init__()
        self.layer = layer
        self.weight_fq = weight_fq
        self.input_fq = input_fq

    @classmethod
    def from_float(
        cls, layer: nn.Module, *, learnable: bool = False, weight_dtype: str = "int8", block_size: int | None = None,
        input_fq: FakeQuantize | None = None,
    ) -> QuantLayer:  # fmt: skip
        if not isinstance(layer, WEIGHTED_LAYERS + linear_layer_types()):
            raise TypeError(f"cannot quantize the weight of a {type(layer).__name__}")
        if isinstance(layer, nn.modules.conv._ConvTransposeNd) and layer.groups != 1:
            raise TypeError("a grouped ConvTranspose has no single per-channel weight axis")
        scheme = QuantScheme(weight_dtype, weight_axis(layer), block_size)  # type: ignore[arg-type]
        weight_fq = FakeQuantize(scheme, scheme.channels(layer.weight.shape), learnable=learnable)
        with torch.no_grad():
            weight_fq.calibrating = True
            weight_fq(layer.weight)  # the weight's own range; it is known before any data flows
            weight_fq.calibrating = False
        return cls(layer, weight_fq.to(layer.weight.device), input_fq)

    @property
    def weight(self) -> torch.Tensor:
        """The float weight, for parents that read its dtype or device (T5's feed-forward does).
        A parent that computes with it directly bypasses the quantization; such layers are not swapped."""
        return self.layer.weight

    def to_float(self) -> nn.Module:
        """The plain layer with its float (not rounded) weight."""
        return self.layer

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_fq(self.layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_fq is not None:
            x = self.input_fq(x)
        layer, weight = self.layer, self.quantized_weight()
        if isinstance(layer, nn.Linear):
            return F.linear(x, weight, layer.bias)
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            transposed = getattr(F, f"conv_transpose{len(layer.kernel_size)}d")
            return transposed(x, weight, layer.bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
        if isinstance(layer, nn.modules.conv._ConvNd):
            return layer._conv_forward(x, weight, layer.bias)
        return F.linear(x, weight.t(), layer.bias)  # Conv1D: weight stored (in, out)
