"""Read intermediate outputs of a model by module path, with hooks that never outlive a phase.

A layer may return a tensor, or — Hugging Face attention modules and layers, T5 blocks — a tuple,
a dict or a `ModelOutput` that holds it: the tap keeps the hidden state, (batch, tokens, dim) for
a transformer, (batch, channels, height, width) for a convolution."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.registry import close_matches


def find_module(model: nn.Module, path: str, role: str) -> nn.Module:
    """The submodule at `path`, or an InputError naming it and listing close matches."""
    modules = dict(model.named_modules())
    if path not in modules:
        names = [n for n in modules if n]
        raise InputError(f"{role} layer {path!r} does not exist.{close_matches(path, names, n=4)} Layers: {', '.join(names[:40])}{' …' if len(names) > 40 else ''}")
    return modules[path]


class FeatureTaps:
    """Forward hooks that keep the latest output (or input) of named modules.

    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> taps = FeatureTaps(model, ["0"], role="student")
    >>> _ = model(torch.ones(1, 2)); taps["0"].shape
    torch.Size([1, 3])
    >>> taps.close(); len(model[0]._forward_hooks)
    0
    """

    def __init__(self, model: nn.Module, paths: list[str], role: str, inputs: bool = False):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in dict.fromkeys(paths):
            module = find_module(model, path, role)
            if inputs:
                self._handles.append(module.register_forward_pre_hook(self._keep_input(path)))
            else:
                self._handles.append(module.register_forward_hook(self._keep_output(path)))

    def _keep_output(self, path: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[path] = hidden_state(output, path)

        return hook

    def _keep_input(self, path: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self.outputs[path] = args[0]

        return hook

    def __getitem__(self, path: str) -> torch.Tensor:
        return self.outputs[path]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()


def hidden_state(output: Any, path: str) -> torch.Tensor:
    """The tensor a layer computed: the output itself, a tuple's first element (the hidden state; the
    rest are attention weights or caches), or a mapping's `last_hidden_state`/`hidden_states`.

    >>> hidden_state((torch.zeros(2, 5, 8), None), "layer").shape
    torch.Size([2, 5, 8])
    """
    found = output
    if isinstance(found, (tuple, list)) and found:
        found = found[0]
    if isinstance(found, Mapping):  # a ModelOutput is a mapping of the fields that were set
        found = next((found[k] for k in ("last_hidden_state", "hidden_states") if isinstance(found.get(k), torch.Tensor)), None)
    if not isinstance(found, torch.Tensor):
        raise InputError(
            f"layer {path!r} returned {type(output).__name__}, which holds no hidden-state tensor: name a layer "
            "that returns a tensor (or a tuple whose first element is one)"
        )
    return found


def classifier_path(model: nn.Module) -> str:
    """The last Linear layer: the classifier whose input is the deepest feature."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise InputError("the student has no nn.Linear classifier; name its feature layer explicitly")
    return linears[-1]
