"""The `qat` stage: quantization-aware distillation.

    - qat: {profile: ort-x86, calibration_batches: 32}
      recover: {epochs: 2, lr: 0.001}

inserts fake quantization where the profile's runtime quantizes, calibrates the
scales on `calibration_batches` training batches, and leaves recovery to the runner:
distillation from the full-precision teacher through the fake-quant student.

Post-training quantization is the same stage with `recover: {epochs: 0}`: it only calibrates.

Prune first, then quantize: a prune stage (or a second qat stage) after a qat stage
is an error, raised before this stage changes anything."""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from torch import fx

from edgekd.errors import InputError
from edgekd.quant.graph import calibrate, insert_fake_quant, int8_size_bytes, quant_schedule
from edgekd.quant.profiles import profiles
from edgekd.config import StrictModel
from edgekd.stage import Stage, StepResult, stages

if TYPE_CHECKING:
    from edgekd.run import Run

# Stage kinds that change the model's structure, which must happen on the float model.
STRUCTURAL_STAGES = ("prune", "qat")
ProfileName = profiles.name_type()


class QATConfig(StrictModel):
    """Settings of a `qat:` block.

    calibration: how activation ranges are chosen from the calibration batches —
      max (full observed range), percentile (clip at the `percentile`-th value),
      mse (the clipping that minimizes the quantization error). Weights always use their full range.
    learnable_scales: train the scales by gradient (LSQ) instead of following observed ranges.
    freeze_observers_epoch: after this many recovery epochs the scales stop following the
      data (default 1; 0 with learnable scales, which are never observed).
    freeze_bn_epoch: after this many recovery epochs BatchNorm statistics stop updating
      (profiles that keep BatchNorm, e.g. tensorrt; ort-x86 folds it before quantizing)."""

    profile: ProfileName = "ort-x86"
    calibration_batches: int = Field(32, ge=1)
    calibration: Literal["max", "percentile", "mse"] = "max"
    percentile: float = Field(99.99, gt=50, le=100)
    learnable_scales: bool = False
    freeze_observers_epoch: int | None = Field(None, ge=0)
    freeze_bn_epoch: int = Field(1, ge=0)

    @property
    def observers_frozen_from(self) -> int:
        if self.freeze_observers_epoch is not None:
            return self.freeze_observers_epoch
        return 0 if self.learnable_scales else 1


@stages.register(name="qat")
class QATStage(Stage):
    Config = QATConfig
    config: QATConfig

    def apply(self, run: Run, step: int) -> StepResult:
        self._check_order(run)
        # Quantization keeps the float model's MACs and parameters; counted before the swap,
        # since MAC counters do not see inside QuantLayer.
        counts = run.measure(run.student)
        batches_per_epoch = len(run.loader("train"))
        run.student = self._insert(run, batches_per_epoch)
        loader = run.loader("train", shuffle=True, seed=run.phase_seed(self.index, step))
        images = (run.student_view(x.to(run.device)) for x, _ in islice(loader, self.config.calibration_batches))
        calibrate(run.student, images)
        return StepResult(
            record={
                "int8": True,
                "quant_profile": self.config.profile,
                "macs": counts["macs"],
                "params": counts["params"],
                "size_bytes": int8_size_bytes(run.student),
            },
            state={"profile": self.config.profile, "batches_per_epoch": batches_per_epoch},
        )

    def restore(self, run: Run, state: dict[str, Any]) -> None:
        run.student = self._insert(run, int(state["batches_per_epoch"]))

    def _insert(self, run: Run, batches_per_epoch: int) -> fx.GraphModule:
        config = self.config
        return insert_fake_quant(
            run.student,
            profiles.get(config.profile),
            batches_per_epoch=batches_per_epoch,
            calibration=config.calibration,
            percentile=config.percentile,
            learnable_scales=config.learnable_scales,
            freeze_observers_epoch=config.observers_frozen_from,
            freeze_bn_epoch=config.freeze_bn_epoch,
        )

    def _check_order(self, run: Run) -> None:
        if quant_schedule(run.student) is not None:
            raise InputError(f"stages[{self.index}] qat: the student is already quantized; use a single qat stage")
        later = [p for p in run.recipe.plan if p.index > self.index and p.key in STRUCTURAL_STAGES]
        if later:
            raise InputError(
                f"{later[0].label} comes after stages[{self.index}] qat, but structural changes must happen on the "
                "float model: prune first, then quantize. Move the qat stage after the last prune stage."
            )
