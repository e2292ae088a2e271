"""The reversible swap of a weighted layer (Conv*, ConvTranspose*, Linear) for its
quantized wrapper, whose weight passes through a per-channel int8 FakeQuantize.

>>> conv = nn.Conv2d(3, 8, 3)
>>> wrapped = QuantLayer.from_float(conv)
>>> wrapped.weight_fq.scheme
QuantScheme(dtype='int8', axis=0)
>>> wrapped.to_float() is conv
True
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from edgekd.quant.fake_quant import FakeQuantize, QuantScheme

WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def weight_axis(layer: nn.Module) -> int:
    """The output-channel axis of a layer's weight: 1 for ConvTranspose (in, out/groups, …), else 0."""
    return 1 if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 0


class QuantLayer(nn.Module):
    """A weighted layer computing with its fake-quantized weight; the float weight keeps training."""

    def __init__(self, layer: nn.Module, weight_fq: FakeQuantize):
        super().__init__()
        self.layer = layer
        self.weight_fq = weight_fq

    @classmethod
    def from_float(cls, layer: nn.Module, *, learnable: bool = False) -> QuantLayer:
        if not isinstance(layer, WEIGHTED_LAYERS):
            raise TypeError(f"cannot quantize the weight of a {type(layer).__name__}")
        if isinstance(layer, nn.modules.conv._ConvTransposeNd) and layer.groups != 1:
            raise TypeError("a grouped ConvTranspose has no single per-channel weight axis")
        axis = weight_axis(layer)
        weight_fq = FakeQuantize(QuantScheme("int8", axis), layer.weight.shape[axis], learnable=learnable)
        with torch.no_grad():
            weight_fq.calibrating = True
            weight_fq(layer.weight)  # the weight's own range; it is known before any data flows
            weight_fq.calibrating = False
        return cls(layer, weight_fq.to(layer.weight.device))

    def to_float(self) -> nn.Module:
        """The plain layer with its float (not rounded) weight."""
        return self.layer

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_fq(self.layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer, weight = self.layer, self.quantized_weight()
        if isinstance(layer, nn.Linear):
            return F.linear(x, weight, layer.bias)
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            transposed = getattr(F, f"conv_transpose{len(layer.kernel_size)}d")
            return transposed(x, weight, layer.bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation)
        return layer._conv_forward(x, weight, layer.bias)
