"""What a model needs to know about its data before it is built: a leaf record
the data layer fills in and the model builders read.

An image classifier takes its input channels, image size and class count; a
language model takes its vocabulary size, longest sequence and padding token.
Builders receive, by parameter name, the facts they accept (and a model spec's
own arguments win over them).

>>> DataFacts(in_channels=1, num_classes=10, image_size=8).builder_kwargs()
{'in_channels': 1, 'num_classes': 10, 'image_size': 8}
>>> DataFacts(inputs="tokens", task="causal-lm", vocab_size=512, max_length=64, pad_id=0).builder_kwargs()
{'vocab_size': 512, 'max_length': 64, 'pad_id': 0}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

# A target equal to this is not scored (torch's cross_entropy ignores it by default): text data marks
# padding and prompts with it.
IGNORE_INDEX = -100

Inputs = Literal["image", "tokens"]
Task = Literal["classify", "causal-lm", "seq2seq"]
TASKS: tuple[str, ...] = ("classify", "causal-lm", "seq2seq")

# The facts a model builder may take as keyword arguments; `inputs` and `task` choose the builder instead.
BUILDER_FIELDS = ("in_channels", "num_classes", "image_size", "vocab_size", "max_length", "pad_id", "decoder_start_id")


@dataclass(frozen=True)
class DataFacts:
    """Facts about a dataset that decide a model's shape. Unknown facts stay None (unset stays unset).

    `task`: `classify` (one class per sample), `causal-lm` (next token at every position of one
    sequence) or `seq2seq` (a target sequence from a source sequence). `pad_id` is the token that
    pads sequences; attention ignores it. `eos_id` ends a generated answer. `decoder_start_id`
    starts a seq2seq decoder's input."""

    inputs: Inputs = "image"
    task: Task = "classify"
    in_channels: int | None = None
    num_classes: int | None = None
    image_size: int | None = None
    vocab_size: int | None = None
    max_length: int | None = None
    pad_id: int | None = None
    eos_id: int | None = None
    decoder_start_id: int | None = None

    def builder_kwargs(self) -> dict[str, int]:
        """The facts that are known, by the keyword a model builder takes them under."""
        return {name: getattr(self, name) for name in BUILDER_FIELDS if getattr(self, name) is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (checkpoints store it to rebuild the model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataFacts:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
