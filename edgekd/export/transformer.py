"""Exporting language models to ONNX, checking them against PyTorch, and decoding with them.

Three families, each one graph with dynamic batch and sequence axes and Hugging Face's
input names:

    encoder   input_ids, attention_mask                      → logits (batch, classes)
    decoder   input_ids, attention_mask                      → logits (batch, length, vocab)
    seq2seq   input_ids, attention_mask, decoder_input_ids   → logits (batch, target length, vocab)

No KV cache. Generation re-runs the graph on the whole prefix at every step (see
`edgekd.decoding`). Why: one graph then serves parity, perplexity and generation; it runs
the same arithmetic as the PyTorch reference loop, so exact-match agreement between the two
is testable; fake-quantized models export only through the TorchScript exporter, which
cannot export transformers 5's Cache objects as graph inputs and outputs. The price is
quadratic work in the generated length (the encoder of a seq2seq model is re-run each step
too), which the generation benchmark measures as it is. A cache graph can come later
without changing the decoding loop's contract.

Quantized models: an int8 model (`edgekd.quant.swap.insert_linear_fake_quant`) exports as
Q/DQ like the conv path (int8 weights, `edgekd.export.qdq`); an int4 weight-only model
(`insert_int4_weights`) exports its layers as ONNX Runtime MatMulNBits holding exactly the
integers it trained with (`edgekd.export.int4`).

Generation settings (EOS, padding, decoder start) travel in the file's metadata, so
`onnx_generate` needs only the file and the prompts.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence, get_args

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edgekd.decoding import (
    ATTENTION_MASK, DECODER_INPUT_IDS, INPUT_IDS, LOGITS, Generation, OnnxNextToken, exact_match, greedy_decode,
)
from edgekd.errors import EdgekdError, InputError
from edgekd.metrics import GenerationScores
from edgekd.export.int4 import materialized_int4, replace_with_matmul_nbits
from edgekd.export.onnx_export import save_checked
from edgekd.export.qdq import finish_qdq
from edgekd.export.runtime import session
from edgekd.outputs import LogitsOnly
from edgekd.quant.graph import quant_schedule
from edgekd.quant.profiles import profiles
from edgekd.quant.swap import ACCURACY_LEVELS, INT4_PROFILE, int4_settings
from edgekd.registry import unknown_name

Family = Literal["encoder", "decoder", "seq2seq"]
FAMILIES: tuple[str, ...] = get_args(Family)
FAMILY_INPUTS: dict[str, tuple[str, ...]] = {
    "encoder": (INPUT_IDS, ATTENTION_MASK),
    "decoder": (INPUT_IDS, ATTENTION_MASK),
    "seq2seq": (INPUT_IDS, ATTENTION_MASK, DECODER_INPUT_IDS),
}
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class SpecialTokens:
    """What greedy decoding needs to know about a vocabulary; stored in an exported file's metadata."""

    pad_token_id: int
    eos_token_id: int | None
    decoder_start_token_id: int | None = None

    def to_metadata(self) -> dict[str, str]:
        values = {"pad_token_id": self.pad_token_id, "eos_token_id": self.eos_token_id,
                  "decoder_start_token_id": self.decoder_start_token_id}  # fmt: skip
        return {key: str(value) for key, value in values.items() if value is not None}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], where: str) -> SpecialTokens:
        if "pad_token_id" not in metadata:
            raise InputError(f"{where} records no special tokens (pad_token_id, eos_token_id); export it with tokens=SpecialTokens(...)")

        def read(key: str) -> int | None:
            return int(metadata[key]) if key in metadata else None

        return cls(int(metadata["pad_token_id"]), read("eos_token_id"), read("decoder_start_token_id"))


def check_family(family: str) -> Family:
    if family not in FAMILIES:
        raise InputError(unknown_name("model family", family, FAMILIES))
    return family  # type: ignore[return-value]


def example_inputs(family: Family, batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    """Inputs to trace with: token 1 everywhere (valid in any vocabulary of two or more tokens)."""
    inputs = {INPUT_IDS: torch.ones(batch, length, dtype=torch.long), ATTENTION_MASK: torch.ones(batch, length, dtype=torch.long)}
    if family == "seq2seq":
        inputs[DECODER_INPUT_IDS] = torch.ones(batch, max(2, length // 2), dtype=torch.long)
    return inputs


def export_sequence_model(
    model: nn.Module,
    path: str | Path,
    family: Family,
    *,
    tokens: SpecialTokens | None = None,
    example: Mapping[str, torch.Tensor] | None = None,
    opset: int = DEFAULT_OPSET,
    int4_accuracy_level: int | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `model` to `path` as a checked ONNX file of its family (TorchScript exporter).

    `int4_accuracy_level` is MatMulNBits' compute mode for int4 models, by default the one the
    model was quantized with (`qat.accuracy_level`): 0 computes in float, as the model trained; 4
    also quantizes activations to int8 inside the kernel, which training never saw — faster at
    batch 1 on VNNI CPUs (bench/RESULTS.md), at some cost in parity."""
    path, family = Path(path), check_family(family)
    if int4_accuracy_level is not None and int4_accuracy_level not in ACCURACY_LEVELS:
        raise InputError(f"int4 accuracy level must be one of {ACCURACY_LEVELS} (MatMulNBits), got {int4_accuracy_level}")
    names = FAMILY_INPUTS[family]
    example = dict(example) if example is not None else example_inputs(family)
    device = next(model.parameters()).device
    schedule = quant_schedule(model)
    int4 = schedule is not None and schedule.profile == INT4_PROFILE
    traced_model, packed = materialized_int4(model) if int4 else (model, {})
    proto = _trace(LogitsOnly(traced_model, names), tuple(example[n].to(device) for n in names), names, family, opset)
    extra: dict[str, str] = {"exporter": "torchscript", "sequence_family": family, "inputs": ",".join(names)}
    if int4:
        settings = int4_settings(model)
        if int4_accuracy_level is not None:
            settings["int4_accuracy_level"] = int4_accuracy_level
        level = settings.get("int4_accuracy_level", 0)
        extra |= {"quant_profile": INT4_PROFILE, "int4_layers": str(replace_with_matmul_nbits(proto, packed, level))}
        extra |= {key: str(value) for key, value in settings.items()}
    elif schedule is not None:
        counts = finish_qdq(proto, int32_bias=profiles.get(schedule.profile).int32_bias)
        extra |= {"quant_profile": schedule.profile, **{k: str(v) for k, v in counts.items()}}
    save_checked(proto, path, {**extra, **(tokens.to_metadata() if tokens else {}), **(metadata or {})})
    return path


def _trace(wrapper: LogitsOnly, args: tuple[torch.Tensor, ...], names: Sequence[str], family: Family, opset: int) -> onnx.ModelProto:
    axes = {name: {0: "batch", 1: "target" if name == DECODER_INPUT_IDS else "sequence"} for name in names}
    axes[LOGITS] = {0: "batch"} if family == "encoder" else {0: "batch", 1: "target" if family == "seq2seq" else "sequence"}
    buffer = io.BytesIO()
    was_training = wrapper.model.training
    wrapper.eval()
    try:
        # The exporter is chatty (tracer warnings about Python control flow on shapes); parity checks the result.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, args, buffer, dynamo=False, opset_version=opset, input_names=list(names),
                output_names=[LOGITS], dynamic_axes=axes, do_constant_folding=True,
            )  # fmt: skip
    finally:
        wrapper.model.train(was_training)
    return onnx.load_from_string(buffer.getvalue())


def read_family(sess: ort.InferenceSession, where: str) -> Family:
    family = sess.get_modelmeta().custom_metadata_map.get("sequence_family")
    if family is None:
        raise InputError(f"{where} is not a sequence model exported by edgekd (no sequence_family in its metadata)")
    return check_family(family)


def positions(family: Family, batch: Mapping[str, torch.Tensor]) -> np.ndarray | None:
    """Where the logits are real: every row (encoder), the attention mask (decoder), the target
    mask if the batch has one (seq2seq); None: everywhere."""
    if family == "decoder":
        return batch[ATTENTION_MASK].bool().cpu().numpy()
    if family == "seq2seq" and "target_mask" in batch:
        return batch["target_mask"].bool().cpu().numpy()
    return None


@torch.no_grad()
def sequence_parity(
    model: nn.Module, path: str | Path, batches: Iterable[Mapping[str, torch.Tensor]], *, min_agreement: float = 0.99
) -> dict[str, float]:
    """How closely ONNX Runtime reproduces the PyTorch model on real positions: top-1 agreement
    (per sequence for an encoder, per token otherwise) and the max/mean absolute logit difference.

    An agreement below `min_agreement`, or a NaN on either side, is an EdgekdError."""
    path = Path(path)
    sess = session(path)
    family = read_family(sess, str(path))
    names = FAMILY_INPUTS[family]
    wrapper = LogitsOnly(model, names)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    agree = total = values = 0
    max_diff = diff_sum = 0.0
    try:
        for batch in batches:
            expected = wrapper(*(batch[n].to(device) for n in names)).float().cpu().numpy()
            got = sess.run([LOGITS], {n: batch[n].cpu().numpy().astype(np.int64) for n in names})[0]
            for side, logits in (("PyTorch", expected), ("ONNX Runtime", got)):
                if np.isnan(logits).any():
                    raise EdgekdError(f"parity check failed for {path.name}: {side} produced NaN logits")
            where = positions(family, batch)
            if where is not None:
                expected, got = expected[where], got[where]
            diff = np.abs(expected - got)
            agree += int((expected.argmax(-1) == got.argmax(-1)).sum())
            total += int(np.prod(expected.shape[:-1]))
            max_diff, diff_sum, values = max(max_diff, float(diff.max(initial=0.0))), diff_sum + float(diff.sum()), values + diff.size
    finally:
        model.train(was_training)
    result = {"agreement": agree / max(total, 1), "max_abs_diff": max_diff, "mean_abs_diff": diff_sum / max(values, 1),
              "positions": total, "min_agreement": min_agreement}  # fmt: skip
    if result["agreement"] < min_agreement:
        unit = "sequences" if family == "encoder" else "tokens"
        raise EdgekdError(
            f"parity check failed for {path.name}: ONNX Runtime agrees with PyTorch on the top-1 prediction of only "
            f"{result['agreement']:.2%} of {total} {unit} (required: {min_agreement:.2%}; max |Δlogit| {max_diff:.4g}, "
            f"mean {result['mean_abs_diff']:.4g}). The exported graph does not compute what was trained."
        )
    return result


def onnx_generate(
    path: str | Path,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    tokens: SpecialTokens | None = None,
    threads: int | None = None,
) -> Generation:
    """Greedy generation with an exported decoder or seq2seq file in ONNX Runtime (CPU);
    special tokens come from the file's metadata unless given."""
    path = Path(path)
    sess = session(path, threads=threads)
    family = read_family(sess, str(path))
    if family == "encoder":
        raise InputError(f"{path.name} is an encoder classifier; only decoder and seq2seq files generate")
    tokens = tokens or SpecialTokens.from_metadata(sess.get_modelmeta().custom_metadata_map, str(path))
    if family == "seq2seq" and tokens.decoder_start_token_id is None:
        raise InputError(f"{path.name} is a seq2seq model: decoding needs decoder_start_token_id")
    return greedy_decode(
        OnnxNextToken(sess), prompts, max_new_tokens=max_new_tokens, eos_token_id=tokens.eos_token_id,
        pad_token_id=tokens.pad_token_id, decoder_start_token_id=tokens.decoder_start_token_id if family == "seq2seq" else None,
    )  # fmt: skip


def onnx_generation_scores(path: str | Path, batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]]) -> dict[str, float]:
    """Token accuracy, teacher-forced exact match and perplexity of an exported decoder or seq2seq
    file on (inputs by name, per-token targets) batches, computed by ONNX Runtime."""
    path = Path(path)
    sess = session(path)
    names = FAMILY_INPUTS[read_family(sess, str(path))]
    scores = GenerationScores()
    for batch, targets in batches:
        logits = sess.run([LOGITS], {n: batch[n].cpu().numpy().astype(np.int64) for n in names})[0]
        if not np.isfinite(logits).all():
            raise EdgekdError(f"{path.name}: ONNX Runtime produced NaN or infinite logits")
        scores.update(torch.from_numpy(logits), targets.cpu())
    return scores.result()


def onnx_exact_match(
    path: str | Path,
    prompts: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    tokens: SpecialTokens | None = None,
) -> float:
    """Exact match of the exported file's greedy answers against reference answers (token ids,
    without EOS): the deployed model's task metric, computed on the file itself."""
    generation = onnx_generate(path, prompts, max_new_tokens=max_new_tokens, tokens=tokens)
    return exact_match(generation.tokens, references)
