"""The `prune` stage: structured pruning in `steps` increments, each followed by
the runner's recovery distillation.

    stages:
      - prune: {target_macs: 0.33, steps: 4, importance: group_l2, round_to: 8}
        recover: {epochs: 2}

Step k of N aims at the geometric interpolation between the student's value when
the stage began and the target (a fraction of the teacher's MACs or parameters,
or of the starting channels for `ratio`). With `sparsity:`, step 1 first trains
the student with a group-norm penalty so whole channel groups fade before any
is removed. Each step's state is the pruned structure (plain JSON), which
`restore` re-applies to a freshly built student on `--resume`."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import torch

from edgekd.config import StrictModel
from edgekd.errors import InputError
from edgekd.outputs import Inputs
from edgekd.prune.attention import find_attention
from edgekd.prune.config import PruneConfig
from edgekd.prune.importances import importances
from edgekd.prune.pruner import ChannelPruner, aim_for_step
from edgekd.prune.structure import apply_structure, capture_structure
from edgekd.stage import Stage, StageContext, StepResult, stages


@dataclass
class Origin:
    """The student as the stage's first step found it: where every step's aim starts from."""

    value: int
    widths: dict[str, list[int]]


@stages.register(name="prune")
class PruneStage(Stage):
    Config = PruneConfig
    config: PruneConfig
    example = {"ratio": 0.3}
    refuses = {"quantized": "structural changes must happen on the float model: prune first, then quantize (move the qat stage after the last prune stage)"}

    def __init__(self, config: PruneConfig, index: int, recover: StrictModel | None = None):
        super().__init__(config, index, recover)
        self.origin: Origin | None = None

    def num_steps(self) -> int:
        return self.config.steps

    def check_model(self, model: torch.nn.Module, example: Inputs) -> None:
        """Declared attention modules must exist and hold their head count in an int attribute."""
        if self.config.attention_heads:
            find_attention(model, example, self.config.attention_heads, f"stages[{self.index}].prune.attention_heads")

    def apply(self, ctx: StageContext, step: int) -> StepResult:
        if step == 1 and self.config.sparsity:
            self._sparse_training(ctx)
        pruner = ChannelPruner(ctx.student, ctx.example_input(), self.config)
        if step == 1:
            self.origin = Origin(pruner.measure(self.config.metric), pruner.widths())
        assert self.origin is not None, "steps run in order, so step 1 (applied or restored) set the origin"
        pruner.limit_widths(self.origin.widths)
        aim = self._aim(ctx, step)
        pruner.prune_to(aim, seed=ctx.phase_seed(self.index, step), gradient_batches=self._gradient_batches(ctx, step))
        record = {"target": round(aim), "target_metric": self.config.metric, "prunable_channels": pruner.measure("channels")}
        return StepResult(record=record, state={"structure": capture_structure(ctx.student), "origin": asdict(self.origin)})

    def restore(self, ctx: StageContext, state: dict[str, Any]) -> None:
        self.origin = Origin(**state["origin"])
        apply_structure(ctx.student, state["structure"])

    def _aim(self, ctx: StageContext, step: int) -> float:
        assert self.origin is not None
        metric = self.config.metric
        reference = self.origin.value if metric == "channels" else getattr(ctx.report.teacher, metric)
        return aim_for_step(self.origin.value, self.config.keep * reference, step, self.config.steps)

    def _sparse_training(self, ctx: StageContext) -> None:
        """Group-norm sparse training distils like this stage's recovery does, for `sparsity.epochs`."""
        assert self.config.sparsity is not None
        if self.recover is None:
            raise InputError(f"stages[{self.index}] prune: sparse training distils with the stage's recover block, and it has none")
        regularizer = ChannelPruner(ctx.student, ctx.example_input(), self.config, regularization=self.config.sparsity.reg)
        training = self.recover.model_copy(update={"epochs": self.config.sparsity.epochs})
        seed = ctx.phase_seed(self.index, 0)  # step 0: before the first pruning step
        ctx.train(ctx.student, training, seed=seed, description="prune sparsity", after_backward=regularizer.regularize)

    def _gradient_batches(self, ctx: StageContext, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if not importances.get(self.config.importance).needs_gradients:
            return []
        loader = ctx.loader("train", shuffle=True, seed=ctx.phase_seed(self.index, step))
        return list(itertools.islice(loader, self.config.taylor_batches))
