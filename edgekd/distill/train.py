"""The one training loop: teacher training (α=0, no teacher) and every recovery phase."""

from __future__ import annotations

import math
from typing import Callable

import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader

from edgekd.distill.config import DistillConfig, TrainConfig
from edgekd.distill.methods import methods
from edgekd.errors import EdgekdError


class TrainingDiverged(EdgekdError):
    """The loss became NaN or infinite; the last good checkpoint is untouched."""


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    opt = config.optimizer
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=opt.momentum > 0)


def fit(
    student: nn.Module,
    teacher: nn.Module | None,
    loader: DataLoader,
    config: TrainConfig,
    *,
    device: torch.device,
    description: str,
    progress: Progress | None = None,
    after_backward: Callable[[nn.Module], None] | None = None,
) -> list[float]:
    """Train `student` in place for `config.epochs`; returns the mean loss of each epoch.

    With a teacher and a DistillConfig the loss is the configured distillation method;
    otherwise plain cross-entropy. The loader's own seeded generator fixes the batch order."""
    if config.epochs == 0:
        return []
    distill = config if isinstance(config, DistillConfig) else DistillConfig(alpha=0, epochs=config.epochs)
    method = methods.get(distill.method)(distill, teacher, student)
    params = [p for p in student.parameters() if p.requires_grad] + list(method.parameters())
    optimizer = make_optimizer(params, config)
    total_steps = config.epochs * len(loader)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
        if config.schedule == "cosine"
        else None
    )
    task = progress.add_task(description, total=config.epochs) if progress else None
    epoch_losses: list[float] = []
    student.train()
    try:
        for epoch in range(1, config.epochs + 1):
            running, batches = 0.0, 0
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = method(x, y)
                if not math.isfinite(loss.item()):
                    raise TrainingDiverged(
                        f"{description}: the loss became {loss.item()} in epoch {epoch}, batch {batches + 1}. "
                        "The student was not saved; the last good checkpoint is intact. "
                        "Lower the learning rate (e.g. --set distill.lr=…) or set grad_clip."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if after_backward is not None:
                    after_backward(student)
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                if scheduler:
                    scheduler.step()
                running += loss.item()
                batches += 1
            epoch_losses.append(running / max(batches, 1))
            if progress and task is not None:
                progress.update(task, advance=1, description=f"{description} loss {epoch_losses[-1]:.4f}")
    finally:
        method.close()
    student.eval()
    return epoch_losses
