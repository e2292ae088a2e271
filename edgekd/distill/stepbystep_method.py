"""Distilling step by step through `edgekd compress`: the `step-by-step` method, the recipe's
`rationales:` block, and the label task the runner trains, scores and exports.

    rationales: {source: data, field: rationale}
    distill:
      method: [{method: step-by-step, alpha: 0.5, rationale_position: separate}]

The runner (`edgekd.run`) turns generation text (`data.options: {task: generate, input, target}`, the
target being the label) into the label task, `predict: <input>` → label, in every split; for the
training split it also builds the rationale task, `explain: <input>` → rationale, row for row
(`rationale_position: separate`), or joins rationale and label into one target (`before_label`,
`after_label`). Every other stage sees the label task only: pruning, calibration, token-level KD, the
exported graph. The method's term is α·L_label + (1−α)·L_rationale (`step_by_step_loss`): the label
rows are the batch itself, the rationale rows are looked up by the batch's sample positions.

Rationales come from the data (`source: data`: a field of every JSONL row, the format of
`edgekd.data.rationales`) or from the recipe's teacher (`source: teacher`: few-shot prompted through
`TeacherPrompting`, generated once into the workdir's `rationales/` cache by
`edgekd.distill.generation_cache.teacher_rationales`).

At inference only the label task runs: `LabelTask.exact_match` decodes `predict:` prompts greedily
(on a PyTorch model, or an exported file in ONNX Runtime, through the same loop) and compares the
label read back from each answer with the ground truth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import torch
from pydantic import Field, model_validator
from rich.progress import Progress
from torch import nn
from torch.utils.data import TensorDataset

from edgekd.config import StrictModel
from edgekd.data.rationales import RationaleExample, exact_match
from edgekd.data.text import TextBundle, TextOptions, TextSplit, encode_rows, shift_right
from edgekd.decoding import NextTokenLogits, greedy_decode
from edgekd.distill.config import TermConfig
from edgekd.distill.generation_cache import module_digest, teacher_rationales
from edgekd.distill.methods import Batch, Phase, Term
from edgekd.distill.prompting import DEFAULT_PARSE, Generate, TeacherPrompting
from edgekd.distill.registry import methods
from edgekd.distill.sequence import TorchNextToken, greedy_generate_fn
from edgekd.distill.stepbystep import (
    LABEL_SOURCES, RATIONALE_POSITIONS, Architecture, StepByStepConfig, TaskBatches, TokenBatch, Tokens, extract_label,
    hf_generate_fn, label_pairs, marker_pattern, step_by_step_loss, training_pairs,
)
from edgekd.distill.stepbystep_train import text_tokens
from edgekd.errors import InputError
from edgekd.facts import IGNORE_INDEX
from edgekd.outputs import logits_of, run_model

METHOD = "step-by-step"


def _value_error(build: Any) -> Any:
    """Run a builder that raises InputError, as a pydantic validator must: a ValueError with its message."""
    try:
        return build()
    except InputError as exc:
        raise ValueError(str(exc)) from None


class Prefixes(StrictModel):
    """The task prefixes: what tells the student which task an input asks for."""

    label: str = "predict: "
    rationale: str = "explain: "


class StepByStepTermConfig(TermConfig):
    """`{method: step-by-step, prefixes: {label, rationale}, alpha, rationale_position, label_source}`.

    `alpha` (0.5): the label task's weight in α·L_label + (1−α)·L_rationale; 1 is label-only training.
    It applies to `rationale_position: separate` (two tasks, as in the paper); `before_label` and
    `after_label` train one target (`<rationale> Answer: <label>`, `<label> Explanation: <rationale>`)
    with one loss and refuse alpha. `label_source`: the label task learns the ground truth
    (`ground_truth`) or the labels the teacher wrote with its rationales (`teacher`). Every step-by-step
    block of a recipe shares prefixes, position and label source (they shape the data); alpha and the
    weight may differ per block."""

    prefixes: Prefixes = Prefixes()
    alpha: float | None = Field(None, ge=0, le=1)
    rationale_position: Literal["separate", "before_label", "after_label"] = "separate"
    label_source: Literal["ground_truth", "teacher"] = "ground_truth"

    @model_validator(mode="after")
    def _valid(self) -> StepByStepTermConfig:
        _value_error(self.settings)
        return self

    def settings(self) -> StepByStepConfig:
        return StepByStepConfig(
            label_prefix=self.prefixes.label, rationale_prefix=self.prefixes.rationale,
            rationale_position=self.rationale_position, label_source=self.label_source, alpha=self.alpha,
        )  # fmt: skip

    def data_key(self) -> dict[str, Any]:
        """The settings that shape the data (all but alpha and weight)."""
        return self.model_dump(include={"prefixes", "rationale_position", "label_source"})


# The Literal fields above spell out the choices of edgekd.distill.stepbystep, so errors list them.
assert set(RATIONALE_POSITIONS) == set(StepByStepTermConfig.model_fields["rationale_position"].annotation.__args__)
assert set(LABEL_SOURCES) == set(StepByStepTermConfig.model_fields["label_source"].annotation.__args__)


class PromptConfig(StrictModel):
    """The teacher's few-shot prompt (`edgekd.distill.prompting.TeacherPrompting`): `template` holds
    `{input}`, `answer` holds `{rationale}` and `{label}`, `shots` are `{input, rationale, label}` worked
    examples, joined by `separator`."""

    template: str = "Q: {input}\nA:"
    answer: str = " {rationale} The answer is {label}."
    shots: list[dict[str, Any]] = Field(default_factory=list)
    separator: str = "\n\n"


class GenerationConfig(StrictModel):
    """How the teacher writes: up to `max_new_tokens`, greedy at `temperature` 0 (sampling, seeded by
    `seed`, needs a Hugging Face teacher), `batch_size` prompts at a time."""

    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)


class RationalesConfig(StrictModel):
    """The `rationales:` block: where the step-by-step method's rationales come from.

    `source: data`: every JSONL row holds one in `field` (`edgekd.data.rationales` documents the
    format); with `label_source: teacher` the row's `teacher_label_field` holds the teacher's label.
    `source: teacher`: the recipe's teacher writes a rationale and a label for each training input,
    prompted with `prompt` and `generation`, read back with `parse` (a regular expression with named
    groups `rationale` and `label`); outputs that do not parse are left out, and answers whose label
    disagrees with the ground truth are kept or dropped (`disagreeing`). The generations are cached
    in the workdir (`rationales/`), keyed by the teacher's weights, the prompt and the inputs, and a
    killed run resumes them."""

    source: Literal["data", "teacher"]
    field: str = "rationale"
    teacher_label_field: str = "teacher_label"
    prompt: PromptConfig = PromptConfig()
    generation: GenerationConfig = GenerationConfig()
    parse: str = DEFAULT_PARSE
    disagreeing: Literal["keep", "drop"] = "keep"

    @model_validator(mode="after")
    def _prompting(self) -> RationalesConfig:
        if self.source == "teacher":
            _value_error(self.prompting)
        return self

    def prompting(self) -> TeacherPrompting:
        prompt, generation = self.prompt, self.generation
        return TeacherPrompting(
            template=prompt.template, answer=prompt.answer, separator=prompt.separator,
            shots=tuple(prompt.shots),  # type: ignore[arg-type]  # TeacherPrompting reads and checks the dicts
            parse=self.parse, max_new_tokens=generation.max_new_tokens, temperature=generation.temperature,
            seed=generation.seed, keep_disagreeing=self.disagreeing == "keep",
        )  # fmt: skip


@dataclass
class LabelTask:
    """The step-by-step data of a run, beside the label-task splits of its TextBundle.

    `rationale_rows` are the rationale task's (x, y) for each training row, in the data's layout
    (unpacked: seq2seq decoder inputs are made per batch); None for the one-target positions.
    `examples` holds each split's examples (val and test with their ground-truth labels)."""

    config: StepByStepConfig
    tokens: Tokens
    architecture: Architecture
    examples: dict[str, list[RationaleExample]]
    rationale_rows: TensorDataset | None
    max_new_tokens: int
    max_length: int  # the data's tokens per sequence: prompts are cut as the data cuts them
    source_length: int | None = None  # the packed training rows' source width (seq2seq)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    def label_batch(self, x: torch.Tensor, y: torch.Tensor) -> TokenBatch:
        """The runner's training rows (packed for seq2seq) as a TokenBatch."""
        if self.source_length is not None:
            source, decoder = x[:, : self.source_length], x[:, self.source_length :]
            return self._batch(source, y, decoder)
        return self._batch(x, y, None)

    def rationale_batch(self, index: torch.Tensor, device: torch.device) -> TokenBatch | None:
        """The rationale task of the training rows at `index`, cut to its longest real row."""
        if self.rationale_rows is None:
            return None
        x, y = (t[index.cpu()] for t in self.rationale_rows.tensors)
        pad = self.tokens.pad_id
        x = x[:, : int((x != pad).sum(1).max())]
        if self.architecture == "seq2seq":
            y = y[:, : int((y != IGNORE_INDEX).sum(1).max())]
            return self._batch(x, y, shift_right(y, start=self.tokens.start_id, pad=pad)).to(device)
        return self._batch(x, y[:, : x.shape[1]], None).to(device)

    def _batch(self, x: torch.Tensor, y: torch.Tensor, decoder: torch.Tensor | None) -> TokenBatch:
        return TokenBatch(
            input_ids=x, attention_mask=(x != self.tokens.pad_id).long(), target_ids=y.clamp(min=0),
            target_mask=(y != IGNORE_INDEX).long(), decoder_input_ids=decoder,
        )  # fmt: skip

    def prompts(self, split: str, rows: int | None = None) -> list[list[int]]:
        """The label task's prompts as the data encodes them: a seq2seq source ends in its end token and
        is cut to max_length; a causal prompt keeps its end, leaving room for the answer."""
        encoded = [self.tokens.encode(self.config.label_prefix + e.input) for e in self.examples[split][:rows]]
        if self.architecture == "seq2seq":
            return [(ids + [self.tokens.eos_id])[: self.max_length] for ids in encoded]
        room = max(self.max_length - self.max_new_tokens, 1)
        return [ids[-room:] for ids in encoded]

    def exact_match(self, step: NextTokenLogits, split: str = "test", rows: int | None = None, batch_size: int = 64) -> float:
        """Share of the split's first `rows` examples whose label, read from the greedy answer to their
        `predict:` prompt, equals the ground truth (`edgekd.data.rationales.normalize_label`)."""
        prompts, examples = self.prompts(split, rows), self.examples[split][:rows]
        answers = []
        for start in range(0, len(prompts), batch_size):
            generation = greedy_decode(
                step, prompts[start : start + batch_size], max_new_tokens=self.max_new_tokens, eos_token_id=self.tokens.eos_id,
                pad_token_id=self.tokens.pad_id, decoder_start_token_id=self.tokens.start_id if self.architecture == "seq2seq" else None,
            )  # fmt: skip
            answers += [extract_label(self.tokens.decode(ids), self.config) for ids in generation.tokens]
        return exact_match(answers, [e.label or "" for e in examples])

    def model_exact_match(self, model: nn.Module, split: str = "test") -> float:
        """`exact_match` of a PyTorch model, in eval mode (its mode is restored after)."""
        was_training = model.training
        model.eval()
        try:
            return self.exact_match(TorchNextToken(model), split)
        finally:
            model.train(was_training)


def _architecture(bundle: TextBundle) -> Architecture:
    return "seq2seq" if bundle.task == "seq2seq" else "decoder"


def split_examples(bundle: TextBundle, options: TextOptions, rationales: RationalesConfig) -> dict[str, list[RationaleExample]]:
    """Each split's rows as examples: input, ground-truth label (the generation target) and, from the
    data, the rationale and the teacher's label where the rows hold them."""
    assert options.target is not None

    def text(row: dict[str, Any], name: str) -> str | None:
        return None if rationales.source != "data" or row.get(name) is None else str(row[name])

    return {
        split: [
            RationaleExample(str(row[options.input]), str(row[options.target]), text(row, rationales.field), text(row, rationales.teacher_label_field))
            for row in rows
        ]
        for split, rows in bundle.rows.items()
    }  # fmt: skip


def label_task_bundle(
    bundle: TextBundle, options: TextOptions, config: StepByStepConfig, examples: dict[str, list[RationaleExample]],
    *, rationales: bool,
) -> tuple[TextBundle, LabelTask]:
    """The label task's bundle (packed) built from the examples with the bundle's tokenizer, and the
    LabelTask beside it. Without `rationales` (the teacher has yet to write them) training rows hold
    the label task alone."""
    truth = dataclasses.replace(config, label_source="ground_truth")  # scored against the ground truth
    train, rationale = training_pairs(examples["train"], config) if rationales else (label_pairs(examples["train"], truth), [])
    pairs = {"train": train, **{split: label_pairs(examples[split], truth) for split in ("val", "test")}}
    layout = options.model_copy(update={"input": "input", "target": "target", "extras": ()})
    tokenizer = bundle.tokenizer
    assert tokenizer is not None
    label_ids, rationale_ids = (tokenizer.encode([text], special_tokens=False)[0] for text in (config.label_prefix, config.rationale_prefix))
    if rationales and config.rationale_position == "separate" and label_ids == rationale_ids:
        raise InputError(
            f"prefixes: the tokenizer ({tokenizer.source}) reads the label prefix {config.label_prefix!r} and the rationale "
            f"prefix {config.rationale_prefix!r} as the same tokens {label_ids}, so the student could not tell the tasks apart; "
            "choose prefixes its vocabulary holds"
        )
    if rationales and config.rationale_position != "separate":  # the label is found by its marker in what the student writes
        marker = config.answer_marker if config.rationale_position == "before_label" else config.explanation_marker
        written = tokenizer.decode(tokenizer.encode([marker], special_tokens=False)[0])
        if not marker_pattern(marker).search(written):
            raise InputError(
                f"rationale_position: {config.rationale_position} joins label and rationale with {marker.strip()!r}, which the "
                f"tokenizer ({tokenizer.source}) writes back as {written.strip()!r}: the label could not be found in an answer; "
                "use a tokenizer whose vocabulary holds it, or rationale_position: separate"
            )

    def split_of(name: str, chosen: Sequence[Any]) -> TextSplit:
        return TextSplit([{"input": p.source, "target": p.target} for p in chosen], f"the {name} rows of the step-by-step label task")

    encoded, truncated = encode_rows(layout, tokenizer, {name: split_of(name, chosen) for name, chosen in pairs.items()})
    rows = encode_rows(layout, tokenizer, {"rationale": split_of("rationale", rationale)})[0]["rationale"] if rationale else None
    built = dataclasses.replace(bundle, train=encoded["train"], val=encoded["val"], test=encoded["test"], truncated=truncated).packed()
    answer_tokens = max(int((part.tensors[1] != IGNORE_INDEX).sum(1).max()) for part in (encoded["train"], encoded["test"]))
    task = LabelTask(
        config=config, tokens=text_tokens(tokenizer), architecture=_architecture(bundle), examples=examples,
        rationale_rows=rows, max_new_tokens=answer_tokens, max_length=options.max_length, source_length=built.source_length,
    )  # fmt: skip
    return built, task


def teacher_generate(teacher: nn.Module, tokens: Tokens, architecture: Architecture, prompting: TeacherPrompting) -> Generate:
    """The teacher as a text generator: a Hugging Face model samples or decodes with its own
    `.generate`; a built-in one decodes greedily through the loop ONNX Runtime runs."""
    hugging_face = hasattr(teacher, "generate") and hasattr(getattr(teacher, "config", None), "model_type")
    if hugging_face:
        return hf_generate_fn(
            teacher, tokens, architecture, max_new_tokens=prompting.max_new_tokens, temperature=prompting.temperature, seed=prompting.seed,
        )  # fmt: skip
    if prompting.temperature > 0:
        raise InputError(
            "rationales.generation.temperature: the teacher is a built-in model, which writes greedily; "
            "set temperature 0 or use a Hugging Face teacher (hf:DIR)"
        )
    return greedy_generate_fn(teacher, tokens, architecture, max_new_tokens=prompting.max_new_tokens)


def teacher_written(
    teacher: nn.Module, examples: Sequence[RationaleExample], rationales: RationalesConfig, tokens: Tokens,
    architecture: Architecture, workdir: Path, progress: Progress | None, max_length: int | None,
) -> tuple[list[RationaleExample], dict[str, Any]]:
    """The teacher's rationales and labels for the training examples (cached in `workdir/rationales`),
    parsed, with the summary the report shows. `max_length`: the positions a built-in teacher has,
    which a prompt and its answer must fit in."""
    prompting = rationales.prompting()
    if max_length is not None:
        longest = max(len(tokens.encode(prompting.prompt(e.input))) for e in examples)
        if longest + prompting.max_new_tokens > max_length:
            raise InputError(
                f"rationales: the teacher's longest prompt is {longest} tokens and generation.max_new_tokens "
                f"{prompting.max_new_tokens} more, over data.options.max_length {max_length}, the positions the built-in "
                "teacher has; raise max_length, lower max_new_tokens or use fewer prompt.shots"
            )
    generate = teacher_generate(teacher, tokens, architecture, prompting)
    kept, summary = teacher_rationales(
        generate, examples, prompting, workdir / "rationales", module_digest(teacher),
        batch_size=rationales.generation.batch_size, progress=progress,
    )  # fmt: skip
    if not kept:
        raise InputError(
            f"rationales: none of the teacher's {len(examples)} outputs gave a usable rationale and label "
            f"({summary['unparsed']} did not parse with rationales.parse, {summary['dropped']} dropped as disagreeing); "
            f"first outputs: {summary['unparsed_examples'][:2]!r}"
        )
    return kept, {"source": "teacher", **summary}


@methods.register(name=METHOD)
class StepByStep(Term):
    """α·L_label + (1−α)·L_rationale on generation text with rationales (module docstring). Beside
    token-level `kd` its label rows are the ones kd distills, when teacher and student share a vocabulary."""

    Config = StepByStepTermConfig
    config: StepByStepTermConfig
    example_data: ClassVar[str] = "rationales"

    def __init__(self, config: TermConfig, phase: Phase):
        super().__init__(config, phase)
        task = getattr(phase.source, "label_task", None)
        if task is None:
            raise InputError(
                f"distillation method {METHOD!r} trains on text with rationales: give the recipe a rationales: block "
                "and generation text (data.options.task: generate) — through edgekd.compress"
            )
        self.task: LabelTask = task
        settings = self.config.settings()
        shaping = ("label_prefix", "rationale_prefix", "rationale_position", "label_source")
        if any(getattr(settings, name) != getattr(task.config, name) for name in shaping):
            raise InputError(
                f"this {METHOD} term's prefixes, rationale_position or label_source differ from those the run's data was "
                "built with; every step-by-step block of a recipe shares them"
            )
        self.alpha = 1.0 if settings.alpha is None else settings.alpha

    def loss(self, batch: Batch) -> torch.Tensor:
        label = self.task.label_batch(batch.x, batch.y)
        assert batch.index is not None, "the runner's training batches carry sample positions"
        rationale = self.task.rationale_batch(batch.index, batch.x.device) if self.alpha != 1 else None
        student = self.phase.student_forward or self.phase.student

        def forward(tokens: TokenBatch) -> torch.Tensor:
            if tokens is label:  # the batch's own logits, shared with the other terms
                return batch.student_logits
            inputs = {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}
            if tokens.decoder_input_ids is not None:
                inputs["decoder_input_ids"] = tokens.decoder_input_ids
            return logits_of(run_model(student, inputs))

        return step_by_step_loss(forward, TaskBatches(label, rationale), self.alpha)
