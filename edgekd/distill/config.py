"""Training and distillation settings, as they appear in a recipe."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from edgekd.config import StrictModel
from edgekd.distill.registry import methods
from edgekd.models.spec import ModelSpec, check_spec


class OptimizerConfig(StrictModel):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)


class TrainConfig(StrictModel):
    """How a model is trained: epochs, optimizer, schedule. `lr: x` is shorthand for `optimizer: {lr: x}`."""

    epochs: int = Field(10, ge=0)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _lr_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lr" in data:
            data = dict(data)
            optimizer = dict(data.get("optimizer") or {})
            optimizer["lr"] = data.pop("lr")
            data["optimizer"] = optimizer
        return data


class TeacherConfig(StrictModel):
    """A teacher is loaded from `checkpoint:` or trained with `train:` (and then cached in the workdir).

    `checkpoint_epoch: N` uses the teacher as it was after epoch N of its training — an early-stopped
    teacher, which can teach a small student better than a fully converged one (Cho & Hariharan 2019).
    `input` names the data view the teacher reads (see `data.views`)."""

    model: ModelSpec
    checkpoint: str | None = None
    train: TrainConfig | None = None
    checkpoint_epoch: int | None = Field(None, ge=1)
    input: str = "input"

    @model_validator(mode="after")
    def _one_source(self) -> TeacherConfig:
        if (self.checkpoint is None) == (self.train is None):
            raise ValueError("give exactly one of checkpoint (a state_dict file) or train ({epochs: N})")
        if self.checkpoint_epoch is not None and (self.train is None or self.checkpoint_epoch > self.train.epochs):
            raise ValueError("checkpoint_epoch needs train: and must not exceed train.epochs")
        return self


class StudentConfig(StrictModel):
    """`model: teacher` starts from a copy of the teacher; otherwise a model spec (fresh, or from a checkpoint).
    `input` names the data view the student reads — in training, evaluation and export."""

    model: str = "teacher"
    checkpoint: str | None = None
    input: str = "input"

    @field_validator("model")
    @classmethod
    def _spec(cls, value: str) -> str:
        return value if value == "teacher" else check_spec(value)


class TermConfig(StrictModel):
    """One weighted term of a distillation objective; methods subclass it with their own settings."""

    method: str
    weight: float = Field(1.0, ge=0)


class DistillConfig(TrainConfig):
    """Recovery distillation from the teacher.

    `method` is a method name (`kd`) or a list of weighted terms, each with its own settings:
    `[{method: kd, weight: 1}, {method: attention, weight: 1000, pairs: [[layers.1, layers.1]]}]`.
    `temperature` and `alpha` are the response-based settings every soft-target term uses:
    L = (1-α)·CE + α·T²·KL(p_T ‖ p_S). With `alpha_end`, α falls (or rises) linearly from `alpha`
    on the phase's first batch to `alpha_end` on its last. `kd_on` weights the soft term per sample:
    `all` (1), `teacher_correct` (the default: 0 where the teacher's top-1 class is not among the sample's labels,
    so that sample learns from its label alone) or `confidence` (the teacher's probability of the labels).
    `divergence` is the soft term's divergence: `forward_kl` (Hinton's KL(p_T ‖ p_S), the default),
    `reverse_kl` (KL(p_S ‖ p_T)) or `jsd` (generalized Jensen-Shannon, mixture β·p_T + (1-β)·p_S, `beta`).
    For generation data every term is per token, masked to the real target tokens.
    `targets`: what the student learns to generate — `data` (the dataset's targets, the default) or
    `teacher`: sequence-level KD (Kim & Rush 2016), the teacher's greedy answers to the training prompts
    replace the training split's targets for the phase (generated once and cached in the workdir;
    validation and test keep the ground truth). Generation data with a target field only (`task:
    generate` with `target:`; plain language modelling has no prompt to continue)."""

    method: str | list[dict[str, Any]] = "kd"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    alpha_end: float | None = Field(None, ge=0, le=1)
    # teacher_correct by default: bench/vs_by_hand.py (issue 14) found it worth +0.6 points against an
    # under-trained teacher and nothing lost against a well-trained one (RESULTS.md).
    kd_on: Literal["all", "teacher_correct", "confidence"] = "teacher_correct"
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    beta: float = Field(0.5, ge=0, le=1)
    targets: Literal["data", "teacher"] = "data"
    epochs: int = Field(2, ge=0)
    optimizer: OptimizerConfig = OptimizerConfig(lr=0.01)

    _terms: tuple[TermConfig, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _validate_terms(self) -> DistillConfig:
        raw_terms = [{"method": self.method}] if isinstance(self.method, str) else self.method
        terms, problems = [], []
        for index, raw in enumerate(raw_terms):
            name = raw.get("method") if isinstance(raw, dict) else None
            where = "" if isinstance(self.method, str) else f"[{index}]"
            if not isinstance(name, str):
                problems.append(f"{where or 'term'}: each term needs `method: <name>`")
                continue
            try:
                methods.check(name)
            except ValueError as exc:
                problems.append(f"{where}{' ' if where else ''}{exc}")
                continue
            try:
                terms.append(methods.get(name).Config.model_validate(raw))
            except ValidationError as exc:
                for error in exc.errors():
                    field = ".".join(str(part) for part in error["loc"]) or name
                    message = str(error["msg"]).removeprefix("Value error, ")
                    hint = "" if where else f" (write it as method: [{{method: {name}, …}}])"
                    problems.append(f"{where}.{field}: {message}{hint}" if where else f"{name} term, {field}: {message}{hint}")
        if problems:
            raise ValueError("; ".join(problems))
        self._terms = tuple(terms)
        return self

    @property
    def terms(self) -> tuple[TermConfig, ...]:
        return self._terms

    def alpha_at(self, progress: float) -> float:
        """α at `progress` ∈ [0, 1] of the phase (0: first batch, 1: last)."""
        if self.alpha_end is None:
            return self.alpha
        return self.alpha + (self.alpha_end - self.alpha) * min(max(progress, 0.0), 1.0)

    @property
    def uses_soft_targets(self) -> bool:
        """Whether α is above 0 anywhere in the phase (so the soft-target terms need a teacher)."""
        return max(self.alpha, self.alpha_end or 0.0) > 0
