"""Distillation methods: how a batch turns into a loss for the student.

A method is built once per training phase from its config, the teacher and the
student, and called on each batch. Methods that attach hooks or own trainable
adapters expose them through `parameters()` and release them in `close()`, so
nothing training-only outlives the phase."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from edgekd.distill.config import DistillConfig
from edgekd.distill.losses import kd_loss
from edgekd.registry import Registry

methods: Registry = Registry("distillation method")


class Method:
    """Base: plain supervised cross-entropy; subclasses add what the teacher knows."""

    def __init__(self, config: DistillConfig, teacher: nn.Module | None, student: nn.Module):
        self.config = config
        self.teacher = teacher.eval() if teacher is not None else None
        self.student = student

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.student(x), y)

    def parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters the method adds (adapters, regressors); none by default."""
        return iter(())

    def close(self) -> None:
        """Release hooks and adapters at the end of the phase."""


@methods.register(name="kd")
class ResponseKD(Method):
    """Hinton soft targets; the teacher runs in eval mode under no_grad."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        student_logits = self.student(x)
        if self.teacher is None or self.config.alpha == 0:
            return kd_loss(student_logits, student_logits, y, self.config.temperature, 0.0)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return kd_loss(student_logits, teacher_logits, y, self.config.temperature, self.config.alpha)
