"""Model specs: `"resnet_s(depth=14, width=32)"` for a built-in,
`"pkg.module:callable(width=8)"` for user code, `"hf:path/to/dir"` or
`"hf-config:gpt2(n_layer=2)"` for Hugging Face models, turned into a module.

>>> parse_spec("resnet_s(depth=14, width=32)")
('resnet_s', {'depth': 14, 'width': 32})
>>> parse_spec("mypkg.nets:tiny")
('mypkg.nets:tiny', {})
"""

from __future__ import annotations

import ast
import inspect
import pickle
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any, Mapping

import torch
from pydantic import AfterValidator
from torch import nn

from edgekd.errors import InputError
from edgekd.facts import DataFacts
from edgekd.models.hf import build_hf, is_hf_spec
from edgekd.models.registry import card_of, model_names, models
from edgekd.outputs import Inputs, run_model
from edgekd.registry import load_callable


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a spec into its name and literal keyword arguments (never evaluates code)."""
    text = spec.strip()
    if "(" not in text:
        return text, {}
    name, _, rest = text.partition("(")
    if not rest.endswith(")"):
        raise InputError(f"model spec {spec!r}: missing closing parenthesis")
    try:
        call = ast.parse(f"f({rest}", mode="eval").body
        assert isinstance(call, ast.Call)
        if call.args:
            raise InputError(f"model spec {spec!r}: use keyword arguments, e.g. resnet_s(width=32)")
        if any(kw.arg is None for kw in call.keywords):
            raise InputError(f"model spec {spec!r}: **{{…}} unpacking is not read; write each argument out, e.g. cnn(width=64)")
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as exc:
        raise InputError(f"model spec {spec!r}: arguments must be literals like width=32 ({exc})") from None
    return name.strip(), kwargs


def check_spec(spec: str) -> str:
    """`spec` when it can name a model: literal arguments and a registered model, a Hugging Face
    spec (its folder or config is read when the model is built), or `"pkg.module:callable"`
    (imported only when the model is built); else ValueError."""
    try:
        name, _ = parse_spec(spec)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    if not is_hf_spec(name):
        models.check_or_user_code(name)
    return spec


# A recipe field holding a model spec, checked when the recipe is validated.
ModelSpec = Annotated[str, AfterValidator(check_spec)]


def _accepted(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keep only the dataset-derived kwargs the builder accepts (unset stays unset)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def build_model(spec: str, facts: DataFacts | None = None, *, extra: dict[str, Any] | None = None, **fact_fields: Any) -> nn.Module:
    """Build the module a spec names for data described by `facts`.

    A builder receives the facts it takes as keyword arguments (`in_channels`, `num_classes`,
    `image_size`, `vocab_size`, `max_length`, `pad_id`, …) unless the spec sets them itself.
    Keyword facts are a shorthand: `build_model("cnn", in_channels=1, num_classes=10)`.
    `hf:DIR` and `hf-config:TYPE(...)` specs build Hugging Face models (edgekd.models.hf)."""
    try:
        facts = replace(facts or DataFacts(), **fact_fields)
    except TypeError as exc:
        raise TypeError(f"build_model: {exc}; facts are {', '.join(f.name for f in fields(DataFacts))}") from None
    name, kwargs = parse_spec(spec)
    kwargs.update(extra or {})
    if is_hf_spec(name):
        return build_hf(name, kwargs, facts)
    builder = load_callable(name) if ":" in name else models.get(name)
    if ":" not in name:
        _check_task(name, facts)
    dataset_kwargs = {k: v for k, v in _accepted(builder, facts.builder_kwargs()).items() if k not in kwargs}
    try:
        model = builder(**dataset_kwargs, **kwargs)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as exc:  # arguments the builder cannot use
        raise InputError(f"model spec {spec!r} cannot be built: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"model spec {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _check_task(name: str, facts: DataFacts) -> None:
    """A built-in serves the inputs and tasks on its card; say which data settings it needs otherwise."""
    card = card_of(name)
    if card.inputs != facts.inputs or facts.task not in card.tasks:
        raise InputError(
            f"model {name!r} takes {card.inputs} inputs for {' or '.join(card.tasks)}, but the data gives "
            f"{facts.inputs} inputs for {facts.task}; choose a model for this data "
            f"(for {facts.inputs}: {', '.join(model_names(facts.inputs)) or 'none built in'})"
        )


@torch.no_grad()
def check_runs(model: nn.Module, example: Inputs, spec: str) -> None:
    """One forward pass in eval mode on a real input, so a spec that cannot run on the data
    (`cnn(width=0)`, a too-small image for its strides) fails before training, naming the spec.
    `example` is a batch's inputs: images, or a text batch's keyword arguments."""
    was_training = model.training
    try:
        run_model(model.eval(), example)
    except (RuntimeError, ValueError, TypeError, IndexError, ZeroDivisionError) as exc:
        first = next(iter(example.values())) if isinstance(example, Mapping) else example
        shape = "×".join(str(d) for d in first.shape[1:])
        raise InputError(f"model spec {spec!r} does not run on the data's input ({shape}): {_first_line(exc)}") from None
    finally:
        model.train(was_training)


def _first_line(exc: BaseException) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def load_tensors(path: str | Path, what: str = "checkpoint file") -> Any:
    """Read a torch file with `weights_only=True`: tensors and plain containers, never code.
    InputError naming the file when it is missing, damaged or holds pickled objects; an OSError
    (permission denied) passes through, as the system's failure rather than bad input."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Weights only" not in str(exc):
            raise InputError(f"{what} {str(path)!r} is damaged: {_first_line(exc)}") from None
        raise InputError(
            f"{what} {str(path)!r} holds pickled Python objects (e.g. a whole model saved with torch.save(model)); edgekd "
            "loads tensors only and never runs code from a file. Save the weights instead: torch.save(model.state_dict(), path)."
        ) from None
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise InputError(f"{what} {str(path)!r} cannot be read: {_first_line(exc)}") from None


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load weights from a state_dict file without unpickling code (weights_only); refuses NaN/inf weights."""
    path = Path(path)
    state = load_tensors(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise InputError(f"checkpoint file {str(path)!r} holds a {type(state).__name__}, not a state_dict (a mapping of tensors)")
    broken = [name for name, value in state.items() if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise InputError(f"checkpoint file {str(path)!r} holds NaN or infinite values in {', '.join(broken[:3])}: the weights diverged when it was saved")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise InputError(f"checkpoint file {str(path)!r} does not fit the model: {' '.join(first)}") from None
