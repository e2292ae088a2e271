"""Greedy decoding for decoder-only and encoder-decoder language models, written once for
every runtime: PyTorch (the teacher's generations for sequence-level distillation) and
ONNX Runtime (exact match on an exported file, generation benchmarks) drive the same loop
through a `NextTokenLogits` function, so a disagreement between them is the models', never
the loops'. numpy only: the bench's fresh-process probes import this without torch.

Graphs have no KV cache: every step runs the model on the whole prefix and reads the logits
of the last real position of each row. Rows are right-padded; causal attention keeps the
padding after a row's end from touching its real positions, so rows of different lengths
share one batch without position-id bookkeeping.

>>> def echo_plus_one(inputs, last):  # a "model" whose next token is the last token + 1
...     ids = inputs["input_ids"][np.arange(len(last)), last]
...     return np.eye(8)[np.minimum(ids + 1, 7)]
>>> out = greedy_decode(echo_plus_one, [[1, 2], [5]], max_new_tokens=4, eos_token_id=7, pad_token_id=0)
>>> out.tokens, out.finished
([[3, 4, 5, 6], [6]], [False, True])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from edgekd.errors import InputError

# Names of the inputs and the output of exported sequence graphs (Hugging Face's names).
INPUT_IDS, ATTENTION_MASK, DECODER_INPUT_IDS, LOGITS = "input_ids", "attention_mask", "decoder_input_ids", "logits"


class NextTokenLogits(Protocol):
    """One model step: the inputs (input_ids, attention_mask, and decoder_input_ids for an
    encoder-decoder) → the logits (batch, vocab) at position `last[row]` of each row."""

    def __call__(self, inputs: dict[str, np.ndarray], last: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Generation:
    """New tokens per row, without the end-of-sequence token; `finished[row]`: the row produced it."""

    tokens: list[list[int]]
    finished: list[bool]


def pad_rows(rows: Sequence[Sequence[int]], pad_token_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 ids and their attention mask."""
    if not rows:
        raise InputError("nothing to decode: no prompts given")
    width = width if width is not None else max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def greedy_decode(
    next_logits: NextTokenLogits,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int | None,
    pad_token_id: int,
    decoder_start_token_id: int | None = None,
) -> Generation:
    """Greedy (argmax) decoding of every prompt until EOS or `max_new_tokens`.

    With `decoder_start_token_id` the model is an encoder-decoder: prompts are the encoder
    input and the decoder starts from that token. `eos_token_id=None` never stops early
    (benchmarks use this to generate a fixed number of tokens)."""
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise InputError("every prompt needs at least one token")
    if decoder_start_token_id is None:
        return _decode_causal(next_logits, prompts, max_new_tokens, eos_token_id, pad_token_id)
    return _decode_seq2seq(next_logits, prompts, max_new_tokens, eos_token_id, pad_token_id, decoder_start_token_id)


def _decode_causal(
    next_logits: NextTokenLogits, prompts: Sequence[Sequence[int]], max_new: int, eos: int | None, pad: int
) -> Generation:
    lengths = np.array([len(p) for p in prompts])
    ids, mask = pad_rows(prompts, pad, int(lengths.max()) + max_new)
    new = np.full((len(prompts), max_new), pad, dtype=np.int64)
    done = np.zeros(len(prompts), dtype=bool)
    for step in range(max_new):
        width = int(lengths.max())
        token = next_logits({INPUT_IDS: ids[:, :width], ATTENTION_MASK: mask[:, :width]}, lengths - 1).argmax(-1)
        rows = np.flatnonzero(~done)
        ids[rows, lengths[rows]] = token[rows]
        mask[rows, lengths[rows]] = 1
        lengths[rows] += 1
        new[rows, step] = token[rows]
        if eos is not None:
            done[rows] |= token[rows] == eos
        if done.all():
            break
    return _collect(new, done, eos, pad)


def _decode_seq2seq(
    next_logits: NextTokenLogits, prompts: Sequence[Sequence[int]], max_new: int, eos: int | None, pad: int, start: int
) -> Generation:
    encoder_ids, encoder_mask = pad_rows(prompts, pad)
    decoder_ids = np.full((len(prompts), max_new + 1), pad, dtype=np.int64)
    decoder_ids[:, 0] = start
    done = np.zeros(len(prompts), dtype=bool)
    for step in range(1, max_new + 1):
        inputs = {INPUT_IDS: encoder_ids, ATTENTION_MASK: encoder_mask, DECODER_INPUT_IDS: decoder_ids[:, :step]}
        token = next_logits(inputs, np.full(len(prompts), step - 1)).argmax(-1)
        decoder_ids[:, step] = np.where(done, pad, token)
        if eos is not None:
            done |= token == eos
        if done.all():
            break
    return _collect(decoder_ids[:, 1:], done, eos, pad)


def _collect(new: np.ndarray, done: np.ndarray, eos: int | None, pad: int) -> Generation:
    """Each row's tokens up to (not including) its EOS; rows that stopped early end in padding."""
    tokens = []
    for row, finished in zip(new.tolist(), done):
        end = row.index(eos) if finished else len(row)
        tokens.append(row[:end])
    return Generation(tokens, done.tolist())


def exact_match(predictions: Sequence[Sequence[Any]], references: Sequence[Sequence[Any]]) -> float:
    """Share of predictions equal to their reference (token lists, or decoded strings)."""
    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise InputError("exact match of nothing: no references given")
    return sum(list(p) == list(r) for p, r in zip(predictions, references)) / len(references)


class OnnxNextToken:
    """`NextTokenLogits` of an ONNX Runtime session of an exported graph (see `edgekd.export.transformer`)."""

    def __init__(self, session: Any):
        self.session = session
        self.names = [arg.name for arg in session.get_inputs()]

    def __call__(self, inputs: dict[str, np.ndarray], last: np.ndarray) -> np.ndarray:
        logits = self.session.run([LOGITS], {name: inputs[name] for name in self.names})[0]
        return logits[np.arange(len(last)), last]
