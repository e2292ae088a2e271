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
from typing import TYPE_CHECKING, Any

import torch

from edgekd.distill import DistillConfig
from edgekd.prune.config import PruneConfig
from edgekd.prune.importances import importances
from edgekd.prune.pruner import ChannelPruner, aim_for_step
from edgekd.prune.structure import apply_structure, capture_structure
from edgekd.stage import Stage, StepResult, stages

if TYPE_CHECKING:
    from edgekd.run import Run


@dataclass
class Origin:
    """The student as the stage's first step found it: where every step's aim starts from."""

    value: int
    widths: dict[str, list[int]]


@stages.register(name="prune")
class PruneStage(Stage):
    Config = PruneConfig
    config: PruneConfig

    def __init__(self, config: PruneConfig, index: int):
        super().__init__(config, index)
        self.origin: Origin | None = None

    def num_steps(self) -> int:
        return self.config.steps

    def apply(self, run: Run, step: int) -> StepResult:
        if step == 1 and self.config.sparsity:
            self._sparse_training(run)
        pruner = ChannelPruner(run.student, run.example_input(), self.config)
        if step == 1:
            self.origin = Origin(pruner.measure(self.config.metric), pruner.widths())
        assert self.origin is not None, "steps run in order, so step 1 (applied or restored) set the origin"
        pruner.limit_widths(self.origin.widths)
        aim = self._aim(run, step)
        pruner.prune_to(aim, seed=run.phase_seed(self.index, step), gradient_batches=self._gradient_batches(run, step))
        record = {"target": round(aim), "target_metric": self.config.metric, "prunable_channels": pruner.measure("channels")}
        return StepResult(record=record, state={"structure": capture_structure(run.student), "origin": asdict(self.origin)})

    def restore(self, run: Run, state: dict[str, Any]) -> None:
        self.origin = Origin(**state["origin"])
        apply_structure(run.student, state["structure"])

    def _aim(self, run: Run, step: int) -> float:
        assert self.origin is not None
        metric = self.config.metric
        reference = self.origin.value if metric == "channels" else getattr(run.report.teacher, metric)
        return aim_for_step(self.origin.value, self.config.keep * reference, step, self.config.steps)

    def _sparse_training(self, run: Run) -> None:
        assert self.config.sparsity is not None
        regularizer = ChannelPruner(run.student, run.example_input(), self.config, regularization=self.config.sparsity.reg)
        training = self._recovery(run).model_copy(update={"epochs": self.config.sparsity.epochs})
        seed = run.phase_seed(self.index, 0)  # step 0: before the first pruning step
        run.train(run.student, training, seed=seed, description="prune sparsity", after_backward=regularizer.regularize)

    def _recovery(self, run: Run) -> DistillConfig:
        """This stage's merged recovery block: sparse training distils like recovery does."""
        planned = next(p for p in run.recipe.plan if p.index == self.index)
        return planned.recover or run.recipe.distill

    def _gradient_batches(self, run: Run, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if not importances.get(self.config.importance).needs_gradients:
            return []
        loader = run.loader("train", shuffle=True, seed=run.phase_seed(self.index, step))
        return list(itertools.islice(loader, self.config.taylor_batches))
