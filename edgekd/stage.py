"""The Stage: the coupled unit of the core loop — one recipe entry whose
compression action is split into steps, each followed by recovery.

A worked example: `{prune: {target_macs: 0.33, steps: 4}, recover: {epochs: 2}}`
becomes a prune Stage with `num_steps() == 4`. For each step the runner calls
`apply(run, step)` (remove a quarter of the way to the target), evaluates the
student (`accuracy_before_recovery`), recovers it by distillation from the
teacher for 2 epochs, evaluates again, and writes a StepRecord plus an atomic
checkpoint. On `--resume`, `restore(run, state)` replays the structural change
of each finished step (e.g. the pruned shapes) before the saved weights load.

New stage kinds register themselves with `@stages.register(name="key")`; the
runner never needs to change to learn one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from edgekd.config import StrictModel
from edgekd.records import Artefacts
from edgekd.registry import Registry

if TYPE_CHECKING:
    from edgekd.run import Run


@dataclass
class StepResult:
    """What one step of a stage hands back to the runner.

    `record`: StepRecord fields the stage measured itself, over the runner's (e.g. `{"int8": True}`);
    the runner validates them as a StepRecord. `state`: JSON-able data that `restore` needs to redo
    this step's structural change on resume. `artefacts`: the files and timings of an artefact stage."""

    record: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    artefacts: Artefacts = field(default_factory=Artefacts)


class Stage:
    """Base class of every stage kind; subclasses set `Config` and override `apply`."""

    Config: ClassVar[type[StrictModel]]
    # False for stages that only produce artefacts (export, bench): no recovery, no StepRecord.
    compresses: ClassVar[bool] = True
    # True when the stage body itself is a distillation block (the `distill` stage).
    body_is_recovery: ClassVar[bool] = False

    def __init__(self, config: StrictModel, index: int):
        self.config = config
        self.index = index

    def num_steps(self) -> int:
        return 1

    def apply(self, run: Run, step: int) -> StepResult:
        """Compress `run.student` for step `step` (1-based); may replace `run.student`."""
        return StepResult()

    def restore(self, run: Run, state: dict[str, Any]) -> None:
        """Redo a finished step's structural change on a freshly built student (resume)."""


stages: Registry[type[Stage]] = Registry("stage kind")
