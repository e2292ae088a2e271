"""Generation benchmarks for exported decoders (`edgekd.export.transformer` files): time to
first token and tokens per second per batch size, the models side by side in one run, and
peak memory in a fresh process per model and batch.

Per model and batch size two things are timed, all models' calls interleaved in rotating
rounds by the timing core (`edgekd.bench.timing`), so drift hits every model alike:

* first token — greedy decoding of one token: the prompt's forward pass (TTFT);
* generation — the prompt and `new_tokens` greedy tokens with end-of-sequence ignored, so every
  model does the same work whatever it predicts.

tokens/s = batch × new_tokens / median(generation); decode tokens/s counts the tokens after the
first over the time after it. The graphs have no KV cache (see `edgekd.export.transformer`),
so every step re-reads the whole prefix; the figures measure that, as deployed. Speedups are
ratios of median generation times against the reference model (the first one), with the
block-bootstrap interval of `edgekd.bench.stats`.

    result = benchmark_generation({"teacher": "teacher.onnx", "student": "student.int8.onnx"}, batch_sizes=(1, 8))
    result.case("student", 8).tokens_per_s
    result.speedups[("student", 1)]      # median generation time teacher / student, with its CI
    print(render_generation(result))     # Markdown table
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import psutil

from edgekd.bench.backends.base import BackendOptions
from edgekd.bench.backends.onnxruntime_backend import create_session, session_options
from edgekd.bench.environment import environment
from edgekd.bench.fresh import run_fresh
from edgekd.bench.memory import MB, _peak_rss, _reset_peak
from edgekd.bench.stats import Ratio, Summary, median_ratio, summarize
from edgekd.bench.timing import Target, TimingSettings, measure
from edgekd.decoding import OnnxNextToken, greedy_decode
from edgekd.errors import InputError

SCHEMA = "edgekd.bench.generation/1"
MEMORY_RUNS = 2


@dataclass(frozen=True)
class Decoder:
    """An exported decoder or seq2seq file, loaded: its session and what decoding needs."""

    name: str
    path: Path
    session: Any
    vocab_size: int
    pad_token_id: int
    decoder_start_token_id: int | None

    @classmethod
    def load(cls, name: str, path: str | Path, options: BackendOptions) -> Decoder:
        path = Path(path)
        session = create_session(path, session_options(options), options)
        metadata = session.get_modelmeta().custom_metadata_map
        family = metadata.get("sequence_family")
        if family not in ("decoder", "seq2seq"):
            raise InputError(f"{path}: not a decoder or seq2seq file exported by edgekd (sequence_family={family!r}); only those generate")
        vocab = session.get_outputs()[0].shape[-1]
        if not isinstance(vocab, int) or "pad_token_id" not in metadata:
            raise InputError(f"{path}: needs a fixed vocabulary size and its special tokens in the metadata (export with tokens=...)")
        start = metadata.get("decoder_start_token_id") if family == "seq2seq" else None
        return cls(name, path, session, vocab, int(metadata["pad_token_id"]), int(start) if start is not None else None)

    def prompts(self, batch: int, length: int, seed: int) -> list[list[int]]:
        """Random prompts of ordinary tokens (no padding or start token), the same for every model of a vocabulary."""
        special = {self.pad_token_id, self.decoder_start_token_id}
        ordinary = np.array([t for t in range(self.vocab_size) if t not in special])
        return np.random.default_rng(seed).choice(ordinary, size=(batch, length)).tolist()

    def generation_call(self, prompts: list[list[int]], new_tokens: int) -> Callable[[], object]:
        step = OnnxNextToken(self.session)

        def call() -> object:
            return greedy_decode(
                step, prompts, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=self.pad_token_id,
                decoder_start_token_id=self.decoder_start_token_id,
            )  # fmt: skip

        return call


@dataclass(frozen=True)
class GenerationCase:
    """One model at one batch size. Latencies in milliseconds."""

    model: str
    batch: int
    prompt_length: int
    new_tokens: int
    first_token_ms: Summary
    generation_ms: Summary
    memory: dict[str, Any] | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.new_tokens / (self.generation_ms.median / 1000)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first, over the time after it; None with one new token or a noisy difference."""
        decode_ms = self.generation_ms.median - self.first_token_ms.median
        if self.new_tokens < 2 or decode_ms <= 0:
            return None
        return self.batch * (self.new_tokens - 1) / (decode_ms / 1000)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "batch": self.batch, "prompt_length": self.prompt_length, "new_tokens": self.new_tokens,
            "first_token_ms": self.first_token_ms.to_json(), "generation_ms": self.generation_ms.to_json(),
            "tokens_per_s": self.tokens_per_s, "decode_tokens_per_s": self.decode_tokens_per_s, "memory": self.memory,
        }  # fmt: skip


@dataclass(frozen=True)
class GenerationResult:
    cases: list[GenerationCase]
    # (model, batch) → median generation time of the reference / of the model: its speedup.
    speedups: dict[tuple[str, int], Ratio]
    reference: str
    settings: TimingSettings
    options: BackendOptions
    environment: dict[str, Any] = field(default_factory=dict)

    def case(self, model: str, batch: int) -> GenerationCase:
        return next(c for c in self.cases if c.model == model and c.batch == batch)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "reference": self.reference,
            "cases": [c.to_json() for c in self.cases],
            "speedups": [{"model": m, "batch": b, **r.to_json()} for (m, b), r in self.speedups.items()],
            "timing": self.settings.to_json(),
            "options": self.options.to_json(),
            "environment": self.environment,
        }


def benchmark_generation(
    models: Mapping[str, str | Path] | Sequence[str | Path],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    prompt_length: int = 32,
    new_tokens: int = 16,
    threads: int | None = None,
    settings: TimingSettings = TimingSettings(),
    memory: bool = True,
    seed: int = 0,
) -> GenerationResult:
    """Time every model's first token and generation at each batch size, side by side; the
    first model is the reference of the speedups. `models`: name → file, or files (named by stem)."""
    named = dict(models) if isinstance(models, Mapping) else {Path(p).stem: p for p in models}
    if not named:
        raise InputError("no models to benchmark")
    if not batch_sizes or min(batch_sizes) < 1 or prompt_length < 1 or new_tokens < 1:
        raise InputError(f"batch sizes, prompt length and new tokens must be ≥ 1 (got {list(batch_sizes)}, {prompt_length}, {new_tokens})")
    options = BackendOptions(threads=threads, batch_sizes=tuple(batch_sizes))
    decoders = [Decoder.load(name, path, options) for name, path in named.items()]
    reference = decoders[0].name
    cases: list[GenerationCase] = []
    speedups: dict[tuple[str, int], Ratio] = {}
    for batch in batch_sizes:
        calls = []
        for decoder in decoders:
            prompts = decoder.prompts(batch, prompt_length, seed)
            calls += [Target(decoder.generation_call(prompts, 1)), Target(decoder.generation_call(prompts, new_tokens))]
        timings = measure(calls, settings)
        generation_blocks = {}
        for i, decoder in enumerate(decoders):
            first, whole = timings[2 * i], timings[2 * i + 1]
            generation_blocks[decoder.name] = whole.blocks_s
            usage = memory_probe(decoder.path, batch, prompt_length, new_tokens, threads) if memory else None
            cases.append(GenerationCase(
                decoder.name, batch, prompt_length, new_tokens, summarize(first.blocks_s * 1000), summarize(whole.blocks_s * 1000), usage,
            ))  # fmt: skip
        for name, blocks in generation_blocks.items():
            if name != reference:
                speedups[(name, batch)] = median_ratio(generation_blocks[reference], blocks, seed=seed)
    return GenerationResult(cases, speedups, reference, settings, options, environment())


def memory_probe(path: Path, batch: int, prompt_length: int, new_tokens: int, threads: int | None) -> dict[str, Any]:
    """Peak RSS of one model generating at one batch size, in a fresh process (`edgekd.bench.fresh`)."""
    spec = {"model": str(path), "batch": batch, "prompt_length": prompt_length, "new_tokens": new_tokens, "threads": threads}
    return run_fresh("generation-memory", spec, f"memory probe of {path} generating at batch {batch}")


def memory_here(spec: dict[str, Any]) -> dict[str, Any]:
    """The probe itself, in the fresh process (as `edgekd.bench.memory.measure_here`, generating)."""
    baseline = psutil.Process().memory_info().rss
    peak_source = "VmHWM, reset after imports" if _reset_peak() else "ru_maxrss since process start"
    decoder = Decoder.load("probe", spec["model"], BackendOptions(threads=spec["threads"]))
    loaded = psutil.Process().memory_info().rss
    call = decoder.generation_call(decoder.prompts(spec["batch"], spec["prompt_length"], 0), spec["new_tokens"])
    for _ in range(MEMORY_RUNS):
        call()
    peak = _peak_rss()
    return {
        "baseline_rss_mb": baseline / MB, "loaded_rss_mb": loaded / MB, "peak_rss_mb": peak / MB,
        "peak_over_baseline_mb": (peak - baseline) / MB, "peak_source": peak_source, "runs": MEMORY_RUNS,
        "torch_imported": "torch" in sys.modules,
    }  # fmt: skip


def render_generation(result: GenerationResult) -> str:
    """A Markdown table: one row per model and batch size."""
    lines = [
        f"| model | batch | first token ms (median) | tokens/s | decode tokens/s | speedup vs {result.reference} | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in result.cases:
        ratio = result.speedups.get((case.model, case.batch))
        speed = f"{ratio.median_ratio:.2f}× [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}]" if ratio else "1.00×"
        decode = f"{case.decode_tokens_per_s:.1f}" if case.decode_tokens_per_s else "—"
        peak = f"{case.memory['peak_over_baseline_mb']:.1f}" if case.memory else "—"
        lines.append(
            f"| {case.model} | {case.batch} | {case.first_token_ms.median:.2f} | {case.tokens_per_s:.1f} | {decode} | {speed} | {peak} |"
        )
    return "\n".join(lines)
