"""Fake quantization by module swapping, for models torch.fx cannot trace — Hugging Face
transformers among them (transformers 5 dropped its fx tracer, and `torch.fx.symbolic_trace`
stops at their forward()).

Every Linear (and Hugging Face Conv1D) becomes a `QuantLayer` — the same wrapper and the
same FakeQuantize the fx path uses — carrying its own input quantizer:

* int8 (`insert_linear_fake_quant`, both profiles): per-channel int8 weights (on the output
  features: axis 1 of the (K, N) weight MatMul reads), and the input quantized per tensor in the
  profile's activation type (uint8 for ort-x86, symmetric int8 for tensorrt). For tensorrt,
  convolutions are swapped alike (a ViT's patch embedding, a ConvNeXt's stem, downsampling and
  depthwise convs); ONNX Runtime's integer conv (QLinearConv) also needs its output requantized,
  which this path does not do, so for ort-x86 they stay float. Exported, each layer reads
  DequantizeLinear on both inputs, which ONNX Runtime fuses into integer MatMul kernels
  (MatMulIntegerToFloat) and TensorRT runs in int8. Outputs are not requantized
  (`requantize_outputs` does not apply): a Linear's output feeds LayerNorm, GELU, Softmax or a
  residual Add, which neither runtime runs on integers in these graphs.
* int4 weight-only (`insert_int4_weights`): block-wise symmetric int4 weights (ONNX Runtime's
  MatMulNBits layout), float activations. In training each forward pass re-reads the blocks'
  ranges from the current weights, so recovery distillation repairs the rounding; evaluation and
  export use the scales of the last training pass. With no training it is post-training
  round-to-nearest quantization.

Attention's activation × activation matmuls (QKᵀ, PV) stay float.

>>> from edgekd.quant.profiles import profiles
>>> class MLP(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 4)
...     def forward(self, x):
...         return self.down(torch.relu(self.up(x)))
>>> qnet = insert_linear_fake_quant(MLP(), profiles.get("tensorrt"), batches_per_epoch=1)
>>> calibrate(qnet, [torch.randn(32, 8)])
>>> type(qnet.up).__name__, qnet.up.input_fq.scheme.dtype
('QuantLayer', 'int8')
>>> type(strip_fake_quant(qnet).up).__name__
'Linear'
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Sequence

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.quant.fake_quant import Calibration, FakeQuantize, QuantScheme
from edgekd.quant.graph import SCHEDULE_NAME, QuantSchedule, calibrate, quant_schedule
from edgekd.quant.modules import WEIGHTED_LAYERS, QuantLayer, linear_layer_types
from edgekd.quant.profiles import QuantProfile

__all__ = ["INT4_PROFILE", "calibrate", "insert_int4_weights", "insert_linear_fake_quant", "int4_settings", "strip_fake_quant"]

# The schedule's profile name for int4 weight-only models (not an int8 target profile).
INT4_PROFILE = "int4-weight-only"
CONVOLUTIONS = tuple(t for t in WEIGHTED_LAYERS if t is not nn.Linear)
# ONNX Runtime's MatMulNBits takes power-of-two blocks of at least 16 values.
MIN_BLOCK_SIZE = 16
# MatMulNBits' accuracy_level: the compute type of its activations — 0 unset (float), 1 fp32, 2 fp16, 3 bf16, 4 int8.
ACCURACY_LEVELS = (0, 1, 2, 3, 4)


class Int4Schedule(QuantSchedule):
    """The schedule of an int4 weight-only model, which also carries how it deploys: its block size and
    the compute type (`accuracy_level`) its exported MatMulNBits nodes ask ONNX Runtime for."""

    def __init__(self, block_size: int, accuracy_level: int):
        # Weight scales never freeze: each training step re-reads the weights' block ranges.
        super().__init__(INT4_PROFILE, batches_per_epoch=1, freeze_observers_epoch=2**62, freeze_bn_epoch=2**62)
        self.block_size = block_size
        self.accuracy_level = accuracy_level

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, accuracy_level={self.accuracy_level}"


def insert_linear_fake_quant(
    model: nn.Module,
    profile: QuantProfile,
    *,
    batches_per_epoch: int,
    calibration: Calibration = "max",
    percentile: float = 99.99,
    learnable_scales: bool = False,
    freeze_observers_epoch: int = 1,
    freeze_bn_epoch: int = 1,
    skip: Sequence[str] = (),
) -> nn.Module:
    """A copy of `model` whose Linear layers (and for tensorrt its convs: module docstring) compute in
    int8 as `profile`'s runtime will; layers whose qualified name matches a `skip` pattern stay float.
    Needs `calibrate` next.
    BatchNorm (a Hugging Face ResNet's; transformers have none) is not folded: its statistics
    freeze after `freeze_bn_epoch` epochs."""

    def swap(layer: nn.Module) -> QuantLayer:
        scheme = QuantScheme(profile.activation_dtype)
        input_fq = FakeQuantize(scheme, calibration=calibration, percentile=percentile, learnable=learnable_scales)
        return QuantLayer.from_float(layer, learnable=learnable_scales, input_fq=input_fq.to(layer.weight.device))

    schedule = QuantSchedule(profile.name, batches_per_epoch, freeze_observers_epoch, freeze_bn_epoch)
    return _swapped(model, swap, schedule, skip, convolutions=not profile.requantize_outputs)


def insert_int4_weights(model: nn.Module, *, block_size: int = 32, accuracy_level: int = 0, skip: Sequence[str] = ()) -> nn.Module:
    """A copy of `model` whose Linear weights are rounded to block-wise int4 (blocks of
    `block_size` input features per output channel); activations stay float. `accuracy_level`
    only travels to the export (`int4_settings`): training computes in float whatever it is."""
    if block_size < MIN_BLOCK_SIZE or block_size & (block_size - 1):
        raise InputError(f"int4 block_size must be a power of two ≥ {MIN_BLOCK_SIZE} (ONNX Runtime's MatMulNBits), got {block_size}")
    if accuracy_level not in ACCURACY_LEVELS:
        raise InputError(f"int4 accuracy_level must be one of {ACCURACY_LEVELS} (ONNX Runtime's MatMulNBits), got {accuracy_level}")

    def swap(layer: nn.Module) -> QuantLayer:
        return QuantLayer.from_float(layer, weight_dtype="int4", block_size=block_size)

    return _swapped(model, swap, Int4Schedule(block_size, accuracy_level), skip)


def int4_settings(model: nn.Module) -> dict[str, int]:
    """An int4 weight-only model's deployment settings ({} for any other model): `int4_block_size`
    and `int4_accuracy_level`, as the step record and the exported file's metadata hold them."""
    schedule = quant_schedule(model)
    if not isinstance(schedule, Int4Schedule):
        return {}
    return {"int4_block_size": schedule.block_size, "int4_accuracy_level": schedule.accuracy_level}


def _swapped(model: nn.Module, swap, schedule: QuantSchedule, skip: Sequence[str], convolutions: bool = False) -> nn.Module:  # type: ignore[no-untyped-def]
    if quant_schedule(model) is not None:
        raise InputError("the model is already quantized; quantize the float model once")
    quantized = copy.deepcopy(model)
    names = [name for name in swappable_layers(quantized, convolutions) if not any(fnmatch.fnmatchcase(name, p) for p in skip)]
    if not names:
        raise InputError(f"nothing to quantize in {type(model).__name__}: no Linear layers outside skip={list(skip)}")
    for name in names:
        quantized.set_submodule(name, swap(quantized.get_submodule(name)))
    device = next(model.parameters()).device
    quantized.add_module(SCHEDULE_NAME, schedule.to(device))
    quantized.register_forward_pre_hook(schedule.before_forward)
    return quantized


def swappable_layers(model: nn.Module, convolutions: bool = False) -> list[str]:
    """Qualified names of the Linear/Conv1D layers (and with `convolutions` the convs but grouped
    ConvTransposes, which have no single per-channel axis) that are called as modules. nn.MultiheadAttention
    computes with its out_proj's weight directly, so that one stays float (as on the fx path)."""
    layer_types = linear_layer_types() + (CONVOLUTIONS if convolutions else ())
    inside_attention = {
        f"{name}.{child}" if name else child
        for name, module in model.named_modules() if isinstance(module, nn.MultiheadAttention)
        for child, _ in module.named_children()
    }  # fmt: skip
    return [
        name for name, module in model.named_modules()
        if isinstance(module, layer_types) and name not in inside_attention
        and not (isinstance(module, nn.modules.conv._ConvTransposeNd) and module.groups != 1)
    ]  # fmt: skip


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """The float model back: plain layers with their trained float weights, no quantizers, no schedule."""
    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, QuantLayer):
            plain.set_submodule(name, module.to_float())
    if isinstance(getattr(plain, SCHEDULE_NAME, None), QuantSchedule):
        delattr(plain, SCHEDULE_NAME)
    for key, hook in list(plain._forward_pre_hooks.items()):
        if isinstance(getattr(hook, "__self__", None), QuantSchedule):
            del plain._forward_pre_hooks[key]
    return plain


def int4_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """The block-wise int4 layers of a model, by qualified name."""
    return {
        name: module for name, module in model.named_modules()
        if isinstance(module, QuantLayer) and module.weight_fq.scheme.dtype == "int4"
    }  # fmt: skip


@torch.no_grad()
def int4_codes(layer: QuantLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """The integers (-8…7) and scales the layer computes with, as (N, k_blocks, block_size) codes
    and (N, k_blocks) scales: blocks run along the input features of each output channel."""
    scheme = layer.weight_fq.scheme
    assert scheme.block_size is not None
    rounded = scheme.blocks(layer.quantized_weight())
    scale = layer.weight_fq.scale.detach()
    # The fake-quantized weight is q·scale exactly; dividing back recovers q (|q| ≤ 8, far from .5 errors).
    codes = torch.round(rounded / scale[:, None]).to(torch.int8)
    out_channels = layer.layer.weight.shape[scheme.axis]  # type: ignore[index]
    return codes.reshape(out_channels, -1, scheme.block_size), scale.reshape(out_channels, -1)
