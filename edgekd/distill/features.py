"""Feature-based methods: match what intermediate layers compute.

- `feature`: teacher/student layer pairs matched through a learned adapter (MSE or cosine);
- `hint`: FitNets — a regressor maps the student's guided layer to the teacher's hint layer (L2),
  optionally with the paper's first stage that trains only up to the guided layer;
- `attention`: attention transfer (Zagoruyko & Komodakis) — normalized spatial attention maps.

On transformers the layers give hidden states (batch, tokens, dim) — text encoders and decoders,
ViT — and every loss is a mean over real tokens only: on text the batch's `attention_mask` says
which are real (in an encoder-decoder, layers under a module named `decoder` follow the target
tokens instead). The teacher's and the student's layers must see the same tokens (same tokenizer,
same patches); their widths may differ (the adapter maps them). Attention transfer on tokens uses
the same definition as on images with tokens in place of pixels: per token, the mean over the hidden
dimension of |h|^p, normalized over the sequence — where the layer puts its activation energy."""

from __future__ import annotations

from typing import Iterator, Literal, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from edgekd.distill.config import TermConfig
from edgekd.distill.methods import Batch, Phase, Term, methods
from edgekd.errors import InputError
from edgekd.facts import IGNORE_INDEX

LayerPair = tuple[str, str]


class PairsConfig(TermConfig):
    """Layer pairs as [[student_path, teacher_path], …] or [{student: …, teacher: …}, …]."""

    pairs: list[LayerPair] = Field(min_length=1)

    @field_validator("pairs", mode="before")
    @classmethod
    def _accept_mappings(cls, value: object) -> object:
        if isinstance(value, list):
            return [(p["student"], p["teacher"]) if isinstance(p, dict) and {"student", "teacher"} <= p.keys() else p for p in value]
        return value


def resize_like(feature: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bring a (B, C, H, W) map to the reference's spatial size: average-pool down, interpolate up."""
    if feature.dim() != 4 or feature.shape[-2:] == reference.shape[-2:]:
        return feature
    if feature.shape[-2] >= reference.shape[-2]:
        return F.adaptive_avg_pool2d(feature, reference.shape[-2:])
    return F.interpolate(feature, size=reference.shape[-2:], mode="bilinear", align_corners=False)


def token_mask(batch: Batch, path: str, feature: torch.Tensor) -> torch.Tensor | None:
    """Which of a hidden state's tokens are real, (batch, tokens) booleans; None where all are
    (images, ViT patches, vectors)."""
    inputs = batch.student_input
    if feature.dim() != 3 or not isinstance(inputs, Mapping) or "attention_mask" not in inputs:
        return None
    if "decoder_input_ids" in inputs and "decoder" in path.split("."):
        mask = batch.y != IGNORE_INDEX  # decoder position t is real where it predicts a real target token
    else:
        mask = inputs["attention_mask"].bool()
    if mask.shape != feature.shape[:2]:
        raise InputError(
            f"layer {path!r} gives {feature.shape[1]} positions per sample where the batch has {mask.shape[-1]} tokens; "
            "name a layer whose output is the hidden state (batch, tokens, dim)"
        )
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of `values` (batch, tokens, …) over the real tokens only (all of them when mask is None)."""
    if mask is None:
        return values.mean()
    real = values[mask]
    return real.mean() if real.numel() else values.sum() * 0.0


def make_adapter(student: torch.Tensor, teacher: torch.Tensor, pair: LayerPair, kernel: int = 1) -> nn.Module:
    """A learned map from the student's feature width to the teacher's (1×1 conv or linear)."""
    if student.dim() != teacher.dim():
        raise InputError(f"layers {pair[0]!r} (student, {tuple(student.shape[1:])}) and {pair[1]!r} (teacher, {tuple(teacher.shape[1:])}) have different ranks; pick layers of the same kind")
    if student.dim() == 3 and student.shape[1] != teacher.shape[1]:
        raise InputError(f"layers {pair[0]!r} and {pair[1]!r} have {student.shape[1]} vs {teacher.shape[1]} tokens; pick layers with the same token count")
    if student.dim() == 4:
        adapter: nn.Module = nn.Conv2d(student.shape[1], teacher.shape[1], kernel, padding=kernel // 2, bias=False)
    else:
        adapter = nn.Linear(student.shape[-1], teacher.shape[-1], bias=False)
    if student.shape[1:] == teacher.shape[1:]:
        _start_as_identity(adapter)
    return adapter


def _start_as_identity(adapter: nn.Module) -> None:
    """Equal widths start as the identity: a student that is a copy of the teacher (recovery
    after pruning) begins at zero feature loss instead of chasing a random projection."""
    with torch.no_grad():
        weight = adapter.weight
        weight.zero_()
        centre = tuple(k // 2 for k in weight.shape[2:])
        for channel in range(min(weight.shape[0], weight.shape[1])):
            weight[(channel, channel, *centre)] = 1.0


class FeatureConfig(PairsConfig):
    loss: Literal["mse", "cosine"] = "mse"


@methods.register(name="feature")
class FeatureMatching(Term):
    """Match student feature maps to the teacher's through adapters (kept out of the student)."""

    reads_features = True

    Config = FeatureConfig
    example = {"pairs": [["features.3", "layers.1"]]}
    adapter_kernel = 1

    def __init__(self, config: FeatureConfig, phase: Phase):  # type: ignore[override]
        super().__init__(config, phase)
        phase.require_teacher(config.method)
        self.pairs: list[LayerPair] = list(config.pairs)
        phase.student_taps += [s for s, _ in self.pairs]
        phase.teacher_taps += [t for _, t in self.pairs]
        self.adapters = nn.ModuleList()

    def setup(self, probe: Batch) -> None:
        for pair in self.pairs:
            student, teacher = probe.student_feature(pair[0]), probe.teacher_feature(pair[1])
            self.adapters.append(make_adapter(student, teacher, pair, self.adapter_kernel))
        self.adapters.to(self.phase.device)

    def pair_loss(self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """MSE, or cosine distance per sample — per token for hidden states."""
        if self.config.loss == "cosine":  # type: ignore[attr-defined]
            if student.dim() == 3:
                return masked_mean(1 - F.cosine_similarity(student, teacher, dim=2), mask)
            return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()
        return masked_mean((student - teacher).pow(2), mask)

    def matched(self, batch: Batch) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        for adapter, (s_path, t_path) in zip(self.adapters, self.pairs):
            teacher = batch.teacher_feature(t_path)
            student = resize_like(adapter(batch.student_feature(s_path)), teacher)
            yield student, teacher, token_mask(batch, s_path, student)

    def loss(self, batch: Batch) -> torch.Tensor:
        return sum(self.pair_loss(*matched) for matched in self.matched(batch)) / len(self.pairs)  # type: ignore[return-value]

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.adapters.parameters()

    def close(self) -> None:
        self.adapters = nn.ModuleList()


class HintConfig(TermConfig):
    student_layer: str
    teacher_layer: str
    stage1_epochs: int = Field(0, ge=0)


@methods.register(name="hint")
class FitNetsHint(FeatureMatching):
    """FitNets: a conv regressor from the guided layer to the hint layer, L2 loss.

    With `stage1_epochs > 0` the phase begins with the paper's first stage: only the
    hint loss, which trains the student up to the guided layer (and the regressor)."""

    Config = HintConfig  # type: ignore[assignment]
    example = {"student_layer": "features.3", "teacher_layer": "layers.1"}
    adapter_kernel = 3

    def __init__(self, config: HintConfig, phase: Phase):  # type: ignore[override]
        Term.__init__(self, config, phase)
        phase.require_teacher(config.method)
        self.pairs = [(config.student_layer, config.teacher_layer)]
        phase.student_taps.append(config.student_layer)
        phase.teacher_taps.append(config.teacher_layer)
        self.adapters = nn.ModuleList()

    def pair_loss(self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return 0.5 * masked_mean((student - teacher).pow(2), mask)

    def pretrain_epochs(self) -> int:
        return self.config.stage1_epochs  # type: ignore[attr-defined]

    def pretrain_loss(self, batch: Batch) -> torch.Tensor:
        return self.loss(batch)


class AttentionConfig(PairsConfig):
    p: float = Field(2.0, gt=0)


def attention_map(feature: torch.Tensor, p: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spatial attention: mean over channels of |A|^p, flattened and L2-normalized per sample.
    For hidden states (B, T, D) the tokens are the positions: mean over D, padding tokens left out."""
    if feature.dim() == 4:
        return F.normalize(feature.abs().pow(p).mean(1).flatten(1), dim=1)
    if feature.dim() == 3:
        energy = feature.abs().pow(p).mean(2)
        return F.normalize(energy if mask is None else energy * mask, dim=1)
    raise InputError(
        f"attention transfer needs (B, C, H, W) feature maps or (B, tokens, dim) hidden states, got shape {tuple(feature.shape)}"
    )


@methods.register(name="attention")
class AttentionTransfer(Term):
    """Zagoruyko & Komodakis: (β/2)·Σ‖Q_S/‖Q_S‖ − Q_T/‖Q_T‖‖² over layer pairs; β is the term's weight."""

    reads_features = True

    Config = AttentionConfig
    example = {"weight": 10, "pairs": [["features.3", "layers.1"]]}

    def __init__(self, config: AttentionConfig, phase: Phase):  # type: ignore[override]
        super().__init__(config, phase)
        phase.require_teacher(config.method)
        phase.student_taps += [s for s, _ in config.pairs]
        phase.teacher_taps += [t for _, t in config.pairs]

    def setup(self, probe: Batch) -> None:
        for s_path, t_path in self.config.pairs:  # type: ignore[attr-defined]
            student, teacher = probe.student_feature(s_path), probe.teacher_feature(t_path)
            if student.dim() != teacher.dim() or (student.dim() == 3 and student.shape[1] != teacher.shape[1]):
                raise InputError(
                    f"attention transfer: layers {s_path!r} (student, {tuple(student.shape[1:])}) and {t_path!r} (teacher, "
                    f"{tuple(teacher.shape[1:])}) do not cover the same positions; pick layers of the same kind and token count"
                )
            attention_map(student, 1.0)  # refuses a shape it has no positions in

    def loss(self, batch: Batch) -> torch.Tensor:
        total = 0.0
        for s_path, t_path in self.config.pairs:  # type: ignore[attr-defined]
            teacher = batch.teacher_feature(t_path)
            student = resize_like(batch.student_feature(s_path), teacher)
            p, mask = self.config.p, token_mask(batch, s_path, student)  # type: ignore[attr-defined]
            gap = (attention_map(student, p, mask) - attention_map(teacher, p, mask)).pow(2)
            total = total + masked_mean(gap, mask)
        return total / 2  # type: ignore[return-value]
