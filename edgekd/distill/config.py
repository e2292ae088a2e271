"""Training and distillation settings, as they appear in a recipe."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edgekd.stage import StrictModel


class OptimizerConfig(StrictModel):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)


class TrainConfig(StrictModel):
    """How a model is trained: epochs, optimizer, schedule. `lr: x` is shorthand for `optimizer: {lr: x}`."""

    epochs: int = Field(10, ge=0)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _lr_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lr" in data:
            data = dict(data)
            optimizer = dict(data.get("optimizer") or {})
            optimizer["lr"] = data.pop("lr")
            data["optimizer"] = optimizer
        return data


class DistillConfig(TrainConfig):
    """Recovery distillation from the teacher: L = (1-α)·CE + α·T²·KL(p_T ‖ p_S)."""

    method: str = "kd"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    epochs: int = Field(2, ge=0)
    optimizer: OptimizerConfig = OptimizerConfig(lr=0.01)
