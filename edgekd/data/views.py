"""Views: other renderings of the same sample, computed per batch on the device.

A teacher and a student can read different views (cross-modal distillation):
`data.views: {low: {resize: 14}}` with `student.input: low`. The built-in view
`input` is the sample itself. A view is `{resize: N}`, `{crop: N}` (centre),
`{channels: [i, …]}`, any combination of those applied in that order, or
`{function: "pkg.module:fn"}` for a transform of your own (tensor → tensor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.config import StrictModel
from edgekd.registry import load_callable
from edgekd.stage import View


class ViewSpec(StrictModel):
    resize: int | None = Field(None, ge=1)
    crop: int | None = Field(None, ge=1)
    channels: list[int] | None = None
    function: str | None = None


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def make_view(spec: ViewSpec) -> View:
    user = load_callable(spec.function) if spec.function else None

    def view(x: torch.Tensor) -> torch.Tensor:
        if spec.resize:
            x = F.interpolate(x, size=(spec.resize, spec.resize), mode="area")
        if spec.crop:
            top, left = (x.shape[-2] - spec.crop) // 2, (x.shape[-1] - spec.crop) // 2
            x = x[..., top : top + spec.crop, left : left + spec.crop]
        if spec.channels is not None:
            x = x[:, spec.channels]
        return user(x) if user else x

    return view


def views_from(specs: dict[str, ViewSpec]) -> dict[str, View]:
    return {"input": identity, **{name: make_view(spec) for name, spec in specs.items()}}
