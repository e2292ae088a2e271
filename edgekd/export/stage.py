"""The `export` stage: ONNX files of the teacher and the student, checked in ONNX Runtime.

    - export: {opset: 17, dynamic_batch: true}

writes into the workdir `teacher.onnx` and `student.onnx` (fp32; for a quantized student,
its float weights without fake quantization) and, when the student went through a qat
stage, `student.int8.onnx` with QuantizeLinear/DequantizeLinear nodes (`student.int4.onnx` with
MatMulNBits weight-only int4 layers after `qat: {profile: int4}`). Each student
file must reproduce PyTorch on validation batches (`parity_min_agreement`, top-1), and
every file's test accuracy is measured by running it in ONNX Runtime — the accuracy
the report shows for the exported model.

Where the profile leaves the image stem's precision open (ort-x86), `stem` decides: int8,
float, or auto — both files timed in deployment mode and the faster shipped
(`edgekd.export.placement`); the report's `student.onnx.int8.stem` and `.placement` say
which, and why."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterator, Literal, Mapping

import torch
from pydantic import Field
from torch import nn

from edgekd.config import StrictModel
from edgekd.data.text import causal_prompts
from edgekd.facts import IGNORE_INDEX
from edgekd.export.onnx_export import export_onnx, write_metadata
from edgekd.export.placement import StemTiming, choose_stem
from edgekd.export.runtime import onnx_accuracy, parity
from edgekd.decoding import OnnxNextToken
from edgekd.export.runtime import session
from edgekd.export.transformer import SpecialTokens, export_sequence_model, onnx_exact_match, onnx_generation_scores, sequence_parity
from edgekd.quant.graph import float_stem, quant_schedule, stem_layers
from edgekd.quant.stage import float_model
from edgekd.quant.profiles import profiles
from edgekd.quant.swap import INT4_PROFILE
from edgekd.records import Artefacts, OnnxFile, Parity, StemPlacement, StudentFiles, TeacherFiles
from edgekd.stage import Role, Stage, StageContext, StepResult, View, stages


class ParityThresholds(StrictModel):
    """Minimum top-1 agreement between PyTorch and ONNX Runtime, per precision."""

    fp32: float = Field(0.999, ge=0, le=1)
    int8: float = Field(0.99, ge=0, le=1)
    int4: float = Field(0.99, ge=0, le=1)  # MatMulNBits computes with the same rounded weights the student trained with


class ExportConfig(StrictModel):
    """Settings of an `export:` block. `exporter` applies to the float files: auto uses the
    dynamo exporter at opset ≥ 18 (the first it writes) and TorchScript below; the int8
    file is always TorchScript, the proven path for fake quantization. `stem`: how the int8
    file ships the image stem where the profile leaves it open — int8, float, or auto (the
    faster in deployment mode, timed as `stem_timing` says; pin it for a reproducible file).
    `exact_match_rows`: how many test rows a language model's files answer greedily in ONNX Runtime
    (exact match against the targets; each answer is a decoding loop, so keep it small)."""

    opset: int = Field(17, ge=13, le=21)
    dynamic_batch: bool = True
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto"
    parity_min_agreement: ParityThresholds = ParityThresholds()
    parity_batches: int = Field(4, ge=1)
    stem: Literal["auto", "int8", "float"] = "auto"
    stem_timing: StemTiming = StemTiming()
    exact_match_rows: int = Field(16, ge=1)


# The ONNX graph family of a text model by its data's task (edgekd.export.transformer); classifiers are encoders.
SEQUENCE_FAMILIES = {"causal-lm": "decoder", "seq2seq": "seq2seq"}


@stages.register(name="export")
class ExportStage(Stage):
    Config = ExportConfig
    config: ExportConfig
    compresses = False
    provides = ("onnx",)

    def apply(self, ctx: StageContext, step: int) -> StepResult:
        student = ctx.student
        schedule = quant_schedule(student)
        float_student = float_model(student)
        # The teacher first: `stem: auto` times the candidate int8 files with the teacher in the rotation.
        teacher = self._write(ctx, ctx.teacher, "teacher", "teacher.onnx", "fp32", check_parity=False)
        files = {"fp32": self._write(ctx, float_student, "student", "student.onnx", "fp32")}
        if schedule is not None and schedule.profile == INT4_PROFILE:
            files["int4"] = self._write(ctx, student, "student", "student.int4.onnx", "int4")
        elif schedule is not None:
            files["int8"] = self._write_int8(ctx, student)
        return StepResult(artefacts=Artefacts(teacher=TeacherFiles(onnx=teacher), student=StudentFiles(onnx=files)))

    def _write_int8(self, ctx: StageContext, student: nn.Module) -> OnnxFile:
        """student.int8.onnx, its stem in the precision `stem` picks (module docstring)."""
        schedule = quant_schedule(student)
        assert schedule is not None
        profile = profiles.get(schedule.profile)
        candidates = {"int8": student}
        if stem_layers(student, profile):
            candidates["float"] = float_stem(student, profile)
        placement = self._choose_stem(ctx, candidates)
        entry = self._write(ctx, candidates[placement.choice], "student", "student.int8.onnx", "int8", extra={"int8_stem": placement.choice})
        return entry.model_copy(update={"stem": placement.choice, "placement": placement})

    def _choose_stem(self, ctx: StageContext, candidates: dict[str, nn.Module]) -> StemPlacement:
        if len(candidates) == 1:
            return StemPlacement(choice="int8", reason="no stem conv the profile lets ship float")
        if self.config.stem != "auto":
            return StemPlacement(choice=self.config.stem, reason="export.stem")
        files = {kind: Path(ctx.workdir) / f"student.int8.stem-{kind}.onnx" for kind in candidates}
        try:
            for kind, model in candidates.items():
                export_onnx(model, files[kind], ctx.example_input(), opset=self.config.opset, dynamic_batch=self.config.dynamic_batch)
            timing = self.config.stem_timing
            if not self.config.dynamic_batch:
                timing = timing.model_copy(update={"batch_sizes": [1]})
            return choose_stem(files, Path(ctx.workdir) / "teacher.onnx", timing)
        finally:
            for path in files.values():
                path.unlink(missing_ok=True)

    def _write(
        self, ctx: StageContext, model: nn.Module, role: Role, name: str, precision: str, check_parity: bool = True,
        extra: dict[str, str] | None = None,
    ) -> OnnxFile:
        """Export one file, check it against PyTorch, measure its test accuracy in ONNX Runtime."""
        config = self.config
        path = Path(ctx.workdir) / name
        view = ctx.view(role)
        metadata = {"precision": precision, "recipe_hash": ctx.recipe_hash, "recipe": ctx.name, **(extra or {})}
        example = ctx.example_input(batch=2, role=role)
        text = isinstance(example, Mapping)
        facts = ctx.facts
        family = SEQUENCE_FAMILIES.get(facts.task, "encoder")
        if text:  # token ids and attention mask in: a classifier's encoder graph, a language model's decoder graph
            tokens = SpecialTokens(facts.pad_id or 0, facts.eos_id, facts.decoder_start_id) if family != "encoder" else None
            export_sequence_model(model, path, family, tokens=tokens, example=example, opset=config.opset, metadata=metadata)
            exporter = "torchscript"
        else:
            exporter = export_onnx(
                model, path, ctx.example_input(role=role), opset=config.opset, dynamic_batch=config.dynamic_batch,
                exporter=config.exporter if precision == "fp32" else "torchscript", metadata=metadata,
            )
        agreement = None
        if check_parity:
            threshold = getattr(config.parity_min_agreement, precision)
            inputs = [x for x, _ in islice(_batches(ctx, "val", view), config.parity_batches)]
            if text:
                found = sequence_parity(model, path, inputs, min_agreement=threshold)
                found["samples"] = found.pop("positions")  # a sequence per encoder sample, a token per decoder one
            else:
                found = parity(model, path, inputs, min_agreement=threshold)
            agreement = Parity.model_validate(found)
        scores = self._generation_scores(ctx, path, view) if family != "encoder" else {}
        accuracy = scores.pop("accuracy") if scores else onnx_accuracy(path, _batches(ctx, "test", view))
        write_metadata(path, {"test_accuracy": f"{accuracy:.6f}"})
        # Paths relative to the workdir, so a report stays valid when the run folder moves (CI artefacts).
        return OnnxFile(path=name, exporter=exporter, parity=agreement, accuracy=accuracy, size_bytes=path.stat().st_size, **scores)

    def _generation_scores(self, ctx: StageContext, path: Path, view: View) -> dict[str, float]:
        """A language model's file in ONNX Runtime: token accuracy and perplexity on the test split, and
        exact match of its greedy answers (decoded on the file itself) to the first `exact_match_rows` test rows."""
        scores = onnx_generation_scores(path, _batches(ctx, "test", view))
        rows = self.config.exact_match_rows
        labels = ctx.label_task  # step-by-step: the label read from each answer to a `predict:` prompt
        if labels is not None:
            matched, scored = labels.exact_match(OnnxNextToken(session(path)), rows=rows), len(labels.examples["test"][:rows])
        else:
            prompts, references = _answer_rows(ctx, view, rows)
            matched = onnx_exact_match(path, prompts, references, max_new_tokens=1 + max(map(len, references))) if references else None
            scored = len(references)
        exact = {"exact_match": matched, "exact_match_rows": scored} if matched is not None else {}
        return {"accuracy": scores["token_accuracy"], "perplexity": scores["perplexity"], **exact}


def _answer_rows(ctx: StageContext, view: View, rows: int) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts and reference answers (token ids) of the first `rows` test rows, across as many batches as they take."""
    prompts: list[list[int]] = []
    references: list[list[int]] = []
    for x, y in ctx.loader("test"):
        left = rows - len(prompts)
        if left <= 0:
            break
        x, y = x[:left], y[:left]
        if ctx.facts.task == "seq2seq":  # the source (with its end token) in, the target without its end token out
            source = view(x)
            prompts += [ids[mask.bool()].tolist() for ids, mask in zip(source["input_ids"], source["attention_mask"])]
            references += [[t for t in row if t not in (IGNORE_INDEX, ctx.facts.eos_id)] for row in y.tolist()]
        else:
            more_prompts, more_references = causal_prompts(x, y, ctx.facts.eos_id)
            prompts, references = prompts + more_prompts, references + more_references
    return prompts, references


def _batches(ctx: StageContext, split: str, view: View) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A split's (inputs, labels) as the model reads them (its view of the data: images, or a text
    batch's token tensors by name)."""
    return ((view(x.to(ctx.device)), y) for x, y in ctx.loader(split))
