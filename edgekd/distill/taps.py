"""Read intermediate outputs of a model by module path, with hooks that never outlive a phase."""

from __future__ import annotations

from typing import Any

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
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self.outputs[path] = output

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


def classifier_path(model: nn.Module) -> str:
    """The last Linear layer: the classifier whose input is the deepest feature."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise InputError("the student has no nn.Linear classifier; name its feature layer explicitly")
    return linears[-1]
