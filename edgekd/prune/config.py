"""The `prune:` block of a recipe.

>>> config = PruneConfig(target_macs=0.33, steps=4, importance="group_l2", round_to=8)
>>> config.metric, config.keep
('macs', 0.33)
>>> PruneConfig(ratio=0.25).metric, PruneConfig(ratio=0.25).keep
('channels', 0.75)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgekd.prune.importances import importances
from edgekd.config import StrictModel

Metric = Literal["channels", "macs", "params"]
ImportanceName = importances.name_type()
TARGET_FIELDS = ("ratio", "target_macs", "target_params")


class SparsityConfig(StrictModel):
    """Group-norm sparse training before the first pruning step: pushes whole channel groups towards zero."""

    reg: float = Field(5e-4, gt=0)
    epochs: int = Field(ge=1)


class PruneConfig(StrictModel):
    """Structured pruning towards exactly one target, in `steps` increments.

    `ratio`: fraction of the prunable channels to remove. `target_macs` / `target_params`:
    the fraction of the teacher's MACs / parameters to end at. `max_layer_ratio` is
    torch-pruning's max_pruning_ratio, counted from each layer's width when the stage
    began: a layer below that share is pruned no further (its last increment may take 5% more).

    Transformers (models with attention modules) lose whole heads (`heads`), MLP widths and,
    with `hidden`, their hidden size (edgekd.prune.transformer). `attention_heads` declares
    attention modules whose head count is in an attribute edgekd does not know:
    `{"blocks.*.attn": "heads"}` (module path glob → int attribute, updated after pruning); the
    runner checks it on the student's architecture when that is built, before it trains."""

    ratio: float | None = Field(None, gt=0, lt=1)
    target_macs: float | None = Field(None, gt=0, lt=1)
    target_params: float | None = Field(None, gt=0, lt=1)
    steps: int = Field(1, ge=1)
    importance: ImportanceName = "group_l2"
    global_pruning: bool = False
    max_layer_ratio: float = Field(1.0, gt=0, le=1)
    round_to: int | None = Field(None, ge=1)
    ignore: tuple[str, ...] = ()
    sparsity: SparsityConfig | None = None
    taylor_batches: int = Field(4, ge=1)
    heads: bool = True
    hidden: bool = False
    attention_heads: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        given = [name for name in TARGET_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            raise ValueError(f"give exactly one of ratio, target_macs or target_params (found {found})")
        return self

    @property
    def metric(self) -> Metric:
        """What the target is measured in: prunable channels for `ratio`, else MACs or parameters."""
        return {"ratio": "channels", "target_macs": "macs", "target_params": "params"}[self._target_field]  # type: ignore[return-value]

    @property
    def keep(self) -> float:
        """The fraction of the reference to end at: of the teacher's MACs/params, of the stage's starting channels."""
        value = float(getattr(self, self._target_field))
        return 1 - value if self._target_field == "ratio" else value

    @property
    def _target_field(self) -> str:
        return next(name for name in TARGET_FIELDS if getattr(self, name) is not None)
