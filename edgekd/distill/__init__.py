"""Distillation: losses, methods (kd, feature, hint, attention, dml, self, ta, multi-teacher,
cross-modal), the training loop, and the `distill` stage."""

from edgekd.distill import features, stage, stepbystep_method, strategies  # noqa: F401  (register methods and the stage)
from edgekd.distill.config import DistillConfig, OptimizerConfig, StudentConfig, TeacherConfig, TermConfig, TrainConfig
from edgekd.distill.losses import kd_loss
from edgekd.distill.methods import Batch, Objective, Phase, Term, methods
from edgekd.distill.train import TrainingDiverged, fit

__all__ = [
    "Batch", "DistillConfig", "Objective", "OptimizerConfig", "Phase", "StudentConfig", "TeacherConfig",
    "Term", "TermConfig", "TrainConfig", "TrainingDiverged", "fit", "kd_loss", "methods",
]
