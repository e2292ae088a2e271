"""What the report measures about a model: accuracy, MACs, parameters, bytes; and for
generation, token accuracy, exact match and perplexity."""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader

from edgekd.errors import NotFinite
from edgekd.facts import IGNORE_INDEX
from edgekd.outputs import Inputs, first_samples, logits_of, run_model


@torch.no_grad()
def accuracy(
    model: nn.Module, loader: DataLoader, device: torch.device, view: Callable[[torch.Tensor], Inputs] | None = None
) -> float:
    """Top-1 accuracy in [0, 1] (inputs through `view` if given: a tensor, or a text batch's keyword
    arguments); the model may return anything `logits_of` reads. Restores the model's train/eval mode.
    NotFinite when a logit is NaN or infinite."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in loader:
            x = x.to(device)
            logits = logits_of(run_model(model, view(x) if view else x))
            broken = int((~torch.isfinite(logits)).any(1).sum())
            if broken:  # argmax of NaN "predicts" a class: an accuracy from it would be a lie
                raise NotFinite(f"its logits are NaN or infinite for {broken} of {len(x)} samples in a batch (its weights diverged or overflow)")
            correct += int((logits.argmax(1).cpu() == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def state_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as stored (fp32 weights → 4 bytes each)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@torch.no_grad()
def measure(model: nn.Module, example_input: Inputs) -> dict[str, int]:
    """MACs for one sample (batch 1), trainable parameter count, and state bytes; the example is a tensor
    or a text batch's keyword arguments."""
    was_training = model.training
    model.eval()
    # For keyword inputs torch-pruning prints that it assumes batch 1 on every call, which it is.
    with contextlib.redirect_stdout(io.StringIO()):
        macs, _ = tp.utils.count_ops_and_params(model, first_samples(example_input))
    model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return {"macs": int(macs), "params": int(params), "size_bytes": state_bytes(model)}


# Generation: per-token logits (B, T, V) against per-token targets (B, T), IGNORE_INDEX where nothing is scored.

@dataclass
class GenerationScores:
    """Sums over scored tokens and sequences; add batches with `update`, read rates with `result`.

    Exact match is counted under teacher forcing: a sequence matches when every one of its target
    tokens (the end token included) is the model's top choice after the true prefix — exactly when
    greedy decoding would reproduce the target, so it needs no generation loop.

    >>> scores = GenerationScores()
    >>> scores.update(torch.tensor([[[2.0, 0.0], [0.0, 2.0]]]), torch.tensor([[0, -100]]))
    >>> scores.result()["token_accuracy"], scores.result()["exact_match"]
    (1.0, 1.0)
    """

    correct: int = 0
    tokens: int = 0
    nll: float = 0.0
    matched: int = 0
    sequences: int = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        scored = targets != IGNORE_INDEX
        safe = targets.masked_fill(~scored, 0)
        hits = (logits.argmax(-1) == safe) & scored
        log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        has_target = scored.any(dim=-1)
        self.correct += int(hits.sum())
        self.tokens += int(scored.sum())
        self.nll -= float((log_probs * scored).sum())
        self.matched += int(((hits | ~scored).all(dim=-1) & has_target).sum())
        self.sequences += int(has_target.sum())

    def result(self) -> dict[str, float]:
        """token_accuracy and exact_match in [0, 1]; perplexity = exp(mean negative log-likelihood per token)."""
        return {
            "token_accuracy": self.correct / max(self.tokens, 1),
            "exact_match": self.matched / max(self.sequences, 1),
            "perplexity": math.exp(self.nll / max(self.tokens, 1)),
        }


@torch.no_grad()
def generation_metrics(
    model: nn.Module, loader: DataLoader, device: torch.device, view: Callable[[torch.Tensor], Inputs]
) -> dict[str, float]:
    """Token accuracy, teacher-forced exact match and perplexity over a loader of (token ids, per-token
    targets) batches, the inputs through `view`. Restores the model's train/eval mode; NotFinite when a
    logit is NaN or infinite."""
    was_training = model.training
    model.eval()
    scores = GenerationScores()
    try:
        for x, y in loader:
            logits = logits_of(run_model(model, view(x.to(device)))).float().cpu()
            broken = int((~torch.isfinite(logits)).flatten(1).any(1).sum())
            if broken:
                raise NotFinite(f"its logits are NaN or infinite for {broken} of {len(x)} sequences in a batch (its weights diverged or overflow)")
            scores.update(logits, y)
    finally:
        model.train(was_training)
    return scores.result()


def generation_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Token accuracy, teacher-forced exact match and perplexity of one batch (see GenerationScores)."""
    scores = GenerationScores()
    scores.update(logits, targets)
    return scores.result()
