"""Training a text student with the step-by-step objective, and scoring it by exact match of the label.

`train_text_student` is the loop for the students of `edgekd.distill.stepbystep`: each epoch visits the
examples in a seeded order, encodes a batch of both tasks (`encode_examples`; the label task alone when
`rationales` is False, which is label-only fine-tuning, or standard distillation with
`label_source: teacher`), and takes an AdamW step on `step_by_step_loss` under a cosine schedule. It
serves built-in models (`t5_s`, `gpt_s`) and Hugging Face ones alike: `model_forward` calls either with
keyword inputs and finds the logits in what it returns.

`train_prompted_teacher` fine-tunes a teacher on a seed set with rationales to answer a
`TeacherPrompting`'s prompts in its answer format, so a model edgekd trains can then write rationales
for the training inputs through `teacher_rationales` (how `bench/step_by_step.py` makes its teacher).

`label_exact_match` is the inference side: only the label task runs, greedily, and the label read
back from each generation is compared with the reference.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from edgekd.data.rationales import RationaleExample, exact_match
from edgekd.data.tokenizer import TextTokenizer
from edgekd.distill.prompting import TeacherPrompting
from edgekd.distill.sequence import greedy_generate_fn
from edgekd.distill.stepbystep import (
    Architecture, Forward, StepByStepConfig, TaskBatches, Tokens, TrainingPair, check_architecture, encode_examples,
    encode_pairs, label_pairs, predict_labels, step_by_step_loss,
)
from edgekd.errors import InputError
from edgekd.outputs import logits_of


def text_tokens(tokenizer: TextTokenizer) -> Tokens:
    """The `Tokens` view of a trained or loaded tokenizer (no special tokens added on encode)."""
    if tokenizer.eos_id is None:
        raise InputError(f"the tokenizer ({tokenizer.source}) has no end token; generated answers need one to stop")
    return Tokens(
        encode=lambda text: tokenizer.encode([text], special_tokens=False)[0], decode=tokenizer.decode,
        pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id,
    )


def model_forward(model: nn.Module, architecture: Architecture) -> Forward:
    """Logits aligned with a `TokenBatch`'s targets, for any model called with Hugging Face's keyword inputs."""
    check_architecture(architecture)

    def forward(batch):
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if architecture == "seq2seq":
            inputs["decoder_input_ids"] = batch.decoder_input_ids
        return logits_of(model(**inputs))

    return forward


def encode_batch(
    examples: Sequence[RationaleExample], config: StepByStepConfig, tokens: Tokens, architecture: Architecture, *,
    rationales: bool, max_length: int | None = None,
) -> TaskBatches:
    """Both tasks of the examples, or (`rationales` False) the label task alone."""
    if rationales:
        return encode_examples(examples, config, tokens, architecture, max_length)
    return TaskBatches(encode_pairs(label_pairs(examples, config), tokens, architecture, max_length), None)


def prompting_pairs(examples: Sequence[RationaleExample], prompting: TeacherPrompting) -> list[TrainingPair]:
    """What a teacher fine-tuned on a seed set with rationales learns to write: for each example, its
    prompt (without shots) → the prompting's answer with the example's rationale and label, which the
    prompting's pattern reads back."""
    pairs = []
    for index, example in enumerate(examples):
        if not (example.rationale or "").strip() or not (example.label or "").strip():
            raise InputError(f"seed example {index} ({example.input[:60]!r}) needs a rationale and a label to teach the teacher")
        answer = prompting.answer.format(rationale=example.rationale, label=example.label)
        pairs.append(TrainingPair(prompting.template.format(input=example.input), answer, "label"))
    return pairs


Encode = Callable[[list[Any]], TaskBatches]
"""A list of training items (examples, pairs) in, the batch to take one step on out."""


def train_text_model(
    model: nn.Module, items: Sequence[Any], encode: Encode, architecture: Architecture, *, epochs: int,
    alpha: float = 1.0, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 0,
) -> list[float]:
    """Train `model` in place on `step_by_step_loss` (AdamW, cosine schedule, a seeded order per epoch);
    returns each epoch's mean loss. Every item is encoded before the first step, so one that cannot be
    trained on (no label, an empty rationale, too long) fails at once."""
    if not items:
        raise InputError("no training examples: the model has nothing to learn from")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be at least 1, not {epochs} and {batch_size}")
    encode(list(items))
    generator = torch.Generator().manual_seed(seed)
    forward = model_forward(model, architecture)
    steps_per_epoch = math.ceil(len(items) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(items), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(order), batch_size):
            loss = step_by_step_loss(forward, encode([items[i] for i in order[start : start + batch_size]]), alpha)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        losses.append(total / steps_per_epoch)
    model.eval()
    return losses


def train_text_student(
    model: nn.Module, examples: Sequence[RationaleExample], config: StepByStepConfig, tokens: Tokens,
    architecture: Architecture, *, rationales: bool = True, max_length: int | None = None, **training: Any,
) -> list[float]:
    """A step-by-step student (`rationales` True) or a label-only one, trained with `train_text_model`
    (`training`: epochs, batch_size, lr, weight_decay, seed)."""
    alpha = config.alpha if rationales and config.alpha is not None else 1.0
    return train_text_model(
        model, examples, lambda chosen: encode_batch(chosen, config, tokens, architecture, rationales=rationales, max_length=max_length),
        architecture, alpha=alpha, **training,
    )


def train_prompted_teacher(
    model: nn.Module, seed_examples: Sequence[RationaleExample], prompting: TeacherPrompting, tokens: Tokens,
    architecture: Architecture, *, max_length: int | None = None, **training: Any,
) -> list[float]:
    """Fine-tune a teacher to answer `prompting`'s prompts in its answer format (`prompting_pairs`)."""
    pairs = prompting_pairs(seed_examples, prompting)
    return train_text_model(
        model, pairs, lambda chosen: TaskBatches(encode_pairs(chosen, tokens, architecture, max_length), None), architecture,
        **training,
    )


def label_exact_match(
    model: nn.Module, examples: Sequence[RationaleExample], config: StepByStepConfig, tokens: Tokens,
    architecture: Architecture, *, max_new_tokens: int, batch_size: int = 64,
) -> tuple[float, list[str]]:
    """Exact match of the labels the model writes for the `predict:` prompts against the ground truth,
    and the predictions. Greedy decoding, the loop ONNX Runtime runs on the exported model."""
    generate = greedy_generate_fn(model, tokens, architecture, max_new_tokens=max_new_tokens)
    inputs = [e.input for e in examples]
    predictions: list[str] = []
    for start in range(0, len(inputs), batch_size):
        predictions += predict_labels(generate, inputs[start : start + batch_size], config)
    references = []
    for index, example in enumerate(examples):
        if example.label is None:
            raise InputError(f"test example {index} ({example.input[:60]!r}) has no ground-truth label to score against")
        references.append(example.label)
    return exact_match(predictions, references), predictions
