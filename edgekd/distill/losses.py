"""Distillation losses as plain functions of tensors.

Targets are class indices (B,) or, after mixup/cutmix, class probabilities (B, C); every loss
here accepts both, as `F.cross_entropy` does."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.sequence import per_token_divergence, token_divergence
from edgekd.facts import IGNORE_INDEX


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float | torch.Tensor,
    divergence: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """Hinton et al.'s response-based loss: (1-α)·CE(y, q) + α·T²·KL(p_T ‖ p_S), p = softmax(z/T),
    averaged over the batch. `alpha` is a number or one weight per sample (see `soft_weights`).
    `divergence` replaces the forward KL by reverse KL or the generalized JSD with `beta`
    (edgekd.distill.sequence); per-token logits (B, L, V) go to `token_kd_loss`.

    The T² factor keeps the soft-target gradients at the same scale as the hard-target ones
    when T changes. α=0 is plain cross-entropy, α=1 pure distillation.

    >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([0])
    >>> bool(torch.isclose(kd_loss(s, s, y, 4.0, 1.0), torch.tensor(0.0)))
    True
    """
    if student_logits.dim() == 3:
        return token_kd_loss(student_logits, teacher_logits, targets, temperature, alpha, divergence, beta)
    if not isinstance(alpha, torch.Tensor) and alpha == 0:
        return F.cross_entropy(student_logits, targets)
    hard = F.cross_entropy(student_logits, targets, reduction="none")
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = per_token_divergence(log_p_student, log_p_teacher, divergence, beta)
    return ((1 - alpha) * hard + alpha * temperature**2 * soft).mean()


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the scored tokens of (B, L, V) logits and (B, L) targets (IGNORE_INDEX elsewhere)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


def token_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float | torch.Tensor,
    divergence: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """Token-level KD: (1-α)·CE + α·T²·divergence, both averaged over the real target tokens
    (targets ≠ IGNORE_INDEX; the divergence through `token_divergence`). A tensor α holds one
    weight per real target token (`soft_weights` of per-token logits)."""
    hard = token_cross_entropy(student_logits, targets)
    if not isinstance(alpha, torch.Tensor) and alpha == 0:
        return hard
    mask = targets != IGNORE_INDEX
    if not isinstance(alpha, torch.Tensor):
        soft = token_divergence(student_logits, teacher_logits, mask, divergence=divergence, beta=beta, temperature=temperature)  # type: ignore[arg-type]
        return (1 - alpha) * hard + alpha * soft
    if not mask.any():
        return student_logits.sum() * 0.0
    # One weight per real token: the response loss over the (N, V) rows of those tokens.
    return kd_loss(student_logits[mask].float(), teacher_logits[mask].detach().float(), targets[mask], temperature, alpha, divergence, beta)


def label_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Targets as (B, C) class weights: one-hot for class indices, as they are for probabilities."""
    return targets.float() if targets.dim() == 2 else F.one_hot(targets, num_classes).float()


@torch.no_grad()
def soft_weights(teacher_logits: torch.Tensor, targets: torch.Tensor, kd_on: str) -> torch.Tensor | None:
    """Per-sample weights of the soft-target term (`distill.kd_on`): None for `all`; for
    `teacher_correct` 1 where the teacher's top-1 class is one of the sample's labels (after
    mixing, either mixed class) and 0 elsewhere; for `confidence` the teacher's probability of
    the labels, Σ_c y_c·softmax(z)_c. Per-token logits (B, L, V) get one weight per real target token.

    >>> z = torch.tensor([[3.0, 0.0], [3.0, 0.0]]); y = torch.tensor([0, 1])
    >>> soft_weights(z, y, "teacher_correct").tolist()
    [1.0, 0.0]
    """
    if kd_on == "all":
        return None
    if teacher_logits.dim() == 3:  # per token: one weight for each real target token, in mask order
        mask = targets != IGNORE_INDEX
        return soft_weights(teacher_logits[mask], targets[mask], kd_on)
    labels = label_weights(targets, teacher_logits.shape[1]).to(teacher_logits.device)
    if kd_on == "teacher_correct":
        return (labels.gather(1, teacher_logits.argmax(1, keepdim=True)).squeeze(1) > 0).float()
    return (F.softmax(teacher_logits.float(), dim=1) * labels).sum(1)
