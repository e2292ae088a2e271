"""The model registry, and the one piece of data every built-in model carries beside it: its
tiny spec, the smallest useful version, which the registry-driven tests build.

>>> @tiny("cnn(width=2)")
... def my_net(): ...
>>> my_net.tiny_spec
'cnn(width=2)'
"""

from __future__ import annotations

from typing import Callable, TypeVar

from edgekd.registry import Registry

F = TypeVar("F", bound=Callable[..., object])

models: Registry = Registry("model")


def tiny(spec: str) -> Callable[[F], F]:
    """Mark a model builder with its tiny spec (put it under `@models.register`)."""

    def mark(builder: F) -> F:
        builder.tiny_spec = spec  # type: ignore[attr-defined]
        return builder

    return mark


def tiny_spec(name: str) -> str:
    """The tiny spec of a registered model (its plain name when it declares none)."""
    return getattr(models.get(name), "tiny_spec", name)
