"""Quantization-aware training: fake-quant modules, target profiles, the `qat` stage."""

from edgekd.quant import stage  # noqa: F401  (registers the qat stage)
from edgekd.quant.fake_quant import FakeQuantize, QuantScheme, calibrating
from edgekd.quant.graph import QuantSchedule, calibrate, insert_fake_quant, int8_size_bytes, quant_schedule, to_float
from edgekd.quant.modules import QuantLayer
from edgekd.quant.profiles import QuantProfile, profiles
from edgekd.quant.stage import QATConfig, QATStage, fake_quantize, float_model, quantize

__all__ = [
    "FakeQuantize", "QATConfig", "QATStage", "QuantLayer", "QuantProfile", "QuantSchedule", "QuantScheme",
    "calibrate", "calibrating", "fake_quantize", "float_model", "insert_fake_quant", "int8_size_bytes", "profiles", "quant_schedule",
    "quantize", "to_float",
]
