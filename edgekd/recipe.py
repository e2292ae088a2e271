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
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from edgekd.data.augment import AugmentStep, check_pipeline
from edgekd.data.views import ViewSpec
from edgekd.distill.config import DistillConfig, StudentConfig, TeacherConfig
from edgekd.errors import InputError, RecipeError, read_mapping_file
from edgekd.gate import GatesConfig
from edgekd.registry import USER_CODE_SPEC, close_matches, refused_user_code, user_code_allowed
from edgekd.stage import Stage, StrictModel, stages


class DataConfig(StrictModel):
    dataset: str = "digits"
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
    100 classes, the top 20 beyond). `teacher_cache_precision`: fp16 halves the cache (fp32 is kept
    for values beyond fp16's range). `precision`: autocast dtype for training. `channels_last`: NHWC
    memory format for convolutions."""

    teacher_cache: bool = True
    teacher_cache_top_k: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    teacher_cache_precision: Literal["fp16", "fp32"] = "fp16"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False


DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


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

    _plan: list[PlannedStage] = PrivateAttr(default_factory=list)

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
                raise ValueError(f"{role}.input: unknown view {view!r}.{close_matches(view, known)} Views: {', '.join(known)} (define more in data.views)")
        return self

    @property
    def plan(self) -> list[PlannedStage]:
        """The validated stages, in order."""
        return self._plan

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
        return f"stages[{self.index}] {self.key}"


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
    return sorted(getattr(current, "model_fields", {}))


def _problems(exc: ValidationError, model: type[StrictModel], prefix: str = "", remap: Any = None) -> list[str]:
    problems = []
    for error in exc.errors():
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


def _plan_stage(index: int, raw: Any, distill_raw: dict[str, Any]) -> tuple[PlannedStage | None, list[str]]:
    where = f"stages[{index}]"
    if not isinstance(raw, dict):
        return None, [f"{where}: must be a mapping like {{prune: {{...}}, recover: {{...}}}} (got {raw!r})"]
    keys = [k for k in raw if k != "recover"]
    if len(keys) != 1:
        known = ", ".join(stages.names())
        return None, [f"{where}: needs exactly one stage kind ({known}) besides 'recover', found {keys or 'none'}"]
    key = keys[0]
    if key not in stages:
        return None, [f"{where}.{key}: unknown stage kind.{close_matches(key, stages.names())} Known: {', '.join(stages.names())}."]
    stage_cls = stages.get(key)
    body = raw[key] if raw[key] is not None else {}
    recover_raw = raw.get("recover")
    problems: list[str] = []
    if not isinstance(body, dict):
        return None, [f"{where}.{key}: must be a mapping of settings (got {body!r})"]
    if recover_raw is not None and not isinstance(recover_raw, dict):
        return None, [f"{where}.recover: must be a mapping like {{epochs: 2}} (got {recover_raw!r})"]
    if stage_cls.body_is_recovery:
        if recover_raw is not None:
            return None, [f"{where}.recover: a {key} stage's settings are its training; put them in {where}.{key}"]
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
        return None, problems
    lr_setting = _lr_field(recover_raw or {}, recover_where) or _lr_field(distill_raw, "distill") or "distill.lr"
    return PlannedStage(index, key, stage_cls(config, index), recover, recover_where, lr_setting), []


def _lr_field(block: dict[str, Any], where: str) -> str | None:
    """The field of a distillation block that sets its learning rate, if it sets one."""
    if "lr" in block:
        return f"{where}.lr"
    optimizer = block.get("optimizer")
    return f"{where}.optimizer.lr" if isinstance(optimizer, dict) and "lr" in optimizer else None


def _from_update(loc: tuple[Any, ...], update: dict[str, Any]) -> bool:
    """Whether an error in a merged distill block comes from the stage's own keys (`lr` lands in optimizer)."""
    return bool(loc) and (loc[0] in update or (loc[0] == "optimizer" and "lr" in update))


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
        return [refused_user_code(raw, path or "recipe")] if USER_CODE_SPEC.match(raw) else []
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
    problems: list[str] = [] if user_code_allowed() else _user_code(raw)
    recipe = None
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        problems += _problems(exc, Recipe)
    distill_raw = raw.get("distill") if isinstance(raw.get("distill"), dict) else {}
    stage_list = raw.get("stages") if isinstance(raw.get("stages"), list) else []
    plan = []
    for index, stage_raw in enumerate(stage_list):
        planned, stage_problems = _plan_stage(index, stage_raw, distill_raw)
        problems += [p for p in stage_problems if p not in problems]
        if planned:
            plan.append(planned)
    if problems or recipe is None:
        raise RecipeError(problems, name)
    recipe._plan = plan
    return recipe
