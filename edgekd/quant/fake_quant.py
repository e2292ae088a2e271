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
from typing import Iterable, Iterator, Literal

import torch
from torch import nn

Calibration = Literal["max", "percentile", "mse"]

# At most this many values of each batch are kept for `percentile` and `mse` (a strided, deterministic subsample).
SAMPLE_PER_BATCH = 4096
# Clipping fractions of the observed range tried by `mse` calibration.
MSE_CANDIDATES = torch.linspace(0.3, 1.0, 36)


@dataclass(frozen=True)
class QuantScheme:
    """How one tensor is quantized: int8 is symmetric (zero point 0), uint8 asymmetric.

    `axis` is the per-channel axis (weights), None for one scale per tensor (activations)."""

    dtype: Literal["int8", "uint8"]
    axis: int | None = None

    @property
    def qmin(self) -> int:
        return -128 if self.dtype == "int8" else 0

    @property
    def qmax(self) -> int:
        return 127 if self.dtype == "int8" else 255

    def qparams(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point covering [low, high] (extended to hold 0), as ONNX Runtime's quantizer computes them."""
        # In float64 like ONNX Runtime, so that a zero point at .5 rounds the same way.
        low, high = low.double().clamp(max=0.0), high.double().clamp(min=0.0)
        if self.dtype == "int8":
            # Symmetric over ±127 (not -128), so that -x and x round to opposite integers.
            scale = torch.maximum(-low, high) / 127.0
            zero_point = torch.zeros_like(scale, dtype=torch.int32)
        else:
            scale = (high - low) / 255.0
            zero_point = torch.round(-low / scale.clamp(min=1e-12)).clamp(0, 255).to(torch.int32)
        return scale.clamp(min=1e-8).float(), zero_point


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
        return f"{self.scheme.dtype}, {where}, calibration={self.calibration}, learnable={self.learnable}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self._record(x)
            return x
        if self.training and self.observing and not self.learnable:
            self._observe(x)
        return self.quantize(x)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        scheme, scale = self.scheme, self.scale.detach()
        if self.learnable:
            scale = scale.clamp(min=1e-8)  # a gradient step may push a trained scale through zero
        if scheme.axis is None:
            rounded = torch.fake_quantize_per_tensor_affine(x, scale, self.zero_point, scheme.qmin, scheme.qmax)
        else:
            rounded = torch.fake_quantize_per_channel_affine(
                x, scale, self.zero_point, scheme.axis, scheme.qmin, scheme.qmax
            )
        if self.training and self.learnable:
            rounded = rounded + self._scale_gradient(x, rounded)
        return rounded

    def _scale_gradient(self, x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
        """A zero-valued term whose gradient w.r.t. the scale is LSQ's (Esser et al., 2020)."""
        shape = [1] * x.dim()
        if self.scheme.axis is not None:
            shape[self.scheme.axis] = -1
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
