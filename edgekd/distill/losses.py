"""Distillation losses as plain functions of tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al.'s response-based loss: (1-α)·CE(y, q) + α·T²·KL(p_T ‖ p_S), p = softmax(z/T).

    The T² factor keeps the soft-target gradients at the same scale as the hard-target ones
    when T changes. α=0 is plain cross-entropy, α=1 pure distillation.

    >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([0])
    >>> bool(torch.isclose(kd_loss(s, s, y, 4.0, 1.0), torch.tensor(0.0)))
    True
    """
    hard = F.cross_entropy(student_logits, targets) if alpha < 1 else student_logits.new_zeros(())
    if alpha == 0:
        return hard
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return (1 - alpha) * hard + alpha * temperature**2 * soft
