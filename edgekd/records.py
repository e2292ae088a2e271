"""report.json as typed records: stages produce them; gates, the report renderers and the
terminal summary read them. JSON is only the on-disk form (`Report.from_json` / `to_json`),
and its shape is the one `edgekd.report/1` has always had, so old reports still gate and render.

A leaf module: it imports nothing of edgekd's but the recipe building blocks.

>>> step = StepRecord(stage="prune", stage_index=0, step=1, steps=2, accuracy=0.95,
...                   accuracy_before_recovery=0.9, macs=1_000, params=100, size_bytes=400, target=500)
>>> step.to_json()["target"], "int8" in step.to_json()  # a stage's own fields appear when it set them
(500, False)
>>> Latency.model_validate({"models": {"teacher": {"64": {"median_ms": 2.0, "p90_ms": 2.5}}}}).batches()
[64]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from edgekd.config import StrictModel

REPORT_SCHEMA = "edgekd.report/1"


class Record(BaseModel):
    """Base of every record. Unknown keys are errors; the fields named in `omit_when_empty` are
    left out of the JSON while unset (None, {} or []), as the runner has always written them."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    omit_when_empty: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler: Any) -> Any:
        data = handler(self)
        return {key: value for key, value in data.items() if not (key in self.omit_when_empty and value in (None, {}, []))}

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Any:
        return cls.model_validate(data)


# ---------------------------------------------------------------- models and files


class ModelMetrics(Record):
    """A model as the report measures it: test accuracy (PyTorch, a fraction), MACs per sample
    (batch 1), trainable parameters, and the bytes of its parameters and buffers as stored. For
    generation data `accuracy` is the token accuracy on real target tokens and `perplexity` is set."""

    accuracy: float
    macs: int
    params: int
    size_bytes: int
    perplexity: float | None = Field(None, description="generation: test perplexity per real target token")


class Parity(Record):
    """How closely ONNX Runtime reproduces PyTorch on validation batches (top-1 agreement)."""

    agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    samples: int
    min_agreement: float


class StemTimingCell(Record):
    """The two candidate stems of an int8 file at one spinning setting and batch size."""

    int8_ms: float
    float_ms: float
    float_vs_int8: dict[str, Any] = Field(description="edgekd.bench's ratio over rounds: median_ratio, ci_low, ci_high, per_round, …")


class StemPlacement(Record):
    """How export shipped the int8 file's image stem: `reason` when nothing was timed (the profile
    left no choice, or export.stem pinned it); with `stem: auto`, the timings that decided, by rule."""

    omit_when_empty = frozenset({"reason", "rule", "mode", "rounds", "threads", "rotation", "timings", "findings", "layout_changes"})

    choice: Literal["int8", "float"]
    reason: str | None = None
    rule: str | None = None
    mode: str | None = None
    rounds: int | None = None
    threads: int | None = None
    rotation: list[str] = Field(default_factory=list)
    timings: dict[str, StemTimingCell] = Field(default_factory=dict, description="by 'spinning <setting>, batch <n>'")
    findings: list[str] = Field(default_factory=list)
    layout_changes: dict[str, int] = Field(default_factory=dict, description="Transposes and NCHWc reorders per candidate")


class OnnxFile(Record):
    """One exported file: `path` relative to the workdir, its ONNX Runtime test accuracy and parity;
    an int8 file also says in which precision it ships the image stem, and why."""

    omit_when_empty = frozenset({"exporter", "parity", "stem", "placement", "perplexity", "exact_match", "exact_match_rows"})

    path: str
    exporter: str | None = None
    parity: Parity | None = None
    accuracy: float | None = None
    perplexity: float | None = Field(None, description="generation: ONNX Runtime test perplexity (accuracy is the token accuracy)")
    exact_match: float | None = Field(None, description="generation: greedy answers decoded by ONNX Runtime equal to the targets")
    exact_match_rows: int | None = Field(None, description="generation: how many test rows exact_match scored")
    size_bytes: int
    stem: Literal["int8", "float"] | None = None
    placement: StemPlacement | None = None

    @property
    def model_key(self) -> str:
        """The file's name without `.onnx`: its model key in the latency section."""
        return Path(self.path).name.removesuffix(".onnx")


class TeacherRecord(ModelMetrics):
    """The teacher, with its validation accuracy (None without a validation split)."""

    omit_when_empty = frozenset({"onnx", "val_accuracy", "perplexity"})

    model: str
    val_accuracy: float | None = None
    onnx: OnnxFile | None = None


class StudentRecord(ModelMetrics):
    """The final student; `onnx` holds its exported files by precision (`fp32`, `int8`). `pretrained`: the
    folder (relative to the workdir) where a Hugging Face student was saved with `save_pretrained` — its
    float weights, pruned sizes in its config — which `from_pretrained` reloads."""

    omit_when_empty = frozenset({"onnx", "pretrained", "perplexity"})

    model: str
    onnx: dict[str, OnnxFile] = Field(default_factory=dict)
    pretrained: str | None = None


class StepRecord(ModelMetrics):
    """One finished step: the student after recovery, and before it (None without recovery).
    The fields after `recovery_seconds` belong to one stage kind and appear only where it set them."""

    omit_when_empty = frozenset({
        "seconds", "recovery_epochs", "recovery_seconds", "val_accuracy", "teacher_val_accuracy", "passes_teacher",
        "target", "target_metric", "prunable_channels", "int8", "quant_profile", "perplexity",
        "int4_block_size", "int4_accuracy_level", "label_exact_match",
    })  # fmt: skip

    stage: str
    stage_index: int
    step: int
    steps: int
    accuracy_before_recovery: float | None
    seconds: float | None = None
    recovery_epochs: int | None = None
    recovery_seconds: float | None = None
    val_accuracy: float | None = Field(None, description="the student's accuracy on the validation split (None without one)")
    teacher_val_accuracy: float | None = None
    passes_teacher: bool | None = Field(None, description="the student is ahead of the teacher on the validation split")
    target: int | None = Field(None, description="prune: the value this step aimed at, in target_metric")
    target_metric: str | None = Field(None, description="prune: channels, macs or params")
    prunable_channels: int | None = Field(None, description="prune: channels left that pruning may remove")
    int8: bool | None = Field(None, description="qat: the student is quantized to int8 from this step on (false: int4 weight-only)")
    quant_profile: str | None = Field(None, description="qat: the quantization profile")
    int4_block_size: int | None = Field(None, description="qat int4: input features per block of scales")
    int4_accuracy_level: int | None = Field(None, description="qat int4: MatMulNBits' activation compute type (0 float … 4 int8)")
    label_exact_match: float | None = Field(
        None, description="step-by-step: the test labels the student writes for `predict:` prompts (greedy), exactly right"
    )


class TeacherCache(Record):
    """The teacher's soft labels kept in the workdir: one file per view the recovery phases read.
    For generation data, the top-k next-token log-probabilities of every real target token of the
    training split: `k`, the `tokens` stored, and `bytes_per_token` on disk (everything counted)."""

    omit_when_empty = frozenset({"k", "tokens", "bytes_per_token"})

    folder: str
    format: str = Field(description="'logits', 'top-k logits + tail', or 'top-k log-probs + tail per token'")
    precision: list[str]
    views: int
    bytes: int
    build_seconds: float
    k: int | None = None
    tokens: int | None = None
    bytes_per_token: float | None = None


class TeacherTargets(Record):
    """Sequence-level KD (`distill.targets: teacher`): the teacher's greedy answers that replaced the
    training split's targets — `replaced` rows, `differing` from the data's answer — and the cache of
    generations they came from (`folder` in the workdir, its `bytes`; `generated` in this run, `reused`)."""

    folder: str
    bytes: int
    replaced: int
    differing: int
    generated: int
    reused: int
    max_new_tokens: int


class DatasetSummary(Record):
    """The data a run read. Image data: its normalization. Text data: its task, tokenizer (`vocab_size`,
    `tokenizer` source), `max_length`, rows cut to it per split (`truncated`) and class `labels`."""

    omit_when_empty = frozenset({"task", "vocab_size", "max_length", "tokenizer", "truncated", "labels"})

    name: str
    input_shape: list[int] = Field(default_factory=list)
    num_classes: int | None = None
    sizes: dict[str, int] = Field(default_factory=dict)
    mean: list[float] | None = None
    std: list[float] | None = None
    task: str | None = None
    vocab_size: int | None = None
    max_length: int | None = None
    tokenizer: str | None = None
    truncated: dict[str, int] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- latency


class BatchLatency(Record):
    """One model at one batch size. Deployment mode adds the fresh processes' own medians, their
    pids and a multi-modality finding; `median_ms` is then the median of the process medians.
    `samples_ms` (every timed run) is kept for the first spinning condition only."""

    omit_when_empty = frozenset({"samples_ms", "process_medians_ms", "pids", "finding"})

    median_ms: float
    p90_ms: float
    process_medians_ms: list[float] | None = None
    pids: list[int] | None = None
    finding: str | None = None
    samples_ms: list[float] = Field(default_factory=list)


class Speedup(Record):
    """Teacher median / deployed student median at one batch, with its CI. Deployment mode: the
    median over rounds of each round's ratio (`per_round`), with the interval's exact coverage."""

    omit_when_empty = frozenset({"model", "per_round", "ci_coverage"})

    ratio: float
    ci: tuple[float, float]
    model: str | None = None
    per_round: list[float] | None = None
    ci_coverage: float | None = None


class LatencyCondition(Record):
    """Latency per model (file stem) and integer batch size, and the speedups, under one setting."""

    models: dict[str, dict[int, BatchLatency]]
    speedup: dict[int, Speedup] = Field(default_factory=dict)


BenchMode = Literal["deployment", "paired"]


class Latency(LatencyCondition):
    """The bench stage's section, for its first spinning setting; `conditions` holds the others
    (a deployment run that timed spinning on and off). Reports from before deployment mode have no
    `mode` and were paired."""

    omit_when_empty = frozenset({"mode", "spinning", "conditions", "findings", "reference"})

    mode: BenchMode | None = None
    backend: str | None = None
    threads: int | None = None
    spinning: str | None = None
    conditions: dict[str, LatencyCondition] = Field(default_factory=dict)
    findings: list[str] = Field(default_factory=list)
    device: str | None = None
    reference: str | None = None

    def batches(self) -> list[int]:
        """Every benchmarked batch size, ascending."""
        return sorted({batch for per_batch in self.models.values() for batch in per_batch})

    def method(self) -> str:
        """How the speedups were measured, e.g. 'deployment mode, spinning on'."""
        mode = f"{self.mode or 'paired'} mode"
        return f"{mode}, spinning {self.spinning}" if self.spinning else mode


# ---------------------------------------------------------------- gates


def format_value(value: float | None, unit: str) -> str:
    """A gate's number in its unit: fraction (0.95 → 95.00%), points, MB, x (speedup), ms."""
    if value is None:
        return "–"
    formats = {"fraction": f"{value:.2%}", "points": f"{value:.2f} points", "MB": f"{value:.3f} MB", "x": f"{value:.2f}×", "ms": f"{value:.3f} ms"}
    return formats[unit]


def is_lower_bound(gate_name: str) -> bool:
    """min_… gates pass at or above the threshold; max_… gates at or below it."""
    return gate_name.rpartition(".")[2].startswith("min_")


class GatesConfig(StrictModel):
    """The recipe's `gates:` block. Every gate is optional; an unset gate is not evaluated.
    Gates are the `min_…` / `max_…` fields; `…_batch` fields choose what a gate reads.

    Accuracy gates read the deployed artefact's ONNX Runtime accuracy (int8 ONNX, else fp32 ONNX,
    else the PyTorch student); size gates read that artefact's file size. `reads` (in a field's
    schema) names what a stage must provide for the gate to be measurable — the recipe checks it
    against the plan before anything trains."""

    min_accuracy: float | None = Field(None, ge=0, le=1, description="Lowest accepted accuracy, a fraction (0.9 = 90%).")
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="Most accuracy the student may lose vs the teacher, in percentage points (0.5 = 0.5%)."
    )
    max_size_mb: float | None = Field(None, gt=0, description="Largest accepted deployed file, in MB (10^6 bytes).")
    min_speedup: float | None = Field(
        None, gt=0, description="Lowest accepted teacher/student median latency ratio.",
        json_schema_extra={"reads": "latency", "batch_field": "speedup_batch"},
    )  # fmt: skip
    speedup_batch: int | None = Field(None, ge=1, description="Batch size the speedup gates read; default: the largest benchmarked.")
    max_latency_ms: float | None = Field(
        None, gt=0, description="Highest accepted median latency of the deployed model. Absolute time: meaningful only on a pinned device.",
        json_schema_extra={"reads": "latency", "batch_field": "latency_batch"},
    )  # fmt: skip
    latency_batch: int | None = Field(None, ge=1, description="Batch size for max_latency_ms; default: the smallest benchmarked (per-request latency).")

    @classmethod
    def gate_names(cls) -> list[str]:
        return [name for name in cls.model_fields if name.startswith(("min_", "max_"))]

    @classmethod
    def requirement(cls, gate: str) -> tuple[str | None, str | None]:
        """(what a stage must provide for `gate`, the field naming the batch it reads), None where nothing."""
        extra = cls.model_fields[gate].json_schema_extra or {}
        assert isinstance(extra, dict)
        return extra.get("reads"), extra.get("batch_field")  # type: ignore[return-value]

    def thresholds(self) -> dict[str, float]:
        """The gates this block sets, by name, in declaration order."""
        return {name: value for name in self.gate_names() if (value := getattr(self, name)) is not None}

    def has_thresholds(self) -> bool:
        return bool(self.thresholds())


class GateResult(Record):
    """One gate's verdict. `measured` and `threshold` are in `unit`: fraction (0–1), points, MB, x, ms.
    `measured` is None when the report lacks what the gate reads (then the gate fails)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    measured: float | None
    threshold: float
    passed: bool
    reason: str
    unit: str

    @property
    def is_lower_bound(self) -> bool:
        return is_lower_bound(self.name)


# ---------------------------------------------------------------- the report


class TeacherFiles(Record):
    onnx: OnnxFile


class StudentFiles(Record):
    onnx: dict[str, OnnxFile]


class Artefacts(Record):
    """What the report holds beyond the step records: the files and timings of the artefact stages
    (export, bench) and the summary of the teacher's soft-label cache. The runner keeps it in every
    checkpoint, so a resumed run reports the files and timings of steps it does not repeat.
    Its JSON is the part of report.json it fills in."""

    omit_when_empty = frozenset({"teacher", "student", "latency", "bench", "teacher_cache", "teacher_targets", "generation"})

    teacher: TeacherFiles | None = None
    student: StudentFiles | None = None
    latency: Latency | None = None
    bench: dict[str, dict[str, Any]] = Field(default_factory=dict, description="backend → its edgekd.bench/1 results")
    teacher_cache: TeacherCache | None = None
    teacher_targets: TeacherTargets | None = None
    generation: dict[str, Any] | None = Field(None, description="language models: the bench stage's edgekd.bench.generation results")

    def merged(self, later: Artefacts) -> Artefacts:
        """These artefacts updated by later ones: their files join (and replace) these; their timings and cache summary replace these."""
        student = {**(self.student.onnx if self.student else {}), **(later.student.onnx if later.student else {})}
        return Artefacts(
            teacher=later.teacher or self.teacher,
            student=StudentFiles(onnx=student) if student else None,
            latency=later.latency or self.latency,
            bench={**self.bench, **later.bench},
            teacher_cache=later.teacher_cache or self.teacher_cache,
            teacher_targets=later.teacher_targets or self.teacher_targets,
            generation=later.generation or self.generation,
        )


@dataclass(frozen=True)
class Deployed:
    """The artefact that ships: the int8 ONNX file if exported, else the fp32 one, else the PyTorch student."""

    label: str
    accuracy: float
    size_bytes: int
    latency_key: str  # its model key in the latency section
    onnx_kind: str | None  # "int8", "int4", "fp32", or None for the PyTorch student


class Report(Record):
    """report.json. `student` is None until the run finishes (then `complete` is true)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)
    omit_when_empty = frozenset(
        {"recipe_hash", "created", "edgekd", "workdir", "dataset", "student", "latency", "bench", "teacher_cache", "teacher_targets", "generation",
         "rationales", "gates_config", "gates", "non_finite"}
    )

    schema_: Literal["edgekd.report/1"] = Field(REPORT_SCHEMA, alias="schema")
    name: str
    recipe_hash: str | None = None
    created: str | None = None
    edgekd: str | None = None
    workdir: str | None = None
    world_size: int = 1
    dataset: DatasetSummary | None = None
    teacher: TeacherRecord
    steps: list[StepRecord] = Field(default_factory=list)
    environment: dict[str, Any] = Field(default_factory=dict)
    complete: bool = False
    student: StudentRecord | None = None
    latency: Latency | None = None
    bench: dict[str, dict[str, Any]] = Field(default_factory=dict)
    teacher_cache: TeacherCache | None = None
    teacher_targets: TeacherTargets | None = None
    generation: dict[str, Any] | None = None  # language models: time to first token and tokens/s per model and batch
    # Step-by-step: where the rationales came from; from a teacher, how many outputs did not parse or disagree.
    rationales: dict[str, Any] | None = None
    gates_config: GatesConfig | None = None
    gates: list[GateResult] | None = None
    # Written by edgekd.files.write_json: the path of each number that was NaN or infinite (now null).
    non_finite: dict[str, str] = Field(default_factory=dict)

    def apply(self, artefacts: Artefacts) -> None:
        """Take in what artefact stages produced (the student's files once the student is final)."""
        if artefacts.teacher is not None:
            self.teacher = self.teacher.model_copy(update={"onnx": artefacts.teacher.onnx})
        if artefacts.student is not None and self.student is not None:
            self.student = self.student.model_copy(update={"onnx": {**self.student.onnx, **artefacts.student.onnx}})
        if artefacts.latency is not None:
            self.latency = artefacts.latency
        self.bench = {**self.bench, **artefacts.bench}
        if artefacts.teacher_cache is not None:
            self.teacher_cache = artefacts.teacher_cache
        if artefacts.teacher_targets is not None:
            self.teacher_targets = artefacts.teacher_targets
        if artefacts.generation is not None:
            self.generation = artefacts.generation

    def deployed(self) -> Deployed:
        """What ships, and the numbers the gates read for it."""
        student = self.final_student()
        kind = next((k for k in ("int8", "int4", "fp32") if k in student.onnx), None)
        if kind is None:
            return Deployed("student (PyTorch)", student.accuracy, student.size_bytes, "student", None)
        entry = student.onnx[kind]
        name = Path(entry.path).name
        # An export that skipped its ONNX evaluation falls back to the PyTorch number, and says so.
        label = name if entry.accuracy is not None else f"{name} (PyTorch accuracy)"
        accuracy = entry.accuracy if entry.accuracy is not None else student.accuracy
        return Deployed(label, accuracy, entry.size_bytes, entry.model_key, kind)

    def final_student(self) -> StudentRecord:
        if self.student is None:
            raise ValueError(f"report {self.name!r} has no student: the run did not finish")
        return self.student

    def model_accuracy(self, model: str) -> float | None:
        """The accuracy of a benchmarked model key: `teacher`, or an ONNX file's stem (`student.int8`)."""
        if model == "teacher":
            return self.teacher.accuracy
        student = self.final_student()
        for entry in student.onnx.values():
            if entry.model_key == model and entry.accuracy is not None:
                return entry.accuracy
        return student.accuracy if model == "student" else None

    def speedups(self) -> list[tuple[int, Speedup]]:
        """The side-by-side speedups by ascending batch size; empty without a bench stage."""
        return sorted(self.latency.speedup.items()) if self.latency else []


def as_report(report: Report | Mapping[str, Any]) -> Report:
    """A Report, from itself or from its JSON form (a report.json read with `json.load`)."""
    return report if isinstance(report, Report) else Report.from_json(report)
