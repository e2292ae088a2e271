"""Distillation methods: how a batch becomes a loss for the student.

A recipe's `distill.method` is a list of weighted terms (a single name is a list
of one). For each training phase an `Objective` builds every term once; per
batch it runs the student and the teacher once each — the terms read the logits
and the intermediate features (taps) they asked for — and sums the weighted
term losses. Terms that own trainable parts (adapters, auxiliary heads, peer
networks) hand them to the optimizer through `parameters()`, and `close()`
removes every hook and drops those parts, so nothing training-only outlives the
phase or reaches an exported model."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data.views import View, identity
from edgekd.distill.cache import SoftLabelCache, TokenSoftLabels
from edgekd.distill.config import DistillConfig, TermConfig
from edgekd.distill.losses import kd_loss, soft_weights, token_cross_entropy
from edgekd.distill.registry import methods
from edgekd.distill.taps import FeatureTaps
from edgekd.errors import InputError
from edgekd.outputs import Inputs, logits_of, run_model

if TYPE_CHECKING:
    from edgekd.distill.config import TeacherConfig


class ModelSource(Protocol):
    """What the runner offers the terms that need more models than student and teacher."""

    def obtain_teacher(self, config: TeacherConfig) -> nn.Module: ...

    def assistant(self, config: Any) -> nn.Module: ...

    def evaluate(self, model: nn.Module, split: str = "test") -> float: ...


@dataclass
class Phase:
    """What all terms of one training phase share."""

    config: DistillConfig
    student: nn.Module
    teacher: nn.Module | None
    device: torch.device
    seed: int = 0
    student_view: View = identity
    teacher_view: View = identity
    source: ModelSource | None = None
    student_taps: list[str] = field(default_factory=list)
    teacher_taps: list[str] = field(default_factory=list)
    student_input_taps: list[str] = field(default_factory=list)
    # The teacher's logits for every training sample and view (per target token for generation data),
    # computed once (see Run.soft_labels and Run.token_soft_labels).
    soft_labels: Callable[[], SoftLabelCache | TokenSoftLabels] | None = None
    # What runs the student's forward pass in training: the student, or its DDP wrapper.
    student_forward: Callable[..., Any] | None = None
    # How far the phase has trained, 0 (first batch) to 1 (last): what α schedules follow.
    progress: float = 0.0

    @property
    def alpha(self) -> float:
        """The soft-target weight α at this point of the phase (`alpha`, or on its way to `alpha_end`)."""
        return self.config.alpha_at(self.progress)

    def require_teacher(self, method: str) -> nn.Module:
        if self.teacher is None:
            raise InputError(f"distillation method {method!r} needs a teacher, and this phase has none")
        return self.teacher

    def require_source(self, method: str) -> ModelSource:
        if self.source is None:
            raise InputError(f"distillation method {method!r} needs the runner (extra teachers, assistants); call it through edgekd.compress")
        return self.source


class Batch:
    """One batch as the terms see it: each model's view, logits and taps, computed at most once.

    `y` holds class indices, or class probabilities after mixup/cutmix; `index` the samples'
    positions in the training split and `view` the augmented view they come from (the keys of
    the teacher's cached soft labels)."""

    def __init__(
        self, objective: Objective, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None, view: int | None = None,
    ):
        self.objective, self.x, self.y, self.index, self.view = objective, x, y, index, view

    @cached_property
    def student_input(self) -> Inputs:
        return self.objective.phase.student_view(self.x)

    @cached_property
    def teacher_input(self) -> Inputs:
        return self.objective.phase.teacher_view(self.x)

    @cached_property
    def student_logits(self) -> torch.Tensor:
        phase = self.objective.phase
        return logits_of(run_model(phase.student_forward or phase.student, self.student_input))

    @cached_property
    def teacher_logits(self) -> torch.Tensor:
        cached = self.objective.cached_soft_labels
        if cached is not None and self.index is not None:  # a token cache spreads its tail as the student does
            return cached.logits(self.view, self.index, self.y, self.student_logits).to(self.x.device)
        teacher = self.objective.phase.teacher
        assert teacher is not None
        with torch.no_grad():
            return logits_of(run_model(teacher, self.teacher_input))

    def student_feature(self, path: str) -> torch.Tensor:
        _ = self.student_logits  # the forward pass fills the taps
        return self.objective.student_taps[path]

    def student_feature_input(self, path: str) -> torch.Tensor:
        _ = self.student_logits
        return self.objective.student_input_taps[path]

    def teacher_feature(self, path: str) -> torch.Tensor:
        _ = self.teacher_logits
        return self.objective.teacher_taps[path]


class Term:
    """Base of every method: plain cross-entropy on the student's logits."""

    Config: type[TermConfig] = TermConfig
    # Settings of a working term for a built-in cnn student and resnet_s teacher (their layer
    # paths): what the registry-driven tests train every registered method with.
    example: ClassVar[dict[str, Any]] = {}
    # Whether the term reads intermediate features (taps) rather than only the models' logits.
    reads_features: ClassVar[bool] = False
    # The data the registry-driven tests train `example` on: "digits", or "rationales" (generation
    # text with rationales, for the step-by-step method).
    example_data: ClassVar[str] = "digits"

    def __init__(self, config: TermConfig, phase: Phase):
        self.config = config
        self.phase = phase

    def setup(self, probe: Batch) -> None:
        """Build what needs feature shapes (adapters, heads); `probe` ran both models once."""

    def loss(self, batch: Batch) -> torch.Tensor:
        return hard_loss(batch.student_logits, batch.y)

    def parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def pretrain_loss(self, batch: Batch) -> torch.Tensor | None:
        """A loss for a warm-up before the phase (FitNets stage 1), or None."""
        return None

    def pretrain_epochs(self) -> int:
        return 0

    def finish(self) -> None:
        """End of the phase, before hooks go: e.g. pick the best peer."""

    def close(self) -> None:
        """Drop everything training-only this term created."""


methods.register(Term, name="ce")


@methods.register(name="kd")
class ResponseKD(Term):
    """Hinton soft targets: (1-α)·CE + α·T²·KL(p_T ‖ p_S); the teacher in eval mode, under no_grad.
    α follows the phase's schedule and `kd_on` weights it per sample."""

    def __init__(self, config: TermConfig, phase: Phase):
        super().__init__(config, phase)
        if phase.config.uses_soft_targets:
            phase.require_teacher(config.method)

    def target_logits(self, batch: Batch) -> torch.Tensor:
        return batch.teacher_logits

    def loss(self, batch: Batch) -> torch.Tensor:
        settings, alpha = self.phase.config, self.phase.alpha
        if alpha == 0:
            return hard_loss(batch.student_logits, batch.y)
        target = self.target_logits(batch)
        weights = soft_weights(target, batch.y, settings.kd_on)
        return kd_loss(
            batch.student_logits, target, batch.y, settings.temperature, alpha if weights is None else alpha * weights,
            settings.divergence, settings.beta,
        )  # fmt: skip


def hard_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the labels: per class, or per real target token for per-token logits (B, L, V)."""
    return token_cross_entropy(logits, y) if logits.dim() == 3 else F.cross_entropy(logits, y)


class Objective:
    """The weighted sum of a phase's terms; a context manager that always removes its hooks."""

    def __init__(self, phase: Phase, example: torch.Tensor):
        self.phase = phase
        self.terms: list[Term] = []
        self.student_taps = self.teacher_taps = self.student_input_taps = None  # type: ignore[assignment]
        if phase.teacher is not None:
            phase.teacher.eval()
        try:
            self.terms = [methods.get(term.method)(term, phase) for term in phase.config.terms]
            self.student_taps = FeatureTaps(phase.student, phase.student_taps, "student")
            self.student_input_taps = FeatureTaps(phase.student, phase.student_input_taps, "student", inputs=True)
            self.teacher_taps = FeatureTaps(phase.teacher, phase.teacher_taps, "teacher") if phase.teacher is not None else FeatureTaps(nn.Identity(), [], "teacher")
            self._probe(example)
        except BaseException:
            self.close()
            raise

    def _probe(self, example: torch.Tensor) -> None:
        """One forward pass of both models without touching BN statistics, so terms can size their parts."""
        student = self.phase.student
        was_training = student.training
        student.eval()
        with torch.no_grad():
            probe = Batch(self, example, torch.zeros(len(example), dtype=torch.long, device=example.device))
            _ = probe.student_logits
            if self.phase.teacher is not None and not self.reads_cache:  # a cached teacher never runs in the phase
                _ = probe.teacher_logits
            for term in self.terms:
                term.setup(probe)
        student.train(was_training)

    def __enter__(self) -> Objective:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reads_cache(self) -> bool:
        """Whether the teacher's logits come from the phase's cache: offered, and no term reads teacher
        features (those need the live forward pass anyway, so the cache would save nothing)."""
        return self.phase.soft_labels is not None and not self.phase.teacher_taps

    @cached_property
    def cached_soft_labels(self) -> SoftLabelCache | TokenSoftLabels | None:
        """The teacher's precomputed logits, when `reads_cache`."""
        return self.phase.soft_labels() if self.phase.soft_labels is not None and self.reads_cache else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None, view: int | None = None) -> torch.Tensor:
        batch = Batch(self, x, y, index, view)
        return sum(term.config.weight * term.loss(batch) for term in self.terms)  # type: ignore[return-value]

    def pretrain_epochs(self) -> int:
        return max((term.pretrain_epochs() for term in self.terms), default=0)

    def pretrain_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batch = Batch(self, x, y)
        losses = [loss for term in self.terms if (loss := term.pretrain_loss(batch)) is not None]
        return sum(losses)  # type: ignore[return-value]

    def parameters(self) -> list[nn.Parameter]:
        return [p for term in self.terms for p in term.parameters()]

    def finish(self) -> None:
        for term in self.terms:
            term.finish()

    def close(self) -> None:
        for taps in (self.student_taps, self.teacher_taps, self.student_input_taps):
            if taps is not None:
                taps.close()
        for term in self.terms:
            term.close()
