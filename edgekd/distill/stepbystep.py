"""Distilling step by step (Hsieh et al., 2023): train a student on labels and on a teacher's rationales.

Each example gives the student a label task, marked by a prefix (`predict: <input>` → label), and a
rationale to learn. `rationale_position` says how:

- `separate`: a second task from the same input (`explain: <input>` → rationale), as in the paper; the
  loss is α·L_label + (1−α)·L_rationale, α = 0.5 by default.
- `after_label`: one target, `<label> Explanation: <rationale>` (Wadhwa et al., 2024, found this order
  better); generation can stop once the label is out.
- `before_label`: one target, `<rationale> Answer: <label>` (chain of thought before the answer).

At inference only the label task runs: `predict_labels` sends `predict: <input>` prompts and reads the
label back from what the model writes, so exact match scores the label alone.

Everything here works on text pairs and token tensors, not on a model class: the loss takes logits
aligned with target ids and a mask (`TokenBatch`), so one objective serves decoder-only (causal LM) and
seq2seq students, Hugging Face or built-in.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, Sequence, get_args

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data.rationales import RationaleExample
from edgekd.distill.prompting import Generate
from edgekd.errors import InputError
from edgekd.registry import unknown_name

RATIONALE_POSITIONS = ("separate", "before_label", "after_label")
LABEL_SOURCES = ("ground_truth", "teacher")
DEFAULT_ALPHA = 0.5

Architecture = Literal["decoder", "seq2seq"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)


def check_architecture(architecture: str) -> None:
    """Text models come as a decoder or as a seq2seq (encoder-decoder) pair."""
    if architecture not in ARCHITECTURES:
        raise InputError(unknown_name("architecture", architecture, ARCHITECTURES))


def _choice(value: str, allowed: Sequence[str], field_name: str) -> None:
    if value not in allowed:
        raise InputError(f"{field_name}: {unknown_name(field_name.replace('_', ' '), value, allowed)}")


@dataclass(frozen=True)
class StepByStepConfig:
    """The step-by-step method's settings. `alpha` weighs the two tasks of `separate` and is refused for the
    one-target positions, where there is only one loss."""

    label_prefix: str = "predict: "
    rationale_prefix: str = "explain: "
    rationale_position: str = "separate"
    label_source: str = "ground_truth"
    alpha: float | None = None
    answer_marker: str = " Answer: "
    explanation_marker: str = " Explanation: "

    def __post_init__(self) -> None:
        _choice(self.rationale_position, RATIONALE_POSITIONS, "rationale_position")
        _choice(self.label_source, LABEL_SOURCES, "label_source")
        if self.alpha is not None:
            if self.rationale_position != "separate":
                raise InputError(
                    f"alpha weighs the label and rationale tasks of rationale_position: separate; with "
                    f"{self.rationale_position} the rationale and label are one target with one loss. Remove alpha."
                )
            if not 0 <= self.alpha <= 1:
                raise InputError(f"alpha must lie in [0, 1] (1 = labels only), not {self.alpha}")
        elif self.rationale_position == "separate":
            object.__setattr__(self, "alpha", DEFAULT_ALPHA)
        if not self.label_prefix.strip():
            raise InputError("prefixes.label is empty; the label task needs a prefix such as 'predict: '")
        if self.rationale_position == "separate" and self.rationale_prefix.strip() in ("", self.label_prefix.strip()):
            raise InputError(
                f"prefixes.rationale {self.rationale_prefix!r} must be non-empty and differ from prefixes.label "
                f"{self.label_prefix!r}: it is all that tells the student which task to do"
            )
        for name in ("answer_marker", "explanation_marker"):
            if not getattr(self, name).strip():
                raise InputError(f"{name} is empty; it separates the label from the rationale in one target")


class TrainingPair(NamedTuple):
    """One source → target text pair; `task` is "label" or "rationale"."""

    source: str
    target: str
    task: str


def _label_of(example: RationaleExample, index: int, config: StepByStepConfig) -> str:
    label = example.label if config.label_source == "ground_truth" else example.teacher_label
    if not (label or "").strip():
        which = "ground-truth label" if config.label_source == "ground_truth" else "teacher label"
        raise InputError(f"example {index} ({example.input[:60]!r}) has no {which}, which label_source: {config.label_source} needs")
    return label  # type: ignore[return-value]


def _rationale_of(example: RationaleExample, index: int) -> str:
    if not (example.rationale or "").strip():
        raise InputError(f"example {index} ({example.input[:60]!r}) has an empty rationale")
    return example.rationale  # type: ignore[return-value]


def label_pairs(examples: Sequence[RationaleExample], config: StepByStepConfig) -> list[TrainingPair]:
    """The label task alone: what label-only fine-tuning (and standard distillation, with teacher labels) trains."""
    return [TrainingPair(config.label_prefix + e.input, _label_of(e, i, config), "label") for i, e in enumerate(examples)]


def training_pairs(
    examples: Sequence[RationaleExample], config: StepByStepConfig
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(label-task pairs, rationale-task pairs); the second list is empty for the one-target positions."""
    if config.rationale_position == "separate":
        rationales = [
            TrainingPair(config.rationale_prefix + e.input, _rationale_of(e, i), "rationale") for i, e in enumerate(examples)
        ]
        return label_pairs(examples, config), rationales
    joined = []
    for index, example in enumerate(examples):
        label, rationale = _label_of(example, index, config), _rationale_of(example, index)
        marker = config.answer_marker if config.rationale_position == "before_label" else config.explanation_marker
        if marker.strip() in label:
            raise InputError(f"example {index}: its label {label!r} contains the marker {marker.strip()!r}, so the label could not be read back")
        target = rationale + marker + label if config.rationale_position == "before_label" else label + marker + rationale
        joined.append(TrainingPair(config.label_prefix + example.input, target, "label"))
    return joined, []


def marker_pattern(marker: str) -> re.Pattern:
    """A marker as it reads back from generated text: tokenizers may decode "Answer:" as "Answer :"."""
    return re.compile(r"\s*".join(re.escape(char) for char in marker.strip() if not char.isspace()))


def extract_label(output: str, config: StepByStepConfig) -> str:
    """The label in what the student wrote for a `predict:` prompt.

    >>> config = StepByStepConfig(rationale_position="before_label")
    >>> extract_label("3 and 4 make 7 Answer : 7", config)
    '7'
    """
    if config.rationale_position == "after_label":
        return marker_pattern(config.explanation_marker).split(output, 1)[0].strip()
    if config.rationale_position == "before_label":
        found = list(marker_pattern(config.answer_marker).finditer(output))
        return output[found[-1].end() :].strip() if found else ""
    return output.strip()


def label_prompts(inputs: Sequence[str], config: StepByStepConfig) -> list[str]:
    return [config.label_prefix + text for text in inputs]


def predict_labels(generate: Generate, inputs: Sequence[str], config: StepByStepConfig) -> list[str]:
    """Inference: only the label task runs; returns the labels read from the generations."""
    return [extract_label(output, config) for output in generate(label_prompts(inputs, config))]


@dataclass(frozen=True)
class Tokens:
    """A tokenizer as this module needs it. `encode` must not add special tokens: sources and targets are
    encoded apart and joined, so a prompt at inference encodes exactly as in training."""

    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    pad_id: int
    eos_id: int
    decoder_start_id: int | None = None  # seq2seq: the first decoder input; None means the pad id, as in T5

    @property
    def start_id(self) -> int:
        return self.pad_id if self.decoder_start_id is None else self.decoder_start_id


@dataclass
class TokenBatch:
    """Token tensors with targets aligned to the model's logits: `logits[:, t]` is scored against
    `target_ids[:, t]` where `target_mask[:, t]` is 1. Decoders see source + target and are scored on the
    target only; seq2seq models read the source and score every decoder step."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_ids: torch.Tensor
    target_mask: torch.Tensor
    decoder_input_ids: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TokenBatch:
        moved = {name: value.to(device) if value is not None else None for name, value in vars(self).items()}
        return TokenBatch(**moved)


class TaskBatches(NamedTuple):
    label: TokenBatch
    rationale: TokenBatch | None


def _padded(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


def _check_length(length: int, max_length: int | None, index: int, what: str) -> None:
    if max_length is not None and length > max_length:
        raise InputError(f"pair {index}: the {what} is {length} tokens, over max_length {max_length}; raise max_length or shorten it")


def encode_pairs(
    pairs: Sequence[TrainingPair], tokens: Tokens, architecture: Architecture, max_length: int | None = None
) -> TokenBatch:
    """Right-padded tensors for one task's pairs. A decoder reads `source + target + eos` shifted by one;
    a seq2seq model reads `source + eos` and is taught `target + eos`."""
    check_architecture(architecture)
    inputs, targets, masks, decoder_inputs = [], [], [], []
    for index, (source, target, _) in enumerate(pairs):
        src, tgt = tokens.encode(source), tokens.encode(target) + [tokens.eos_id]
        if architecture == "decoder":
            sequence = src + tgt
            _check_length(len(sequence) - 1, max_length, index, "prompt and target")
            inputs.append(sequence[:-1])
            targets.append(sequence[1:])
            masks.append([0] * (len(src) - 1) + [1] * len(tgt))
        else:
            _check_length(len(src) + 1, max_length, index, "source")
            _check_length(len(tgt), max_length, index, "target")
            inputs.append(src + [tokens.eos_id])
            targets.append(tgt)
            masks.append([1] * len(tgt))
            decoder_inputs.append([tokens.start_id] + tgt[:-1])
    input_ids = _padded(inputs, tokens.pad_id)
    return TokenBatch(
        input_ids=input_ids,
        attention_mask=_padded([[1] * len(r) for r in inputs], 0),
        target_ids=_padded(targets, tokens.pad_id),
        target_mask=_padded(masks, 0),
        decoder_input_ids=_padded(decoder_inputs, tokens.pad_id) if decoder_inputs else None,
    )


def encode_examples(
    examples: Sequence[RationaleExample], config: StepByStepConfig, tokens: Tokens, architecture: Architecture,
    max_length: int | None = None,
) -> TaskBatches:
    """A training batch of both tasks from the same examples (usable as a DataLoader's collate_fn)."""
    label, rationale = training_pairs(examples, config)
    return TaskBatches(
        encode_pairs(label, tokens, architecture, max_length),
        encode_pairs(rationale, tokens, architecture, max_length) if rationale else None,
    )


def token_cross_entropy(logits: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the target tokens of the whole batch (padding and prompts excluded).

    >>> logits = torch.zeros(1, 2, 4)
    >>> round(float(token_cross_entropy(logits, torch.tensor([[1, 2]]), torch.tensor([[1, 0]]))), 4)  # ln 4
    1.3863
    """
    mask = target_mask.bool()
    if not bool(mask.any()):
        raise ValueError("the batch has no target tokens to score")
    return F.cross_entropy(logits[mask].float(), target_ids[mask])


Forward = Callable[[TokenBatch], torch.Tensor]
"""The student as the loss sees it: a batch in, logits aligned with `target_ids` out."""


def step_by_step_loss(forward: Forward, batches: TaskBatches, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """α·L_label + (1−α)·L_rationale when the batches hold both tasks (pass `config.alpha`); the one
    target's loss otherwise. At α = 1 the rationale task does not run, so the step is exactly label-only
    training."""
    label_loss = token_cross_entropy(forward(batches.label), batches.label.target_ids, batches.label.target_mask)
    if batches.rationale is None or alpha == 1:
        return label_loss
    rationale = batches.rationale
    rationale_loss = token_cross_entropy(forward(rationale), rationale.target_ids, rationale.target_mask)
    return alpha * label_loss + (1 - alpha) * rationale_loss


def _batch_seed(seed: int, prompts: Sequence[str]) -> int:
    """A sampling seed from the run's seed and the batch's prompts: the same batch samples the same text."""
    digest = hashlib.sha256("\x00".join(prompts).encode()).digest()
    return (seed + int.from_bytes(digest[:4], "little")) % 2**31


def hf_generate_fn(
    model: nn.Module, tokens: Tokens, architecture: Architecture, *, max_new_tokens: int, temperature: float = 0.0,
    seed: int = 0,
) -> Generate:
    """A `Generate` over a Hugging Face model's own `.generate` (a local causal LM teacher, or a torch
    student being evaluated). Greedy at temperature 0; sampling is seeded per batch from `seed` and
    the prompts, so a rerun writes the same text. Returns the continuations up to end-of-sequence."""

    def generate(prompts: list[str]) -> list[str]:
        encoded = [tokens.encode(p) + ([tokens.eos_id] if architecture == "seq2seq" else []) for p in prompts]
        width = max(len(e) for e in encoded)
        # Decoders continue the prompt, so its end must be the last column: pad on the left.
        if architecture == "decoder":
            rows = [[tokens.pad_id] * (width - len(e)) + e for e in encoded]
            mask = [[0] * (width - len(e)) + [1] * len(e) for e in encoded]
        else:
            rows = [e + [tokens.pad_id] * (width - len(e)) for e in encoded]
            mask = [[1] * len(e) + [0] * (width - len(e)) for e in encoded]
        device = next(model.parameters()).device
        options = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        if architecture == "seq2seq":
            options["decoder_start_token_id"] = tokens.start_id
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(_batch_seed(seed, prompts))
                output = model.generate(  # type: ignore[operator]
                    input_ids=torch.tensor(rows, device=device), attention_mask=torch.tensor(mask, device=device),
                    max_new_tokens=max_new_tokens, pad_token_id=tokens.pad_id, eos_token_id=tokens.eos_id, **options,
                )
        finally:
            model.train(was_training)
        new_tokens = output[:, width:] if architecture == "decoder" else output[:, 1:]
        return [tokens.decode(_until_eos(row.tolist(), tokens.eos_id)) for row in new_tokens]

    return generate


def _until_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id in ids else ids
