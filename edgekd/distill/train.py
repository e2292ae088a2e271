"""The one training loop: teacher training (cross-entropy) and every recovery phase."""

from __future__ import annotations

import math
from typing import Callable

import torch
from rich.progress import Progress
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from edgekd.data.augment import TrainBatches
from edgekd.distill.config import TrainConfig
from edgekd.distill.methods import Objective
from edgekd.distributed import Distributed
from edgekd.errors import EdgekdError
from edgekd.outputs import Inputs, logits_of, run_model


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(EdgekdError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is untouched.

    The training loop knows the learning rate it used, the runner knows which recipe field set
    it: `blame` adds that field to the advice (the innermost caller's word stands)."""

    def __init__(self, what: str, lr: float):
        super().__init__(what)
        self.what, self.lr = what, lr
        self.settings: tuple[str, str] | None = None

    def blame(self, lr_setting: str, clip_setting: str) -> TrainingDiverged:
        if self.settings is None:
            self.settings = (lr_setting, clip_setting)
        return self

    def __str__(self) -> str:
        if self.settings is None:
            advice = f"Lower the learning rate ({self.lr:g}) or set grad_clip."
        else:
            lr_setting, clip_setting = self.settings
            advice = (
                f"The learning rate was {self.lr:g}, from {lr_setting}: lower it (e.g. --set {lr_setting}={self.lr / 10:g}) "
                f"or set {clip_setting} (e.g. --set {clip_setting}=1)."
            )
        return f"{self.what} Nothing of this training was saved; the last good checkpoint is intact. {advice}"


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    opt = config.optimizer
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, nesterov=opt.momentum > 0)


def _check_finite(value: float, description: str, epoch: int, batch: int, lr: float) -> None:
    if not math.isfinite(value):
        raise TrainingDiverged(f"{description}: the loss became {value} in epoch {epoch}, batch {batch}.", lr)


@torch.no_grad()
def _check_weights(model: nn.Module, description: str, epoch: int, lr: float, probe: Inputs | None = None) -> None:
    """The loss is computed before each update, so the last update of an epoch is checked here: the
    weights and BatchNorm statistics it produced, and the outputs they give on `probe` (eval mode,
    so nothing changes) — finite weights can still overflow."""
    broken = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise TrainingDiverged(
            f"{description}: the weights became NaN or infinite in epoch {epoch} ({', '.join(broken[:3])}"
            f"{' …' if len(broken) > 3 else ''}).", lr,
        )
    if probe is None:
        return
    was_training = model.training
    output = logits_of(run_model(model.eval(), probe))
    model.train(was_training)
    if not torch.isfinite(output).all():
        raise TrainingDiverged(f"{description}: the outputs became NaN or infinite after the last update of epoch {epoch} (the weights overflow).", lr)


Batches = DataLoader | TrainBatches


def _pretrain(
    student: nn.Module, objective: Objective, loader: Batches, config: TrainConfig, device: torch.device,
    description: str, dist: Distributed,
) -> None:
    """A warm-up on the terms' own losses (FitNets stage 1); parameters they don't reach keep no gradient
    and stay put (so no DDP wrapper here: gradients are averaged by hand)."""
    params = [p for p in student.parameters() if p.requires_grad] + objective.parameters()
    optimizer = make_optimizer(params, config.model_copy(update={"optimizer": config.optimizer.model_copy(update={"weight_decay": 0.0})}))
    student.train()
    for epoch in range(1, objective.pretrain_epochs() + 1):
        _start_epoch(loader, epoch)
        for batch, (x, y, *_) in enumerate(loader, 1):
            loss = objective.pretrain_loss(x.to(device), y.to(device))
            _check_finite(dist.mean(loss.item(), device), f"{description} (stage 1)", epoch, batch, config.optimizer.lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            dist.average_gradients(params)
            optimizer.step()
        _check_weights(student, f"{description} (stage 1)", epoch, config.optimizer.lr)


def _start_epoch(loader: Batches, epoch: int) -> None:
    """A distributed sampler reshuffles per epoch only when told which epoch it is; training
    batches also pick the epoch's augmented view."""
    if isinstance(loader, TrainBatches):
        loader.set_epoch(epoch)
    elif isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def fit(
    student: nn.Module,
    objective: Objective,
    loader: Batches,
    config: TrainConfig,
    *,
    device: torch.device,
    description: str,
    progress: Progress | None = None,
    after_backward: Callable[[nn.Module], None] | None = None,
    stop_after_epoch: int | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    dist: Distributed | None = None,
) -> list[float]:
    """Train `student` in place with `objective` for `config.epochs`; returns each epoch's mean loss.

    The learning-rate schedule (and an α schedule) spans `config.epochs` even when `stop_after_epoch`
    ends training early (an early-stopped teacher is the full run, cut short). The loader's seeded
    generator fixes the batch order; `TrainBatches` also fix each epoch's augmented view. The objective is closed (hooks removed) however the loop ends.
    `precision` bf16/fp16 trains under autocast (fp16 with a gradient scaler); `channels_last`
    moves the student and its inputs to NHWC. With `dist` (several ranks) the student trains
    inside a fresh DistributedDataParallel wrapper and the objective's own parts have their
    gradients averaged by hand."""
    dist = dist or Distributed()
    with objective:
        if config.epochs == 0:
            return []
        if objective.pretrain_epochs():
            _pretrain(student, objective, loader, config, device, description, dist)
        params = [p for p in student.parameters() if p.requires_grad] + objective.parameters()
        optimizer = make_optimizer(params, config)
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs * len(loader), 1))
            if config.schedule == "cosine"
            else None
        )
        epochs = min(config.epochs, stop_after_epoch or config.epochs)
        task = progress.add_task(description, total=epochs, unit="epochs") if progress else None
        epoch_losses: list[float] = []
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        if channels_last:
            student.to(memory_format=memory_format)
        autocast = torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=precision != "fp32")
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        student.train()
        objective.phase.student_forward = dist.wrap(student)
        last_step = max(config.epochs * len(loader) - 1, 1)
        for epoch in range(1, epochs + 1):
            _start_epoch(loader, epoch)
            running = 0.0
            for batch, (x, y, *keys) in enumerate(loader, 1):
                objective.phase.progress = ((epoch - 1) * len(loader) + batch - 1) / last_step
                x = x.to(device, non_blocking=True, memory_format=memory_format)
                with autocast:
                    loss = objective(x, y.to(device, non_blocking=True), *keys)
                value = dist.mean(loss.item(), device)
                _check_finite(value, description, epoch, batch, config.optimizer.lr)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                dist.average_gradients(objective.parameters())
                scaler.unscale_(optimizer)
                if after_backward is not None:
                    after_backward(student)
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if scheduler:
                    scheduler.step()
                running += value
            _check_weights(student, description, epoch, config.optimizer.lr, probe=objective.phase.student_view(x))
            epoch_losses.append(running / max(len(loader), 1))
            if progress and task is not None:
                progress.update(task, advance=1, description=f"{description} loss {epoch_losses[-1]:.4f}")
        objective.phase.student_forward = None
        student.to(memory_format=torch.contiguous_format).eval()
        objective.finish()
        return epoch_losses
