"""Fake quantization: int8/uint8 rounding simulated in float, on PyTorch's
`torch.fake_quantize_per_tensor_affine` / `torch.fake_quantize_per_channel_affine`
(which the TorchScript ONNX exporter turns into QuantizeLinear → DequantizeLinear).

A `FakeQuantize` module observes the tensors that pass through it to choose a
scale and zero point, then rounds them exactly as the exported Q/DQ pair will:

>>> fq = FakeQuantize(QuantScheme("uint8"))
>>> with calibrating([fq]):
...     _ = fq(torch.tensor([0.0, 1.0, 2.55]))
>>> round(fq.scale.item(), 4), int(fq.zero_point)
(0.01, 0)
>>> [round(v, 4) for v in fq(torch.tensor([0.123, 9.0])).tolist()]  # onto the grid, clipped to the range
[0.12, 2.55]
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
import math
from typing import Iterable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

Calibration = Literal["max", "percentile", "mse"]

# At most this many values of each batch are kept for `percentile` and `mse` (a strided, deterministic subsample).
SAMPLE_PER_BATCH = 4096
# Clipping fractions of the observed range tried by `mse` calibration.
MSE_CANDIDATES = torch.linspace(0.3, 1.0, 36)


@dataclass(frozen=True)
class QuantScheme:
    """How one tensor is quantized: int8 and int4 are symmetric (zero point 0), uint8 asymmetric.

    `axis` is the per-channel axis (weights), None for one scale per tensor (activations).
    With `block_size`, each channel is cut into blocks of that many values along the other
    axes (zero-padded at the end), each with its own scale — block-wise int4 weights, as
    ONNX Runtime's MatMulNBits stores them:

    >>> scheme = QuantScheme("int4", axis=0, block_size=4)
    >>> scheme.blocks(torch.arange(10.0).reshape(2, 5)).tolist()
    [[0.0, 1.0, 2.0, 3.0], [4.0, 0.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0], [9.0, 0.0, 0.0, 0.0]]
    """

    dtype: Literal["int8", "uint8", "int4"]
    axis: int | None = None
    block_size: int | None = None

    def __post_init__(self) -> None:
        if self.block_size is not None and (self.axis is None or self.block_size < 1):
            raise ValueError("block-wise quantization needs a channel axis and a block size ≥ 1")

    @property
    def qmin(self) -> int:
        return {"int8": -128, "uint8": 0, "int4": -8}[self.dtype]

    @property
    def qmax(self) -> int:
        return {"int8": 127, "uint8": 255, "int4": 7}[self.dtype]

    @property
    def symmetric(self) -> bool:
        return self.dtype != "uint8"

    def qparams(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point covering [low, high] (extended to hold 0), as ONNX Runtime's quantizer computes them."""
        # In float64 like ONNX Runtime, so that a zero point at .5 rounds the same way.
        low, high = low.double().clamp(max=0.0), high.double().clamp(min=0.0)
        if self.symmetric:
            # Over ±qmax (not down to qmin), so that -x and x round to opposite integers.
            scale = torch.maximum(-low, high) / self.qmax
            zero_point = torch.zeros_like(scale, dtype=torch.int32)
        else:
            scale = (high - low) / 255.0
            zero_point = torch.round(-low / scale.clamp(min=1e-12)).clamp(0, 255).to(torch.int32)
        return scale.clamp(min=1e-8).float(), zero_point

    def channels(self, shape: torch.Size | tuple[int, ...]) -> int:
        """How many scales a tensor of this shape gets along `axis` (channels × blocks per channel)."""
        assert self.axis is not None
        count = shape[self.axis]
        if self.block_size is not None:
            per_channel = math.prod(shape) // max(count, 1)
            count *= -(-per_channel // self.block_size)
        return count

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(channels × blocks, block_size): each channel's values cut into zero-padded blocks."""
        assert self.axis is not None and self.block_size is not None
        rows = x.movedim(self.axis, 0).flatten(1)
        rows = F.pad(rows, (0, -rows.shape[1] % self.block_size))
        return rows.reshape(-1, self.block_size)

    def unblocks(self, blocks: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The inverse of `blocks`, back to the layout of `like`."""
        moved = like.movedim(self.axis, 0).shape  # type: ignore[arg-type]
        rows = blocks.reshape(moved[0], -1)[:, : math.prod(moved[1:])]
        return rows.reshape(moved).movedim(0, self.axis)  # type: ignore[arg-type]


def strided_sample(x: torch.Tensor, size: int = SAMPLE_PER_BATCH) -> torch.Tensor:
    flat = x.detach().flatten().float()
    return flat[:: max(1, flat.numel() // size)]


def estimate_range(
    scheme: QuantScheme, method: Calibration, sample: torch.Tensor, low: torch.Tensor, high: torch.Tensor, percentile: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The range one per-tensor quantizer should cover, from the exact extremes [low, high] of its
    values (all `max` uses) and a sample of them (for `percentile` and `mse`)."""
    if method == "percentile":
        fraction = torch.tensor([1 - percentile / 100, percentile / 100], dtype=sample.dtype, device=sample.device)
        low, high = torch.quantile(sample, fraction)
    elif method == "mse":
        low, high = _mse_range(scheme, sample, low, high)
    return low, high


def _mse_range(scheme: QuantScheme, sample: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped range whose quantization error (mean squared) on the sample is smallest."""
    best, best_error = (low, high), float("inf")
    for fraction in MSE_CANDIDATES:
        scale, zero_point = scheme.qparams(low * fraction, high * fraction)
        rounded = torch.fake_quantize_per_tensor_affine(sample, scale, zero_point, scheme.qmin, scheme.qmax)
        error = float(torch.mean((rounded - sample) ** 2))
        if error < best_error:
            best, best_error = (low * fraction, high * fraction), error
    return best


class FakeQuantize(nn.Module):
    """Simulated quantization of one tensor (per tensor) or one weight (per channel).

    Modes: inside `calibrating(...)` it only records values; in training with
    `observing` set it follows the batches' range (exponential moving average,
    `momentum`) and quantizes; otherwise it quantizes with its stored scale.
    Gradients pass straight through the rounding (STE). With `learnable`, the
    scale is a parameter trained by gradient (the LSQ estimator) instead of observed.
    Weights (per channel) take their range from the current weight values, not an average."""

    def __init__(
        self,
        scheme: QuantScheme,
        channels: int = 1,
        *,
        calibration: Calibration = "max",
        percentile: float = 99.99,
        learnable: bool = False,
        momentum: float = 0.01,
    ):
        super().__init__()
        self.scheme = scheme
        self.calibration: Calibration = calibration
        self.percentile = percentile
        self.momentum = momentum
        shape = () if scheme.axis is None else (channels,)
        scale = torch.ones(shape)
        if learnable:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))
        self.register_buffer("range_low", torch.zeros(shape))
        self.register_buffer("range_high", torch.zeros(shape))
        self.observing = False
        self.calibrating = False
        self._samples: list[torch.Tensor] = []  # what calibration saw: a sample of values, and each batch's extremes
        self._extremes: list[torch.Tensor] = []

    @property
    def learnable(self) -> bool:
        return isinstance(self.scale, nn.Parameter)

    def extra_repr(self) -> str:
        where = "per-tensor" if self.scheme.axis is None else f"per-channel axis {self.scheme.axis}"
        if self.scheme.block_size is not None:
            where += f", blocks of {self.scheme.block_size}"
        return f"{self.scheme.dtype}, {where}, calibration={self.calibration}, learnable={self.learnable}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self._record(x)
            return x
        if self.training and self.observing and not self.learnable:
            self._observe(x)
        return self.quantize(x)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.scheme.block_size is not None:
            return self.scheme.unblocks(self._quantize(self.scheme.blocks(x), axis=0), x)
        return self._quantize(x, self.scheme.axis)

    def _quantize(self, x: torch.Tensor, axis: int | None) -> torch.Tensor:
        scheme, scale = self.scheme, self.scale.detach()
        if self.learnable:
            scale = scale.clamp(min=1e-8)  # a gradient step may push a trained scale through zero
        if axis is None:
            rounded = torch.fake_quantize_per_tensor_affine(x, scale, self.zero_point, scheme.qmin, scheme.qmax)
        else:
            rounded = torch.fake_quantize_per_channel_affine(x, scale, self.zero_point, axis, scheme.qmin, scheme.qmax)
        if self.training and self.learnable:
            rounded = rounded + self._scale_gradient(x, rounded, axis)
        return rounded

    def _scale_gradient(self, x: torch.Tensor, rounded: torch.Tensor, axis: int | None) -> torch.Tensor:
        """A zero-valued term whose gradient w.r.t. the scale is LSQ's (Esser et al., 2020)."""
        shape = [1] * x.dim()
        if axis is not None:
            shape[axis] = -1
        values_per_scale = x.numel() / self.scale.numel()
        gradient_factor = (values_per_scale * self.scheme.qmax) ** -0.5
        scale = (self.scale * gradient_factor + (self.scale * (1 - gradient_factor)).detach()).reshape(shape)
        plain = scale.detach().clamp(min=1e-8)
        step = torch.round(x.detach() / plain) + self.zero_point.reshape(shape)
        inside = (step >= self.scheme.qmin) & (step <= self.scheme.qmax)
        # d rounded / d scale: (round(x/s) - x/s) inside the range, the clipped level outside.
        slope = rounded.detach() / plain - torch.where(inside, x.detach() / plain, torch.zeros_like(x))
        return (scale - plain) * slope

    # ---- ranges -----------------------------------------------------------------
    def _record(self, x: torch.Tensor) -> None:
        if self.scheme.axis is None:
            self._samples.append(strided_sample(x).cpu())
            self._extremes.append(torch.stack([x.detach().min(), x.detach().max()]).float().cpu())
        else:
            self._set_range(*self._channel_range(x))

    def _channel_range(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scheme.block_size is not None:
            per_channel = self.scheme.blocks(weight.detach())
        else:
            per_channel = weight.detach().transpose(0, self.scheme.axis).flatten(1)
        return per_channel.min(1).values, per_channel.max(1).values

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        if self.scheme.axis is not None:
            self._set_range(*self._channel_range(x))
            return
        x = x.detach()
        low, high = estimate_range(self.scheme, self.calibration, strided_sample(x), x.min(), x.max(), self.percentile)
        m = self.momentum
        self._set_range(self.range_low * (1 - m) + low * m, self.range_high * (1 - m) + high * m)

    @torch.no_grad()
    def finish_calibration(self) -> None:
        """Set the scale from what was recorded; a quantizer that saw nothing keeps its scale."""
        if self._samples:
            extremes = torch.stack(self._extremes)
            low, high = extremes[:, 0].min(), extremes[:, 1].max()
            self._set_range(*estimate_range(self.scheme, self.calibration, torch.cat(self._samples), low, high, self.percentile))
        self._samples, self._extremes = [], []

    @torch.no_grad()
    def _set_range(self, low: torch.Tensor, high: torch.Tensor) -> None:
        device = self.range_low.device
        self.range_low.copy_(low.to(device))
        self.range_high.copy_(high.to(device))
        scale, zero_point = self.scheme.qparams(self.range_low, self.range_high)
        self.scale.data.copy_(scale)
        self.zero_point.copy_(zero_point)


@contextmanager
def calibrating(quantizers: Iterable[FakeQuantize]) -> Iterator[None]:
    """Within the block the quantizers record values and pass them through; on exit they set their scales."""
    quantizers = list(quantizers)
    for fq in quantizers:
        fq.calibrating = True
    try:
        yield
    finally:
        for fq in quantizers:
            fq.calibrating = False
    for fq in quantizers:
        fq.finish_calibration()
