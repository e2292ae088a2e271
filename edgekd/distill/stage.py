"""The `distill` stage: no compression, only distillation from the teacher.

`- distill: {epochs: 10, temperature: 4}` trains the student against the teacher;
its body is a distillation block merged over the recipe's default `distill:`."""

from __future__ import annotations

from edgekd.config import StrictModel
from edgekd.stage import Stage, stages


class NoSettings(StrictModel):
    """The distill stage's own settings live in its body, read as the recovery block."""


@stages.register(name="distill")
class DistillStage(Stage):
    Config = NoSettings
    body_is_recovery = True
    example = {"epochs": 1}
