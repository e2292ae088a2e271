"""Distillation: losses, methods (kd, …), the training loop, and the `distill` stage."""

from edgekd.distill import stage  # noqa: F401  (registers the distill stage)
from edgekd.distill.config import DistillConfig, OptimizerConfig, TrainConfig
from edgekd.distill.losses import kd_loss
from edgekd.distill.methods import Method, methods
from edgekd.distill.train import TrainingDiverged, fit

__all__ = ["DistillConfig", "Method", "OptimizerConfig", "TrainConfig", "TrainingDiverged", "fit", "kd_loss", "methods"]
