"""Distillation losses as plain functions of tensors.

Targets are class indices (B,) or, after mixup/cutmix, class probabilities (B, C); every loss
here accepts both, as `F.cross_entropy` does."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float | torch.Tensor,
) -> torch.Tensor:
    """Hinton et al.'s response-based loss: (1-α)·CE(y, q) + α·T²·KL(p_T ‖ p_S), p = softmax(z/T),
    averaged over the batch. `alpha` is a number or one weight per sample (see `soft_weights`).

    The T² factor keeps the soft-target gradients at the same scale as the hard-target ones
    when T changes. α=0 is plain cross-entropy, α=1 pure distillation.

    >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([0])
    >>> bool(torch.isclose(kd_loss(s, s, y, 4.0, 1.0), torch.tensor(0.0)))
    True
    """
    if not isinstance(alpha, torch.Tensor) and alpha == 0:
        return F.cross_entropy(student_logits, targets)
    hard = F.cross_entropy(student_logits, targets, reduction="none")
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(1)
    return ((1 - alpha) * hard + alpha * temperature**2 * soft).mean()


def label_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Targets as (B, C) class weights: one-hot for class indices, as they are for probabilities."""
    return targets.float() if targets.dim() == 2 else F.one_hot(targets, num_classes).float()


@torch.no_grad()
def soft_weights(teacher_logits: torch.Tensor, targets: torch.Tensor, kd_on: str) -> torch.Tensor | None:
    """Per-sample weights of the soft-target term (`distill.kd_on`): None for `all`; for
    `teacher_correct` 1 where the teacher's top-1 class is one of the sample's labels (after
    mixing, either mixed class) and 0 elsewhere; for `confidence` the teacher's probability of
    the labels, Σ_c y_c·softmax(z)_c.

    >>> z = torch.tensor([[3.0, 0.0], [3.0, 0.0]]); y = torch.tensor([0, 1])
    >>> soft_weights(z, y, "teacher_correct").tolist()
    [1.0, 0.0]
    """
    if kd_on == "all":
        return None
    labels = label_weights(targets, teacher_logits.shape[1]).to(teacher_logits.device)
    if kd_on == "teacher_correct":
        return (labels.gather(1, teacher_logits.argmax(1, keepdim=True)).squeeze(1) > 0).float()
    return (F.softmax(teacher_logits.float(), dim=1) * labels).sum(1)
