"""Reading the logits out of whatever a model returns.

A stand-in for issue 17 part A's `logits_of` (which also serves training and every
distillation method); the sequence modules read outputs only through this one function,
so adopting part A's is a one-line import change.

>>> logits_of({"logits": 1})
1
"""

from __future__ import annotations

from typing import Any


def logits_of(output: Any) -> Any:
    """A tensor as is; a tuple or list: its first element; a dict or Hugging Face `ModelOutput`: its `logits`."""
    if isinstance(output, dict) or hasattr(output, "logits"):
        logits = output.get("logits") if isinstance(output, dict) else output.logits
        if logits is None:
            raise TypeError(f"the model's {type(output).__name__} output holds no logits")
        return logits
    if isinstance(output, (tuple, list)):
        return logits_of(output[0])
    return output
