"""One adapter between models and everything that calls them: what a batch's
inputs look like to a model, and where its logits are in what it returns.

Inputs are a tensor (an image batch), a tuple (positional arguments) or a mapping
(keyword arguments: a text batch's `input_ids`, `attention_mask`, …). Outputs may
be a tensor, a tuple or list (its first element), a mapping with "logits", or a
Hugging Face `ModelOutput` (its `.logits`).

A leaf module (torch and edgekd.errors only), so data, models, pruning, distillation,
export and metrics all read outputs through it. `edgekd.decoding` stays numpy-only for the
bench's fresh processes: its `NextTokenLogits` adapters do the reading (the PyTorch one,
`edgekd.distill.sequence.TorchNextToken`, through `logits_of`).

>>> logits_of((torch.ones(2, 3), "hidden states"))
tensor([[1., 1., 1.],
        [1., 1., 1.]])
>>> logits, targets = flatten_tokens(torch.zeros(2, 5, 7), torch.zeros(2, 5, dtype=torch.long))
>>> tuple(logits.shape), tuple(targets.shape)
((10, 7), (10,))
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence, Union

import torch
from torch import nn

from edgekd.errors import InputError

Inputs = Union[torch.Tensor, tuple, Mapping[str, Any]]


def run_model(model: nn.Module, inputs: Inputs) -> Any:
    """Call `model` on a batch's inputs: a tensor or tuple positionally, a mapping by keyword."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def logits_of(output: Any) -> torch.Tensor:
    """The logits in whatever a model returned (see the module docstring)."""
    found = output
    if isinstance(found, (tuple, list)) and found:
        found = found[0]  # which may itself be a mapping or a ModelOutput
    if isinstance(found, Mapping):  # a ModelOutput is a mapping too (of the fields that were set)
        found = found.get("logits")
    elif not isinstance(found, torch.Tensor):
        found = getattr(found, "logits", None)
    if not isinstance(found, torch.Tensor):
        raise InputError(
            f"the model returned {type(output).__name__}, which holds no logits tensor: return a tensor, "
            "a tuple or list whose first element is the logits, a dict with 'logits', or a Hugging Face ModelOutput"
        )
    return found


class LogitsOnly(nn.Module):
    """`model` called with its inputs positionally, or by keyword in the order of `names`, returning
    only its logits: the one output an exported graph has, whatever the model returns."""

    def __init__(self, model: nn.Module, names: Sequence[str] = ()):
        super().__init__()
        self.model, self.names = model, tuple(names)
        # Hugging Face decoders would also build (and return) a KV cache; an exported graph has none.
        accepts = inspect.signature(model.forward).parameters
        self.extra = {"use_cache": False} if "use_cache" in accepts else {}

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        if self.names:
            return logits_of(self.model(**dict(zip(self.names, tensors)), **self.extra))
        return logits_of(self.model(*tensors, **self.extra))


def move_inputs(inputs: Inputs, device: torch.device | str) -> Inputs:
    """The same inputs with every tensor on `device`."""
    if isinstance(inputs, Mapping):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if isinstance(inputs, tuple):
        return tuple(v.to(device) if isinstance(v, torch.Tensor) else v for v in inputs)
    return inputs.to(device)


def first_samples(inputs: Inputs, count: int = 1) -> Inputs:
    """The first `count` samples of a batch's inputs (every tensor sliced along its batch dimension)."""
    if isinstance(inputs, Mapping):
        return {k: v[:count] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if isinstance(inputs, tuple):
        return tuple(v[:count] if isinstance(v, torch.Tensor) else v for v in inputs)
    return inputs[:count]


def flatten_tokens(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logits (B, T, V) and targets (B, T) as (B·T, V) and (B·T,), ready for cross-entropy;
    per-sample ones (B, C) and (B,) pass through. Targets equal to -100 (edgekd.facts.IGNORE_INDEX) are not scored."""
    if logits.dim() == targets.dim() + 1 and logits.dim() > 2:
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    return logits, targets
