"""The model registry, and the card every built-in carries beside it: the inputs it takes,
the tasks it can be built for, and its tiny spec — the smallest useful version, which the
registry-driven tests build.

>>> @card(tiny="cnn(width=2)")
... def my_net(): ...
>>> my_net.card.tiny, my_net.card.inputs, my_net.card.tasks
('cnn(width=2)', 'image', ('classify',))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from edgekd.facts import Inputs
from edgekd.registry import Registry

F = TypeVar("F", bound=Callable[..., object])

models: Registry = Registry("model")


@dataclass(frozen=True)
class ModelCard:
    """What a registered model takes (`inputs`), the tasks it can be built for, and its tiny spec."""

    tiny: str
    inputs: Inputs = "image"
    tasks: tuple[str, ...] = ("classify",)


def card(*, tiny: str, inputs: Inputs = "image", tasks: tuple[str, ...] = ("classify",)) -> Callable[[F], F]:
    """Put a card on a model builder (under `@models.register`)."""

    def attach(builder: F) -> F:
        builder.card = ModelCard(tiny, inputs, tasks)  # type: ignore[attr-defined]
        return builder

    return attach


def card_of(name: str) -> ModelCard:
    """The card of a registered model; one registered without a card is an image classifier whose tiny spec is its name."""
    return getattr(models.get(name), "card", None) or ModelCard(tiny=name)


def model_names(inputs: Inputs) -> list[str]:
    """Registered models that take `inputs` ('image' or 'tokens')."""
    return [name for name in models.names() if card_of(name).inputs == inputs]
