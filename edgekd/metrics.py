"""What the report measures about a model: accuracy, MACs, parameters, bytes."""

from __future__ import annotations

from typing import Callable

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader

from edgekd.errors import NotFinite


@torch.no_grad()
def accuracy(
    model: nn.Module, loader: DataLoader, device: torch.device, view: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> float:
    """Top-1 accuracy in [0, 1] (inputs through `view` if given); restores the model's train/eval mode.
    NotFinite when a logit is NaN or infinite."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in loader:
            x = x.to(device)
            logits = model(view(x) if view else x)
            broken = int((~torch.isfinite(logits)).any(1).sum())
            if broken:  # argmax of NaN "predicts" a class: an accuracy from it would be a lie
                raise NotFinite(f"its logits are NaN or infinite for {broken} of {len(x)} images in a batch (its weights diverged or overflow)")
            correct += int((logits.argmax(1).cpu() == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def state_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as stored (fp32 weights → 4 bytes each)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@torch.no_grad()
def measure(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """MACs for one sample (batch 1), trainable parameter count, and state bytes."""
    was_training = model.training
    model.eval()
    macs, _ = tp.utils.count_ops_and_params(model, example_input[:1])
    model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return {"macs": int(macs), "params": int(params), "size_bytes": state_bytes(model)}
