"""The Stage: the coupled unit of the core loop — one recipe entry whose
compression action is split into steps, each followed by recovery.

A worked example: `{prune: {target_macs: 0.33, steps: 4}, recover: {epochs: 2}}`
becomes a prune Stage with `num_steps() == 4` and its merged recover block. For
each step the runner calls `apply(ctx, step)` (remove a quarter of the way to the
target), evaluates the student (`accuracy_before_recovery`), recovers it by
distillation from the teacher for 2 epochs, evaluates again, and writes a
StepRecord plus an atomic checkpoint. On `--resume`, `restore(ctx, state)` replays
the structural change of each finished step (e.g. the pruned shapes) before the
saved weights load.

Stages see the run through `StageContext`, a narrow protocol, never the runner
itself. What a stage kind needs before it and refuses after it is data on its
class (`requires`, `provides`, `refuses`, `exclusive`), which the recipe checks over
the whole plan before anything trains. New stage kinds register themselves with
`@stages.register(name="key")`; neither the runner nor the recipe changes to learn one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Protocol

from edgekd.config import StrictModel
from edgekd.facts import DataFacts
from edgekd.records import Artefacts, Report
from edgekd.registry import Registry

if TYPE_CHECKING:
    import torch
    from rich.console import Console
    from torch import nn
    from torch.utils.data import DataLoader

    from edgekd.outputs import Inputs

Role = Literal["student", "teacher"]
# How a model sees a stored batch: an image view (a tensor), or a text batch's keyword arguments.
View = Callable[["torch.Tensor"], "Inputs"]


class StageContext(Protocol):
    """What a stage may use of the run it belongs to. The runner implements it; a test or a
    user's script can implement it too (a stage never imports the runner)."""

    student: nn.Module  # a stage may replace it (quantization swaps in a new module)
    teacher: nn.Module
    device: torch.device
    workdir: Path
    seed: int
    console: Console
    report: Report  # the run's measurements so far: the teacher's metrics, finished steps
    artefacts: Artefacts  # the files and timings export and bench stages produced so far
    label_task: Any  # step-by-step's label task (edgekd.distill.stepbystep_method.LabelTask), else None

    @property
    def facts(self) -> DataFacts:
        """What the data is: images or tokens, the task (classify, causal-lm, seq2seq), special tokens."""
        ...

    @property
    def recipe_hash(self) -> str:
        """The hash of the recipe: ONNX metadata ties a file to the settings that made it."""
        ...

    @property
    def name(self) -> str:
        """The recipe's name."""
        ...

    def phase_seed(self, stage_index: int, step: int) -> int:
        """A seed that depends only on the recipe seed and the step's position."""
        ...

    def loader(self, split: str, shuffle: bool = False, seed: int | None = None) -> DataLoader:
        """(inputs, labels) batches of a split — train, val or test — at the run's batch size."""
        ...

    def view(self, role: Role) -> View:
        """How the student (or the teacher) sees a batch of inputs (see `data.views`)."""
        ...

    def example_input(self, batch: int = 1, role: Role = "student") -> Inputs:
        """Real test inputs as `role` sees them, on the run's device (a text model's: keyword arguments)."""
        ...

    def evaluate(self, model: nn.Module, split: str = "test", role: Role = "student") -> float:
        """Top-1 accuracy of `model` on a split, as `role` sees the data."""
        ...

    def measure(self, model: nn.Module, role: Role = "student") -> dict[str, int]:
        """MACs per sample, parameters and state bytes of `model`."""
        ...

    def train(
        self,
        model: nn.Module,
        config: StrictModel,
        *,
        seed: int,
        description: str,
        after_backward: Callable[[nn.Module], None] | None = None,
    ) -> list[float]:
        """Train `model` in place: distillation from the teacher for a DistillConfig (a stage's
        recover block), plain cross-entropy for a TrainConfig. Returns each epoch's mean loss."""
        ...


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
    """Base class of every stage kind; subclasses set `Config` and override `apply`.

    Ordering facts, checked by the recipe over the whole plan before anything trains:
    `provides` — facts this stage establishes for later stages and for gates (`onnx`, `latency`,
    `quantized`); `requires` — facts an earlier stage must have established; `refuses` — facts
    that must not hold yet, each with the reason; `exclusive` — a group of which a plan holds at
    most one stage.
    Facts from artefact stages (`compresses = False`) describe the student as it was: a later
    compressing stage would leave them stale, so the plan refuses that order."""

    Config: ClassVar[type[StrictModel]]
    # False for stages that only produce artefacts (export, bench): no recovery, no StepRecord.
    compresses: ClassVar[bool] = True
    # True when the stage body itself is a distillation block (the `distill` stage).
    body_is_recovery: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    refuses: ClassVar[dict[str, str]] = {}
    exclusive: ClassVar[str | None] = None
    # A small working body of the stage: what the registry-driven tests run for every stage kind.
    example: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: StrictModel, index: int, recover: StrictModel | None = None):
        self.config = config
        self.index = index
        # The merged distillation block that recovers after each step (None for artefact stages).
        self.recover = recover

    def num_steps(self) -> int:
        return 1

    def check_model(self, model: nn.Module, example: Inputs) -> None:
        """Refuse settings that do not fit the student's architecture (InputError naming the field),
        called when the model is built, before it trains."""

    def batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes a stage providing `latency` measures (gates may read only those)."""
        return ()

    def apply(self, ctx: StageContext, step: int) -> StepResult:
        """Compress `ctx.student` for step `step` (1-based); may replace `ctx.student`."""
        return StepResult()

    def restore(self, ctx: StageContext, state: dict[str, Any]) -> None:
        """Redo a finished step's structural change on a freshly built student (resume)."""


stages: Registry[type[Stage]] = Registry("stage kind")
