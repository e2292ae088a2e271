"""Recipe building blocks every layer shares: the strict base class of every recipe block.

A leaf module: it imports nothing of edgekd's, so configs anywhere (stages, data, gates) can
build on it without importing the runner or the recipe."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A recipe block: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
