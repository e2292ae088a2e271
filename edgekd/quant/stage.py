"""The `qat` stage: quantization-aware distillation.

    - qat: {profile: ort-x86, calibration_batches: 32}
      recover: {epochs: 2, lr: 0.001}

inserts fake quantization where the profile's runtime quantizes, calibrates the
scales on `calibration_batches` training batches, and leaves recovery to the runner:
distillation from the full-precision teacher through the fake-quant student.

Post-training quantization is the same stage with `recover: {epochs: 0}`: it only calibrates.

Prune first, then quantize: the stage provides `quantized`, which a prune stage refuses, and
belongs to the `quantization` group, of which a recipe holds one — both checked when the
recipe is validated, before anything trains."""

from __future__ import annotations

from itertools import islice
from typing import Annotated, Any, Iterable, Literal, Mapping

import torch
from pydantic import AfterValidator, Field, model_validator
from torch import fx, nn

from edgekd.config import StrictModel
from edgekd.quant.graph import calibrate, insert_fake_quant, int8_size_bytes, quant_schedule, to_float
from edgekd.quant.profiles import profiles
from edgekd.errors import InputError
from edgekd.quant.swap import INT4_PROFILE, insert_int4_weights, int4_settings, insert_linear_fake_quant, strip_fake_quant
from edgekd.stage import Stage, StageContext, StepResult, stages

# `int4`: weight-only block-wise int4 for transformers (ONNX Runtime's MatMulNBits), beside the int8 profiles.
INT4 = "int4"


def _profile_name(value: str) -> str:
    return value if value == INT4 else profiles.check(value)


ProfileName = Annotated[str, AfterValidator(_profile_name)]


class QATConfig(StrictModel):
    """Settings of a `qat:` block.

    calibration: how activation ranges are chosen from the calibration batches —
      max (full observed range), percentile (clip at the `percentile`-th value),
      mse (the clipping that minimizes the quantization error). Weights always use their full range.
    learnable_scales: train the scales by gradient (LSQ) instead of following observed ranges.
    freeze_observers_epoch: after this many recovery epochs the scales stop following the
      data (default 1; 0 with learnable scales, which are never observed).
    freeze_bn_epoch: after this many recovery epochs BatchNorm statistics stop updating
      (profiles that keep BatchNorm, e.g. tensorrt; ort-x86 folds it before quantizing).
    profile `int4`: weight-only quantization of every Linear layer of a transformer to block-wise
      symmetric int4 (blocks of `block_size` input features, a power of two ≥ 16; default 32),
      activations float, exported as ONNX Runtime's MatMulNBits (`student.int4.onnx`). Nothing
      calibrates: the weights' own block ranges are the scales, re-read in every training pass.
      `accuracy_level` (int4 only) is MatMulNBits' compute type for the activations, written into the
      exported nodes: 0 (default) unset, which ONNX Runtime runs in float as the model trained; 1 fp32,
      2 fp16, 3 bf16, 4 int8 — activations quantized to int8 inside the kernel per block, faster at
      batch 1 on CPUs with VNNI but never seen in training, so parity loosens (bench/RESULTS.md)."""

    profile: ProfileName = "ort-x86"
    calibration_batches: int = Field(32, ge=1)
    calibration: Literal["max", "percentile", "mse"] = "max"
    percentile: float = Field(99.99, gt=50, le=100)
    learnable_scales: bool = False
    freeze_observers_epoch: int | None = Field(None, ge=0)
    freeze_bn_epoch: int = Field(1, ge=0)
    block_size: int | None = Field(None, ge=16)
    accuracy_level: int | None = Field(None, ge=0, le=4)

    @model_validator(mode="after")
    def _block_size_for_int4(self) -> QATConfig:
        for field, sets in (("block_size", "int4 blocks"), ("accuracy_level", "the int4 kernel's compute type")):
            if getattr(self, field) is not None and self.profile != INT4:
                raise ValueError(f"{field} sets {sets}; profile {self.profile!r} quantizes to int8 (use profile: int4, or remove {field})")
        if self.block_size is not None and self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two ≥ 16 (ONNX Runtime's MatMulNBits), got {self.block_size}")
        return self

    @property
    def observers_frozen_from(self) -> int:
        if self.freeze_observers_epoch is not None:
            return self.freeze_observers_epoch
        return 0 if self.learnable_scales else 1


def needs_module_swap(model: nn.Module, example: Any) -> bool:
    """Whether `model` quantizes by module swap (`edgekd.quant.swap`: its Linear layers) rather than
    through a torch.fx graph: transformers — models that read token inputs (keyword arguments), and
    Hugging Face models, whose forward torch.fx cannot trace."""
    return isinstance(example, Mapping) or callable(getattr(model, "save_pretrained", None))


def float_model(model: nn.Module) -> nn.Module:
    """The float model of a quantized one (a torch.fx graph or a module-swapped transformer): its trained
    float weights without quantizers. A float model is returned as it is."""
    if quant_schedule(model) is None:
        return model
    return to_float(model) if isinstance(model, fx.GraphModule) else strip_fake_quant(model)


def fake_quantize(model: nn.Module, config: QATConfig, batches_per_epoch: int, *, module_swap: bool = False) -> nn.Module:
    """A copy of `model` with fake quantization where `config.profile`'s runtime quantizes (not calibrated):
    in a torch.fx graph, or with `module_swap` in every Linear layer (int4: module swap only)."""
    if config.profile == INT4:
        if not module_swap:
            raise InputError("qat.profile: int4 is weight-only quantization of transformers' Linear layers (text models); "
                             "this model quantizes through a torch.fx graph, which int4 does not: use ort-x86 or tensorrt")
        return insert_int4_weights(model, block_size=config.block_size or 32, accuracy_level=config.accuracy_level or 0)
    if module_swap:
        return insert_linear_fake_quant(
            model, profiles.get(config.profile), batches_per_epoch=batches_per_epoch, calibration=config.calibration,
            percentile=config.percentile, learnable_scales=config.learnable_scales,
            freeze_observers_epoch=config.observers_frozen_from, freeze_bn_epoch=config.freeze_bn_epoch,
        )  # fmt: skip
    return insert_fake_quant(
        model,
        profiles.get(config.profile),
        batches_per_epoch=batches_per_epoch,
        calibration=config.calibration,
        percentile=config.percentile,
        learnable_scales=config.learnable_scales,
        freeze_observers_epoch=config.observers_frozen_from,
        freeze_bn_epoch=config.freeze_bn_epoch,
    )


def quantize(
    model: nn.Module, calibration: Iterable[torch.Tensor | Mapping[str, torch.Tensor]], config: QATConfig | None = None, *,
    batches_per_epoch: int = 1, module_swap: bool = False, **settings: object,
) -> nn.Module:  # fmt: skip
    """Insert fake quantization for a profile and calibrate it on up to `calibration_batches` input
    batches: a model that exports to int8 ONNX as it is (post-training quantization) or trains on
    (QAT; then pass the loader's length as `batches_per_epoch`, which the freeze epochs count in).
    Takes a `QATConfig` or its fields as keywords (`profile="tensorrt"`); `model` is left as it was.

    >>> from edgekd.models import build_model
    >>> model = build_model("cnn(width=8)", in_channels=1, num_classes=10).eval()
    >>> int8 = quantize(model, [torch.randn(16, 1, 8, 8)], profile="ort-x86")
    >>> from edgekd.quant.graph import quant_schedule
    >>> quant_schedule(int8).profile
    'ort-x86'
    """
    config = config or QATConfig.model_validate(settings)
    quantized = fake_quantize(model, config, batches_per_epoch, module_swap=module_swap)
    if config.profile != INT4:  # int4 weights take their blocks' own ranges; there are no activation quantizers
        calibrate(quantized, islice(calibration, config.calibration_batches))
    return quantized


@stages.register(name="qat")
class QATStage(Stage):
    Config = QATConfig
    config: QATConfig
    provides = ("quantized",)
    exclusive = "quantization"
    example = {"calibration_batches": 2}

    def apply(self, ctx: StageContext, step: int) -> StepResult:
        # Quantization keeps the float model's MACs and parameters; counted before the swap,
        # since MAC counters do not see inside QuantLayer.
        counts = ctx.measure(ctx.student)
        batches_per_epoch = len(ctx.loader("train"))
        loader = ctx.loader("train", shuffle=True, seed=ctx.phase_seed(self.index, step))
        view = ctx.view("student")
        inputs = (view(x.to(ctx.device)) for x, _ in loader)
        module_swap = needs_module_swap(ctx.student, ctx.example_input())
        ctx.student = quantize(ctx.student, inputs, self.config, batches_per_epoch=batches_per_epoch, module_swap=module_swap)
        return StepResult(
            record={
                "int8": self.config.profile != INT4,
                "quant_profile": INT4_PROFILE if self.config.profile == INT4 else self.config.profile,
                **(int4_settings(ctx.student) if self.config.profile == INT4 else {}),
                "macs": counts["macs"],
                "params": counts["params"],
                "size_bytes": int8_size_bytes(ctx.student),
            },
            state={"profile": self.config.profile, "batches_per_epoch": batches_per_epoch, "module_swap": module_swap},
        )

    def restore(self, ctx: StageContext, state: dict[str, Any]) -> None:
        module_swap = bool(state.get("module_swap", False))  # checkpoints of earlier versions: the fx path
        ctx.student = fake_quantize(ctx.student, self.config, int(state["batches_per_epoch"]), module_swap=module_swap)
