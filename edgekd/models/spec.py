"""Model specs: `"resnet_s(depth=14, width=32)"` for a built-in, or
`"pkg.module:callable(width=8)"` for user code, turned into a module.

>>> parse_spec("resnet_s(depth=14, width=32)")
('resnet_s', {'depth': 14, 'width': 32})
>>> parse_spec("mypkg.nets:tiny")
('mypkg.nets:tiny', {})
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AfterValidator
from torch import nn

from edgekd.errors import InputError
from edgekd.models.registry import models
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
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError) as exc:
        raise InputError(f"model spec {spec!r}: arguments must be literals like width=32 ({exc})") from None
    return name.strip(), kwargs


def check_spec(spec: str) -> str:
    """`spec` when it can name a model: literal arguments and a registered model (or
    `"pkg.module:callable"`, imported only when the model is built); else ValueError."""
    try:
        name, _ = parse_spec(spec)
    except InputError as exc:
        raise ValueError(str(exc)) from None
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


def build_model(
    spec: str, *, in_channels: int, num_classes: int, image_size: int | None = None, extra: dict[str, Any] | None = None
) -> nn.Module:
    """Build the module a spec names; the dataset supplies `in_channels`, `num_classes` and, for
    builders that take it (vit_s), `image_size` — unless the spec sets them itself."""
    name, kwargs = parse_spec(spec)
    kwargs.update(extra or {})
    builder = load_callable(name) if ":" in name else models.get(name)
    from_data = {"in_channels": in_channels, "num_classes": num_classes}
    if image_size is not None:
        from_data["image_size"] = image_size
    dataset_kwargs = {k: v for k, v in _accepted(builder, from_data).items() if k not in kwargs}
    try:
        model = builder(**dataset_kwargs, **kwargs)
    except TypeError as exc:
        raise InputError(f"model spec {spec!r}: {exc}") from None
    except ValueError as exc:
        raise InputError(f"model spec {spec!r}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"model spec {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load weights from a state_dict file without unpickling code (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise InputError(f"checkpoint file {str(path)!r} cannot be read as a state_dict: {exc}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise InputError(f"checkpoint file {str(path)!r} does not fit the model: {' '.join(first)}") from None
