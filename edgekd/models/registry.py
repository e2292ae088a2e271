"""The model registry, and each built-in's card: the inputs and tasks it serves and
a tiny spec of it that builds in well under a second (for tests parametrised over
the registry).

>>> card_of("cnn").inputs, card_of("cnn").tiny
('image', 'cnn(width=4)')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgekd.facts import Inputs
from edgekd.registry import Registry

models: Registry = Registry("model")


@dataclass(frozen=True)
class ModelCard:
    """What a registered model takes (`inputs`), the tasks it can be built for, and a tiny spec."""

    inputs: Inputs = "image"
    tasks: tuple[str, ...] = ("classify",)
    tiny: str | None = None


def described(card: ModelCard) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach a card to a model builder (register it with `models.register` as usual)."""

    def attach(builder: Callable[..., Any]) -> Callable[..., Any]:
        builder.card = card  # type: ignore[attr-defined]
        return builder

    return attach


def card_of(name: str) -> ModelCard:
    """The card of a registered model; one without a card is an image classifier whose tiny spec is its name."""
    builder = models.get(name)
    return getattr(builder, "card", None) or ModelCard(tiny=name)


def model_names(inputs: Inputs) -> list[str]:
    """Registered models that take `inputs` ('image' or 'tokens')."""
    return [name for name in models.names() if card_of(name).inputs == inputs]
