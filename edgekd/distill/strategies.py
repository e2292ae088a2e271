"""Methods that change who teaches whom:

- `dml`: deep mutual learning — peers train beside the student, each learning from the others;
- `self`: self-distillation (Be Your Own Teacher) — auxiliary heads on shallow layers learn from the
  deepest head; the heads live outside the student and are dropped after the phase;
- `ta`: teacher-assistant — the teacher trains an intermediate assistant, which teaches the student;
- `multi-teacher`: several teachers' soft targets, averaged, weighted, or confidence-weighted per sample;
- `cross-modal`: teacher and student read different views of the same sample."""

from __future__ import annotations

import copy
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from edgekd.distill.config import TeacherConfig, TermConfig
from edgekd.distill.losses import kd_loss
from edgekd.distill.features import token_mask
from edgekd.distill.methods import Batch, Phase, ResponseKD, Term, methods
from edgekd.distill.taps import classifier_path
from edgekd.errors import InputError
from edgekd.models.spec import ModelSpec
from edgekd.outputs import logits_of, run_model


def soft_kl(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(target ‖ softmax(student/T)) for a target given as probabilities."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_student, target_probs, reduction="batchmean")


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


class MutualConfig(TermConfig):
    peers: int = Field(1, ge=1, le=8)
    select: Literal["student", "best"] = "best"
    teacher_weight: float = Field(0.0, ge=0)


@methods.register(name="dml")
class MutualLearning(Term):
    """Deep mutual learning (Zhang et al.): the student and `peers` freshly initialised copies of its
    architecture train together, each with CE plus KL to the others' predictions (and optionally KD
    from the teacher). With `select: best` the network with the best validation accuracy hands its
    weights to the student at the end of the phase."""

    Config = MutualConfig
    example = {"peers": 1}

    def __init__(self, config: MutualConfig, phase: Phase):  # type: ignore[override]
        super().__init__(config, phase)
        if config.teacher_weight > 0:
            phase.require_teacher(config.method)
        if config.select == "best":
            phase.require_source(config.method)
        self.peers = nn.ModuleList(
            reinitialize(copy.deepcopy(phase.student), phase.seed + k + 1) for k in range(config.peers)
        ).train()

    def loss(self, batch: Batch) -> torch.Tensor:
        config, settings = self.config, self.phase.config
        logits = [batch.student_logits] + [logits_of(run_model(peer, batch.student_input)) for peer in self.peers]
        probs = [F.softmax(z.detach() / settings.temperature, dim=1) for z in logits]
        total = 0.0
        for index, z in enumerate(logits):
            others = torch.stack([p for j, p in enumerate(probs) if j != index]).mean(0)
            total = total + F.cross_entropy(z, batch.y) + soft_kl(z, others, settings.temperature)
            if config.teacher_weight > 0:  # type: ignore[attr-defined]
                total = total + config.teacher_weight * kd_loss(z, batch.teacher_logits, batch.y, settings.temperature, 1.0)  # type: ignore[attr-defined]
        return total  # type: ignore[return-value]

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.peers.parameters()

    def finish(self) -> None:
        if self.config.select != "best":  # type: ignore[attr-defined]
            return
        source = self.phase.require_source(self.config.method)
        scores = [source.evaluate(model, "val") for model in [self.phase.student, *self.peers]]
        best = max(range(len(scores)), key=scores.__getitem__)
        if best > 0:
            self.phase.student.load_state_dict(self.peers[best - 1].state_dict())

    def close(self) -> None:
        self.peers = nn.ModuleList()


class SelfConfig(TermConfig):
    heads: list[str] = Field(min_length=1)
    feature_layer: str | None = None
    feature_weight: float = Field(0.03, ge=0)


class AuxiliaryHead(nn.Module):
    """Bottleneck to the deepest feature's width, global pooling, and a classifier."""

    def __init__(self, feature: torch.Tensor, width: int, classes: int):
        super().__init__()
        if feature.dim() == 4:
            self.bottleneck: nn.Module = nn.Sequential(
                nn.Conv2d(feature.shape[1], width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
        else:  # tokens (B, N, C) or vectors (B, C)
            self.bottleneck = nn.Sequential(nn.Linear(feature.shape[-1], width), nn.ReLU())
        self.classifier = nn.Linear(width, classes)

    def forward(self, feature: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if feature.dim() == 3:  # the mean over tokens (the real ones, where a mask says which)
            feature = feature.mean(1) if mask is None else (feature * mask.unsqueeze(2)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        embedded = self.bottleneck(feature)
        return embedded, self.classifier(embedded)


@methods.register(name="self")
class SelfDistillation(Term):
    """Be Your Own Teacher (Zhang et al. 2019): each shallow head learns from labels, from the deepest
    head's soft targets and, through its bottleneck, from the deepest feature (the classifier's input)."""

    reads_features = True

    Config = SelfConfig
    example = {"heads": ["features.1"]}

    def __init__(self, config: SelfConfig, phase: Phase):  # type: ignore[override]
        super().__init__(config, phase)
        self.deepest = config.feature_layer or classifier_path(phase.student)
        phase.student_taps += list(config.heads)
        phase.student_input_taps.append(self.deepest)
        self.heads = nn.ModuleList()

    def setup(self, probe: Batch) -> None:
        deepest = probe.student_feature_input(self.deepest)
        classes = probe.student_logits.shape[1]
        for path in self.config.heads:  # type: ignore[attr-defined]
            self.heads.append(AuxiliaryHead(probe.student_feature(path), deepest.shape[-1], classes))
        self.heads.to(self.phase.device).train()

    def loss(self, batch: Batch) -> torch.Tensor:
        settings, config = self.phase.config, self.config
        deepest_logits = batch.student_logits.detach()
        deepest_feature = batch.student_feature_input(self.deepest).detach().flatten(1)
        total = 0.0
        for head, path in zip(self.heads, config.heads):  # type: ignore[attr-defined]
            feature = batch.student_feature(path)
            embedded, logits = head(feature, token_mask(batch, path, feature))
            total = total + kd_loss(logits, deepest_logits, batch.y, settings.temperature, self.phase.alpha)
            total = total + config.feature_weight * F.mse_loss(embedded, deepest_feature)  # type: ignore[attr-defined]
        return total / len(self.heads)  # type: ignore[return-value]

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.heads.parameters()

    def close(self) -> None:
        self.heads = nn.ModuleList()


class AssistantConfig(TermConfig):
    assistant: ModelSpec | None = None
    assistant_macs: float | None = Field(None, gt=0, lt=1)
    assistant_epochs: int = Field(5, ge=0)

    @model_validator(mode="after")
    def _one_assistant(self) -> AssistantConfig:
        if (self.assistant is None) == (self.assistant_macs is None):
            raise ValueError("give exactly one of assistant (a model spec) or assistant_macs (a fraction of the teacher's MACs)")
        return self


@methods.register(name="ta")
class TeacherAssistant(ResponseKD):
    """Mirzadeh et al.: the teacher trains an assistant of intermediate size (a given model, or the
    teacher pruned to `assistant_macs`), which then teaches the student by soft targets. The runner
    builds each assistant once per run and caches it in the workdir."""

    Config = AssistantConfig
    example = {"assistant": "cnn(width=6)", "assistant_epochs": 1}

    def __init__(self, config: AssistantConfig, phase: Phase):  # type: ignore[override]
        phase.require_teacher(config.method)
        self.assistant = phase.require_source(config.method).assistant(config).eval()
        super().__init__(config, phase)

    def target_logits(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            return logits_of(run_model(self.assistant, batch.teacher_input))


class MultiTeacherConfig(TermConfig):
    teachers: list[TeacherConfig] = Field(min_length=1)
    include_main: bool = True
    weighting: Literal["mean", "fixed", "confidence"] = "mean"
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights_fit(self) -> MultiTeacherConfig:
        count = len(self.teachers) + int(self.include_main)
        if self.weighting == "fixed" and (self.weights is None or len(self.weights) != count or min(self.weights) < 0):
            raise ValueError(f"weighting: fixed needs `weights`: {count} non-negative numbers, one per teacher (the main teacher first when include_main)")
        return self


@methods.register(name="multi-teacher")
class MultiTeacher(Term):
    """Several teachers' softened predictions combined into one target: the mean, fixed weights,
    or per-sample confidence weights (a softmax over each teacher's negative cross-entropy on the label)."""

    Config = MultiTeacherConfig
    example = {"teachers": [{"model": "cnn(width=6)", "train": {"epochs": 1}}]}

    def __init__(self, config: MultiTeacherConfig, phase: Phase):  # type: ignore[override]
        super().__init__(config, phase)
        source = phase.require_source(config.method)
        self.teachers = [phase.require_teacher(config.method)] if config.include_main else []
        self.teachers += [source.obtain_teacher(t).eval() for t in config.teachers]

    def target(self, batch: Batch) -> torch.Tensor:
        config, temperature = self.config, self.phase.config.temperature
        with torch.no_grad():
            logits = torch.stack([logits_of(run_model(t, batch.teacher_input)) for t in self.teachers])  # (K, B, C)
            probs = F.softmax(logits / temperature, dim=2)
            if config.weighting == "confidence":  # type: ignore[attr-defined]
                losses = torch.stack([F.cross_entropy(z, batch.y, reduction="none") for z in logits])
                weights = F.softmax(-losses, dim=0).unsqueeze(2)
            elif config.weighting == "fixed":  # type: ignore[attr-defined]
                fixed = torch.tensor(config.weights, device=probs.device)  # type: ignore[attr-defined]
                weights = (fixed / fixed.sum()).view(-1, 1, 1)
            else:
                weights = torch.full((len(self.teachers), 1, 1), 1 / len(self.teachers), device=probs.device)
            return (weights * probs).sum(0)

    def loss(self, batch: Batch) -> torch.Tensor:
        alpha = self.phase.alpha
        soft = soft_kl(batch.student_logits, self.target(batch), self.phase.config.temperature)
        return (1 - alpha) * F.cross_entropy(batch.student_logits, batch.y) + alpha * soft


@methods.register(name="cross-modal")
class CrossModal(ResponseKD):
    """Response KD where the teacher and the student read different views of each sample
    (`teacher.input` / `student.input` name views from `data.views`)."""

    def __init__(self, config: TermConfig, phase: Phase):
        if phase.student_view is phase.teacher_view:
            raise InputError(
                "cross-modal distillation needs the teacher and the student to read different views: "
                "define data.views (e.g. {low: {resize: 14}}) and set student.input: low (and/or teacher.input)"
            )
        super().__init__(config, phase)
