"""Distillation for sequences.

Token level: one term, `token_divergence`, compares the teacher's and the student's
next-token distributions at every real target token, with a choice of divergence
(TRL's GKD names them the same way):

* `forward_kl` — KL(p_T ‖ p_S), mass-covering (the student spreads over what the teacher allows);
* `reverse_kl` — KL(p_S ‖ p_T), mode-seeking (the student commits to the teacher's main mode);
* `jsd` — the generalized Jensen-Shannon divergence with mixture M = β·p_T + (1-β)·p_S:
  β·KL(p_T ‖ M) + (1-β)·KL(p_S ‖ M). β = 0 and β = 1 are forward and reverse KL exactly; between
  them JSD_β / β → KL(p_T ‖ p_S) as β → 0 and JSD_β / (1-β) → KL(p_S ‖ p_T) as β → 1, and at β = 0.5
  it is symmetric in teacher and student.

Both distributions are softmax(z / T); the result is multiplied by T², as `kd_loss` does, so the
gradients keep their scale when the temperature changes. The mean runs over the masked tokens.

Sequence level: the teacher's greedy generations become the student's targets. `greedy_generate_fn`
turns `generate` (the loop shared with ONNX Runtime, `edgekd.decoding`) into the text `Generate` that
`edgekd.distill.generation_cache.cached_generate` caches; the answers are then ordinary targets — in
the runner (`distill.targets: teacher`, `Run.teacher_answers`) the training split's, re-encoded by
`edgekd.data.text.with_training_targets`; for step-by-step `edgekd.distill.stepbystep.encode_pairs`.

>>> student = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]]); mask = torch.tensor([[True, False]])
>>> round(float(token_divergence(student, student, mask, divergence="jsd")), 6)  # equal distributions
0.0
>>> teacher = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1.0, 1.0]]]))
>>> uniform = torch.zeros(1, 2, 3)  # KL(teacher ‖ uniform) = Σ p log(3p) over the one real token
>>> round(float(token_divergence(uniform, teacher, mask)), 4), round(0.5 * math.log(1.5) + 0.5 * math.log(0.75), 4)
(0.0589, 0.0589)
"""

from __future__ import annotations

import math
from typing import Literal, Sequence, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.decoding import Generation, NextTokenLogits, greedy_decode
from edgekd.distill.prompting import Generate
from edgekd.distill.stepbystep import Architecture, Tokens, check_architecture
from edgekd.errors import InputError
from edgekd.outputs import logits_of, run_model
from edgekd.registry import unknown_name

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    divergence: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """T² × the mean divergence over the tokens where `mask` is True.

    Logits are (..., vocab) — (batch, length, vocab) for sequences — and `mask` has their
    leading shape (None: every position). The teacher may be given as log-probabilities
    (e.g. a top-k cache's reconstruction): softmax treats them like logits."""
    if divergence not in DIVERGENCES:
        raise InputError(unknown_name("divergence", divergence, DIVERGENCES))
    if not 0.0 <= beta <= 1.0:
        raise InputError(f"beta must lie in [0, 1], got {beta}")
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise InputError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ in shape")
    if mask is None:
        mask = torch.ones(student_logits.shape[:-1], dtype=torch.bool, device=student_logits.device)
    mask = mask.bool()
    if not mask.any():
        return student_logits.sum() * 0.0  # a zero that keeps the graph (no real token in the batch)
    student = F.log_softmax(at_least_float32(student_logits[mask]) / temperature, dim=-1)
    teacher = F.log_softmax(at_least_float32(teacher_logits[mask].detach()) / temperature, dim=-1)
    return temperature**2 * per_token_divergence(student, teacher, divergence, beta).mean()


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 logits are widened before softmax; float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def per_token_divergence(student: torch.Tensor, teacher: torch.Tensor, divergence: str, beta: float) -> torch.Tensor:
    """Divergence per row of log-probabilities (tokens, vocab) → (tokens,)."""
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0.0):
        return kl(teacher, student)
    if divergence == "reverse_kl" or (divergence == "jsd" and beta == 1.0):
        return kl(student, teacher)
    mixture = torch.logsumexp(torch.stack([teacher + math.log(beta), student + math.log(1 - beta)]), dim=0)
    return beta * kl(teacher, mixture) + (1 - beta) * kl(student, mixture)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row from log-probabilities; terms where p = 0 count 0 (and pass no NaN gradient)."""
    p = log_p.exp()
    absent = p == 0
    return (p * (log_p.masked_fill(absent, 0.0) - log_q.masked_fill(absent, 0.0))).sum(-1)


class TorchNextToken:
    """`NextTokenLogits` of a PyTorch model called with Hugging Face's keyword inputs."""

    def __init__(self, model: nn.Module, device: torch.device | str | None = None):
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, inputs: dict[str, np.ndarray], last: np.ndarray) -> np.ndarray:
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        logits = logits_of(run_model(self.model, tensors))
        rows = torch.arange(len(last), device=self.device)
        return logits[rows, torch.from_numpy(last).to(self.device)].float().cpu().numpy()


def generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    decoder_start_token_id: int | None = None,
) -> Generation:
    """The model's greedy continuation of each prompt (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    try:
        step: NextTokenLogits = TorchNextToken(model)
        return greedy_decode(
            step, prompts, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id, decoder_start_token_id=decoder_start_token_id,
        )  # fmt: skip
    finally:
        model.train(was_training)


def greedy_generate_fn(model: nn.Module, tokens: Tokens, architecture: Architecture, *, max_new_tokens: int) -> Generate:
    """A text `Generate` (what `edgekd.distill.generation_cache.cached_generate` caches) on `generate`:
    it serves any model called with Hugging Face's keyword inputs, built-in ones without `.generate`
    too, and decodes exactly as ONNX Runtime does on the exported file. Sources are encoded as
    `encode_pairs` encodes them (a seq2seq source ends in EOS); outputs stop before EOS."""
    check_architecture(architecture)

    def run(prompts: list[str]) -> list[str]:
        suffix = [tokens.eos_id] if architecture == "seq2seq" else []
        generation = generate(
            model, [tokens.encode(p) + suffix for p in prompts], max_new_tokens=max_new_tokens, eos_token_id=tokens.eos_id,
            pad_token_id=tokens.pad_id, decoder_start_token_id=tokens.start_id if architecture == "seq2seq" else None,
        )  # fmt: skip
        return [tokens.decode(row) for row in generation.tokens]

    return run
