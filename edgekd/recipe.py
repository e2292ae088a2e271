"""Recipes: YAML → a validated, immutable `Recipe`.

Every problem is reported with its field path (`stages[1].recover.epochs: must be
≥ 0 (got -1)`), all at once. `--set path=value` overrides are applied to the raw
YAML before validation, so they are validated like the file itself.

>>> recipe = load_recipe({"name": "demo", "teacher": {"model": "cnn", "train": {"epochs": 1}}},
...                      overrides=["distill.temperature=2"])
>>> recipe.distill.temperature
2.0
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import Field, GetCoreSchemaHandler, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError, core_schema

# Importing the stage packages registers their stage kinds, so a recipe can name them.
import edgekd.bench.stage  # noqa: F401
import edgekd.distill  # noqa: F401
import edgekd.export  # noqa: F401
import edgekd.prune  # noqa: F401
import edgekd.quant  # noqa: F401
from edgekd.config import StrictModel
from edgekd.data.augment import AugmentStep, check_pipeline
from edgekd.data.registry import DatasetName
from edgekd.data.text import check_nonempty_field, text_options
from edgekd.data.views import ViewSpec
from edgekd.distill.config import DistillConfig, StudentConfig, TeacherConfig
from edgekd.distill.stepbystep_method import METHOD as STEP_BY_STEP, RationalesConfig, StepByStepTermConfig
from edgekd.errors import InputError, RecipeError, read_mapping_file
from edgekd.records import GatesConfig
from edgekd.registry import close_matches, names_user_code, refused_user_code, unknown_name, user_code_allowed
from edgekd.stage import Stage, stages


class DataConfig(StrictModel):
    dataset: DatasetName = "digits"
    root: str | None = None
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    val_split: float = Field(0.1, ge=0, lt=1)
    test_split: float = Field(0.2, gt=0, lt=1)
    limit: int | None = Field(None, ge=10)
    options: dict[str, Any] = Field(default_factory=dict)
    views: dict[str, ViewSpec] = Field(default_factory=dict)
    # Training batches only (teacher and recovery), never evaluation or calibration; see edgekd.data.augment.
    augment: list[AugmentStep] = Field(default_factory=list)
    augment_views: int = Field(8, ge=1, le=100_000)

    @field_validator("augment")
    @classmethod
    def _augment_pipeline(cls, steps: list[AugmentStep]) -> list[AugmentStep]:
        check_pipeline(steps)
        return steps


class RuntimeConfig(StrictModel):
    """How training runs, not what it computes (results stay within noise of the defaults).

    `teacher_cache`: compute the teacher's logits on the training split once per teacher and view
    (the samples as stored, or each augmented view a recovery phase reads) and reuse them in every
    recovery phase and on resume (`data.views` functions must be deterministic).
    `teacher_cache_top_k`: store the top k logits plus one for the rest (`auto`: all logits up to
    100 classes, the top 20 beyond); for generation data the top k next-token log-probabilities per
    target token plus the remaining mass (`auto`: 32, at most the vocabulary). `teacher_cache_precision`: fp16 halves the cache (fp32 is kept
    for values beyond fp16's range). `precision`: autocast dtype for training. `channels_last`: NHWC
    memory format for convolutions."""

    teacher_cache: bool = True
    teacher_cache_top_k: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    teacher_cache_precision: Literal["fp16", "fp32"] = "fp16"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False


DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
PLAN_ERROR = "edgekd_plan"  # a pydantic error type whose context carries finished problem lines
# The distillation methods defined per token, for generation data: soft targets, step-by-step's two tasks, and
# hidden states per real token.
TOKEN_METHODS = ("ce", "kd", STEP_BY_STEP, "feature", "hint", "attention")


@dataclass
class PlannedStage:
    """One validated entry of `stages:`: the stage object and the distillation that recovers after each step."""

    index: int
    key: str
    stage: Stage
    recover: DistillConfig | None
    recover_path: str = "distill"  # where the recipe sets this stage's recovery: stages[i].recover or stages[i].distill
    lr_setting: str = "distill.lr"  # the field its learning rate came from (its own block, or inherited)

    @property
    def label(self) -> str:
        return label(self.index, self.key)


def label(index: int, key: str) -> str:
    """How messages name a stage: `stages[2] qat`."""
    return f"stages[{index}] {key}"


class PlanProblems(list):
    """Why `stages:` (with the gates) does not make a plan: problem lines with their field paths."""


class Plan(tuple):
    """The validated stages of a recipe, in order: a tuple of PlannedStage. The recipe builds it
    from `stages:` while it validates, so a Recipe never exists without a plan that passed every rule."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_accept_plan)


def _accept_plan(value: Any) -> Plan:
    if isinstance(value, PlanProblems):
        raise PydanticCustomError(PLAN_ERROR, "{count} problem(s) in stages", {"count": len(value), "problems": list(value)})
    if not isinstance(value, Plan):
        raise PydanticCustomError(PLAN_ERROR, "plan is built from stages", {"count": 1, "problems": ["plan: unknown field; the plan is built from stages:"]})
    return value


class Recipe(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = Field(0, ge=0, lt=2**32)
    device: str = "auto"
    workdir: str | None = None
    data: DataConfig = DataConfig()
    teacher: TeacherConfig
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    stages: list[dict[str, Any]] = Field(default_factory=list)
    gates: GatesConfig | None = None
    runtime: RuntimeConfig = RuntimeConfig()
    rationales: RationalesConfig | None = None  # the step-by-step method's rationales (edgekd.distill.stepbystep_method)
    plan: Plan = Field(default_factory=Plan, exclude=True, repr=False, description="The validated stages, built from `stages`.")

    @model_validator(mode="before")
    @classmethod
    def _build_plan(cls, data: Any) -> Any:
        return {**data, "plan": build_plan(data)} if isinstance(data, dict) else data

    @field_validator("student", mode="before")
    @classmethod
    def _student_shorthand(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps (got {value!r})")
        return value

    @model_validator(mode="after")
    def _views_exist(self) -> Recipe:
        known = ["input", *self.data.views]
        for role, view in (("teacher", self.teacher.input), ("student", self.student.input)):
            if view not in known:
                raise ValueError(f"{role}.input: {unknown_name('view', view, known)} (Define more in data.views.)")
        return self

    @model_validator(mode="after")
    def _int4_for_text_models(self) -> Recipe:
        """int4 weight-only quantizes transformers by module swap: refused for the built-in image datasets before
        anything trains (a factory's data may be text; the qat stage checks its model)."""
        if self.data.dataset == "text" or ":" in self.data.dataset:
            return self
        problems = [
            f"stages[{p.index}].qat.profile: int4 is weight-only quantization for transformers on text data "
            "(dataset: text); image models quantize to int8 (ort-x86 or tensorrt)"
            for p in self.plan if p.key == "qat" and getattr(p.stage.config, "profile", None) == "int4"
        ]  # fmt: skip
        if problems:
            raise PydanticCustomError(PLAN_ERROR, "{count} problem(s) with int4", {"count": len(problems), "problems": problems})
        return self

    @model_validator(mode="after")
    def _text_the_runner_runs(self) -> Recipe:
        """What the runner cannot do with text data yet, refused before anything loads or trains."""
        if self.data.dataset != "text":
            return self
        problems = []
        options = text_options(self.data.options)
        if self.data.views:
            problems.append("data.views: views transform images; text data has none (remove data.views)")
        if self.data.augment:
            problems.append("data.augment: the augmentations transform images; text data takes none (remove data.augment)")
        if options.task == "generate":
            problems += self.methods_not_per_token()
        problems += [
            f"{where}.method: 'cross-modal' needs the teacher and the student to read different views, and text has one; "
            "use kd (the same soft targets from the one view)"
            for where, block in self.distill_blocks() for term in block.terms if term.method == "cross-modal"
        ]  # fmt: skip
        if problems:  # finished lines, each naming its field
            raise PydanticCustomError(PLAN_ERROR, "{count} problem(s) with text data", {"count": len(problems), "problems": problems})
        return self

    @model_validator(mode="after")
    def _teacher_targets_need_prompts(self) -> Recipe:
        """`targets: teacher` replaces generation targets: refused where the data has none to replace (a
        factory's data is checked when it loads)."""
        problems = [f"{where}.targets: teacher {problem}" for where in self.teacher_target_blocks() if (problem := self.teacher_targets_problem())]
        if problems:
            raise PydanticCustomError(PLAN_ERROR, "{count} problem(s) with targets", {"count": len(problems), "problems": problems})
        return self

    def teacher_target_blocks(self) -> list[str]:
        """Where `targets: teacher` is set: `distill` (every recovery inherits it), or the stages' recover blocks."""
        if self.distill.targets == "teacher":
            return ["distill"]
        return [p.recover_path for p in self.plan if p.recover is not None and p.recover.targets == "teacher"]

    def teacher_targets_problem(self, options: Any = None) -> str | None:
        """Why this data cannot take the teacher's generations as targets (None: it can, or a factory's
        data decides when it loads). `options`: the loaded data's text options."""
        if options is None and self.data.dataset != "text":
            return None if ":" in self.data.dataset else f"replaces generation targets; dataset {self.data.dataset!r} has none (use dataset: text with task: generate)"
        options = options or text_options(self.data.options)
        if options.task != "generate":
            return "replaces generation targets; this text data classifies (data.options.task: generate)"
        if options.target is None:
            return ("needs prompts to continue: data.options.target names the answers the teacher's replace "
                    "(plain language modelling, without a target field, has none)")
        return None

    @model_validator(mode="after")
    def _step_by_step_data(self) -> Recipe:
        """The step-by-step method and its rationales, checked before anything is written: generation
        text, one shape of data for every block, and (source: data) a rationale in every row."""
        terms = self.step_by_step_terms()
        problems = []
        if not terms:
            if self.rationales is not None:
                problems.append(f"rationales: only the {STEP_BY_STEP} method reads rationales, and no distillation block uses it; "
                                f"remove the block or train with method: {STEP_BY_STEP}")
        else:
            problems = self._step_by_step_problems(terms)
        if problems:
            raise PydanticCustomError(PLAN_ERROR, "{count} problem(s) with step-by-step", {"count": len(problems), "problems": problems})
        return self

    def _step_by_step_problems(self, terms: list[tuple[str, StepByStepTermConfig]]) -> list[str]:
        where, first = terms[0]
        dataset, problems = self.data.dataset, []
        if dataset != "text" and ":" not in dataset:
            return [f"{where}.method: {STEP_BY_STEP} trains language models on generation text with rationales, and data.dataset "
                    f"{dataset!r} is images; use dataset: text with options {{task: generate, input: …, target: <label field>}}"]
        options = text_options(self.data.options) if dataset == "text" else None
        if options is not None and options.task != "generate":
            problems.append(f"{where}.method: {STEP_BY_STEP} trains a generate task (the label written as text), and "
                            f"data.options.task is {options.task}; set data.options.task: generate and target: <label field>")
        elif options is not None and options.target is None:
            problems.append(f"data.options.target: {STEP_BY_STEP} needs the field that holds each row's label (target: label)")
        if targets := self.teacher_target_blocks():
            problems.append(f"{targets[0]}.targets: teacher replaces the targets with the teacher's answers, and {STEP_BY_STEP} "
                            "builds its own (label and rationale); for the teacher's labels use label_source: teacher")
        for other, term in terms[1:]:
            if term.data_key() != first.data_key():
                problems.append(f"{other}.method: its {STEP_BY_STEP} prefixes, rationale_position and label_source differ from "
                                f"{where}'s; they shape the run's data, so every block shares them (alpha and weight may differ)")
        rationales = self.rationales
        if rationales is None:
            return problems + [f"{where}.method: {STEP_BY_STEP} needs a rationales: block, e.g. rationales: {{source: data, field: rationale}} "
                               "(a field of every row) or {source: teacher, prompt: …} (the teacher writes them)"]
        if rationales.source == "teacher" and self.teacher.train is not None and self.teacher.train.epochs > 0:
            problems.append("rationales.source: teacher needs a teacher that already writes rationales: teacher.checkpoint, or a "
                            "Hugging Face model as it is (model: hf:DIR, train: {epochs: 0}); teacher.train would teach it the "
                            "label task only")
        if rationales.source == "teacher" and rationales.generation.temperature > 0 and not str(self.teacher.model).startswith("hf"):
            problems.append("rationales.generation.temperature: a built-in teacher writes greedily; set 0, or use a Hugging Face "
                            "teacher (hf:DIR), which samples")
        if not problems and options is not None and rationales.source == "data":
            fields = [("rationales.field", rationales.field, "the rationale")]
            if first.label_source == "teacher":
                fields.append(("rationales.teacher_label_field", rationales.teacher_label_field, "the teacher's label, for label_source: teacher"))
            for setting, field, what in fields:
                try:
                    check_nonempty_field(self.data.root, options.test, field, what)
                except InputError as exc:
                    problems.append(f"{setting}: {exc}")
        return problems

    def step_by_step_terms(self) -> list[tuple[str, StepByStepTermConfig]]:
        """Each step-by-step term of the recipe's distillation blocks, with where it is set."""
        blocks = [("distill", self.distill)] + [(p.recover_path, p.recover) for p in self.plan if p.recover is not None]
        return [(where, term) for where, block in blocks for term in block.terms if isinstance(term, StepByStepTermConfig)]

    def distill_blocks(self) -> list[tuple[str, DistillConfig]]:
        """Each distillation block with where it is set: `distill`, and a stage's recover block only where
        it sets its own method (else distill.method is the one to name)."""
        return [("distill", self.distill)] + [
            (p.recover_path, p.recover) for p in self.plan if p.recover is not None and p.recover.method != self.distill.method
        ]

    def methods_not_per_token(self) -> list[str]:
        """Problem lines, each naming its field, for distillation methods that generation data cannot use."""
        return [
            f"{where}.method: {term.method!r} is not defined per token; generation data distills with "
            f"{', '.join(TOKEN_METHODS[:-1])} or {TOKEN_METHODS[-1]} (token-level KD: distill.divergence, beta, temperature; "
            "feature methods: hidden states of real tokens)"
            for where, block in self.distill_blocks() for term in block.terms if term.method not in TOKEN_METHODS
        ]  # fmt: skip

    @property
    def workdir_path(self) -> Path:
        return Path(self.workdir or f"runs/{self.name}")

    def fingerprint(self, stages: int | None = None) -> str:
        """A hash of everything that decides the results — of the first `stages` stages, if given.
        Resume compares the prefix that has finished steps, so a finished run can be extended."""
        settings = self.model_dump(mode="json", exclude={"workdir", "gates", "runtime"})
        settings["stages"] = settings["stages"][:stages]
        canonical = json.dumps(settings, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _path_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _explain(error: dict[str, Any], model: type[StrictModel] | None) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    bounds = {"greater_than_equal": "≥ {ge}", "greater_than": "> {gt}", "less_than_equal": "≤ {le}", "less_than": "< {lt}"}
    if kind in bounds:
        return f"must be {bounds[kind].format(**ctx)} (got {got!r})"
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        field = str(error["loc"][-1])
        allowed = _allowed_fields(model, error["loc"][:-1])
        return f"unknown field.{close_matches(field, allowed)} Allowed here: {', '.join(allowed)}."
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{message} (got {got!r})" if kind not in ("value_error", "assertion_error") else message


def _allowed_fields(model: type[StrictModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model at `loc`, for 'unknown field' messages."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):  # an element of a list: the list's item model
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, StrictModel)), None)
    return sorted(name for name, field in getattr(current, "model_fields", {}).items() if not field.exclude)


def _problems(exc: ValidationError, model: type[StrictModel], prefix: str = "", remap: Any = None) -> list[str]:
    problems = []
    for error in exc.errors():
        if error["type"] == PLAN_ERROR:  # already finished lines with their field paths
            problems += error["ctx"]["problems"]
            continue
        loc = tuple(error["loc"])
        where = remap(loc) if remap else prefix
        path = _path_text(loc)
        full = f"{where}.{path}" if where and path else (where or path or "recipe")
        problems.append(f"{full}: {_explain(error, model)}")
    return problems


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _plan_stage(index: int, raw: Any, distill_raw: dict[str, Any]) -> tuple[PlannedStage | None, type[Stage] | None, list[str]]:
    """One entry of `stages:`: its PlannedStage (None when invalid), its kind's class (None when
    the kind is unknown), and its problems."""
    where = f"stages[{index}]"
    if not isinstance(raw, dict):
        return None, None, [f"{where}: must be a mapping like {{prune: {{...}}, recover: {{...}}}} (got {raw!r})"]
    keys = [k for k in raw if k != "recover"]
    if len(keys) != 1:
        known = ", ".join(stages.names())
        return None, None, [f"{where}: needs exactly one stage kind ({known}) besides 'recover', found {keys or 'none'}"]
    key = keys[0]
    try:
        stages.check(key)
    except ValueError as exc:
        return None, None, [f"{where}: {exc}"]
    stage_cls = stages.get(key)
    body = raw[key] if raw[key] is not None else {}
    recover_raw = raw.get("recover")
    problems: list[str] = []
    if not isinstance(body, dict):
        return None, stage_cls, [f"{where}.{key}: must be a mapping of settings (got {body!r})"]
    if recover_raw is not None and not isinstance(recover_raw, dict):
        return None, stage_cls, [f"{where}.recover: must be a mapping like {{epochs: 2}} (got {recover_raw!r})"]
    if stage_cls.body_is_recovery:
        if recover_raw is not None:
            return None, stage_cls, [f"{where}.recover: a {key} stage's settings are its training; put them in {where}.{key}"]
        recover_raw, body = body, {}
        recover_where = f"{where}.{key}"
    else:
        recover_where = f"{where}.recover"
    if not stage_cls.compresses and recover_raw is not None:
        problems.append(f"{where}.recover: a {key} stage does not train, so it takes no recover block")
    config = recover = None
    try:
        config = stage_cls.Config.model_validate(body)
    except ValidationError as exc:
        problems += _problems(exc, stage_cls.Config, f"{where}.{key}")
    if stage_cls.compresses:
        update = recover_raw or {}
        try:
            recover = DistillConfig.model_validate(_deep_merge(distill_raw, update))
        except ValidationError as exc:
            problems += _problems(exc, DistillConfig, remap=lambda loc: recover_where if _from_update(loc, update) else "distill")
    if problems or config is None:
        return None, stage_cls, problems
    lr_setting = _lr_field(recover_raw or {}, recover_where) or _lr_field(distill_raw, "distill") or "distill.lr"
    return PlannedStage(index, key, stage_cls(config, index, recover), recover, recover_where, lr_setting), stage_cls, []


def _lr_field(block: dict[str, Any], where: str) -> str | None:
    """The field of a distillation block that sets its learning rate, if it sets one."""
    if "lr" in block:
        return f"{where}.lr"
    optimizer = block.get("optimizer")
    return f"{where}.optimizer.lr" if isinstance(optimizer, dict) and "lr" in optimizer else None


def _from_update(loc: tuple[Any, ...], update: dict[str, Any]) -> bool:
    """Whether an error in a merged distill block comes from the stage's own keys (`lr` lands in
    optimizer; errors about the terms as a whole have no field and come from `method`)."""
    if not loc:
        return "method" in update
    return loc[0] in update or (loc[0] == "optimizer" and "lr" in update)


class _Entry(NamedTuple):
    """A stage entry as the plan rules see it: its kind's class, and its object when its settings validated."""

    label: str
    kind: type[Stage]
    stage: Stage | None


def build_plan(raw: dict[str, Any]) -> Plan | PlanProblems:
    """Validate every entry of `stages:` (each recover block merged over `distill:`), then the
    plan as a whole with the gates. Every problem is reported at once."""
    if "plan" in raw:
        return PlanProblems(["plan: unknown field; the plan is built from stages:"])
    distill_raw = raw.get("distill") if isinstance(raw.get("distill"), dict) else {}
    planned, entries, problems = [], [], []
    for index, entry in enumerate(raw.get("stages") if isinstance(raw.get("stages"), list) else []):
        stage, kind, stage_problems = _plan_stage(index, entry, distill_raw)
        problems += stage_problems
        if stage is not None:
            planned.append(stage)
        if kind is not None:
            entries.append(_Entry(label(index, next(k for k in entry if k != "recover")), kind, stage.stage if stage else None))
    problems += order_problems(entries) + gate_problems(entries, _gates_or_none(raw.get("gates")))
    return PlanProblems(problems) if problems else Plan(planned)


def order_problems(entries: list[_Entry]) -> list[str]:
    """The stages' ordering facts (see edgekd.stage.Stage), checked in recipe order."""
    problems = []
    established: dict[str, _Entry] = {}  # fact → the latest stage that established it
    groups: dict[str, _Entry] = {}
    for entry in entries:
        kind = entry.kind
        for fact in kind.requires:
            if fact not in established:
                problems.append(f"{entry.label} needs `{fact}` from an earlier stage, and none provides it: put {_providers(fact)} before it")
        for fact, why in kind.refuses.items():
            if fact in established:
                problems.append(f"{entry.label} comes after {established[fact].label}, which made the student `{fact}`: {why}")
        if kind.exclusive is not None:
            first = groups.setdefault(kind.exclusive, entry)
            if first is not entry:
                problems.append(f"{entry.label}: a recipe holds at most one {kind.exclusive} stage, and {first.label} is one; keep one of them")
        if kind.compresses:
            stale = sorted({e.label for e in established.values() if not e.kind.compresses})
            if stale:
                problems.append(
                    f"{entry.label} changes the student after {' and '.join(stale)}, whose files and timings would then describe "
                    "an older student: put export and bench after the last stage that changes the student"
                )
        established.update(dict.fromkeys(kind.provides, entry))
    return problems


def gate_problems(entries: list[_Entry], gates: GatesConfig | None) -> list[str]:
    """Every gate must have something to measure it: the fact it reads provided by some stage,
    at a batch size that stage measures."""
    if gates is None:
        return []
    problems = []
    for gate in gates.thresholds():
        fact, batch_field = GatesConfig.requirement(gate)
        if fact is None:
            continue
        providers = [e for e in entries if fact in e.kind.provides]
        if not providers:
            problems.append(f"gates.{gate} reads `{fact}`, which no stage of the recipe provides: add {_providers(fact)} to measure it")
            continue
        batch = getattr(gates, batch_field) if batch_field else None
        measured = providers[-1].stage.batch_sizes() if providers[-1].stage is not None else None
        if batch is not None and measured is not None and batch not in measured:
            problems.append(
                f"gates.{batch_field}: {providers[-1].label} measures batch sizes {', '.join(map(str, measured))}, not {batch}: "
                f"add {batch} to its batch_sizes or read another batch"
            )
    return problems


def _providers(fact: str) -> str:
    """`an export stage`, `a bench stage (after an export stage)`: the stage kinds that provide a fact."""

    def named(kind: str) -> str:
        return f"a{'n' if kind[0] in 'aeiou' else ''} {kind} stage"

    kinds = [(name, kind) for name, kind in stages.items() if fact in kind.provides]
    return " or ".join(
        named(name) + "".join(f" (after {_providers(need)})" for need in kind.requires) for name, kind in kinds
    ) or f"a stage providing `{fact}`"


def _gates_or_none(raw: Any) -> GatesConfig | None:
    """The gates block when it validates (its own errors are reported by its field)."""
    try:
        return GatesConfig.model_validate(raw) if isinstance(raw, dict) else None
    except ValidationError:
        return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (YAML's last-wins hides the first)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:  # an unhashable key: construct_mapping says so
            continue
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 — a SafeLoader subclass


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    return read_mapping_file(path, "recipe file", parse_yaml, (yaml.YAMLError,), "valid YAML")


def _user_code(raw: Any, path: str = "") -> list[str]:
    """Every `pkg.module:callable` string in a raw recipe, as problems (under --no-user-code)."""
    if isinstance(raw, str):
        return [refused_user_code(raw, path or "recipe")] if names_user_code(raw) else []
    if isinstance(raw, dict):
        return [p for key, value in raw.items() for p in _user_code(value, f"{path}.{key}" if path else str(key))]
    if isinstance(raw, list):
        return [p for index, value in enumerate(raw) for p in _user_code(value, f"{path}[{index}]")]
    return []


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply `distill.temperature=2` or `stages[1].recover.epochs=3` to a raw recipe dict."""
    path, sep, text = assignment.partition("=")
    if not sep or not path.strip():
        raise InputError(f"--set {assignment!r}: expected PATH=VALUE, e.g. --set distill.temperature=2")
    tokens = [name or int(index) for name, index in _PATH_TOKEN.findall(path.strip())]
    if not tokens:
        raise InputError(f"--set {assignment!r}: {path!r} names no field; e.g. --set distill.temperature=2")
    try:
        value = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise InputError(f"--set {assignment!r}: the value is not valid YAML: {exc}") from None
    target: Any = raw
    for depth, token in enumerate(tokens[:-1]):
        here = _path_text(tuple(tokens[: depth + 1]))
        if isinstance(token, int):
            if not isinstance(target, list) or token >= len(target):
                raise InputError(f"--set {assignment!r}: {here} does not exist in the recipe")
            target = target[token]
        else:
            if not isinstance(target, dict):
                raise InputError(f"--set {assignment!r}: {_path_text(tuple(tokens[:depth]))} is not a mapping, so it has no field {token!r}")
            if target.get(token) is None:
                target[token] = {}
            target = target[token]
    last = tokens[-1]
    parent = _path_text(tuple(tokens[:-1])) or "the recipe"
    if isinstance(last, str) and not isinstance(target, dict):
        raise InputError(f"--set {assignment!r}: {parent} is a {type(target).__name__} ({target!r}), not a mapping with fields")
    if isinstance(last, int) != isinstance(target, list) or (isinstance(last, int) and last >= len(target)):
        raise InputError(f"--set {assignment!r}: {path} does not exist in the recipe")
    target[last] = value


def load_recipe(source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read (from a path or a dict), apply `--set` overrides, and validate everything at once."""
    raw = copy.deepcopy(source) if isinstance(source, dict) else read_recipe_file(source)
    name = "recipe" if isinstance(source, dict) else f"recipe {str(source)!r}"
    for assignment in overrides:
        apply_override(raw, assignment)
    problems: list[str] = [] if user_code_allowed() else _user_code(raw)  # under --no-user-code
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        problems += _problems(exc, Recipe)
    if problems:
        # A stage's recover block merged over a broken `distill:` repeats its problems: list each once.
        raise RecipeError(list(dict.fromkeys(problems)), name)
    return recipe
