"""What pruning needs to know about a model before torch-pruning touches it:
which layer is the classifier, which modules the user wants kept, which
attention modules carry head counts, and whether every layer can be traced.

>>> from edgekd.models import build_model
>>> model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
>>> probe(model, torch.zeros(1, 1, 8, 8)).classifier
'fc'
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.registry import close_matches

WEIGHTED_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass
class Probe:
    """One traced forward pass: modules in the order they finished, the classifier, graph cuts."""

    executed: list[str] = field(default_factory=list)
    classifier: str | None = None
    # Modules whose input was part of the autograd graph but whose output was not.
    cuts: list[str] = field(default_factory=list)


@contextmanager
def tracing(model: nn.Module) -> Iterator[None]:
    """Forward passes that torch-pruning can follow: eval mode (BatchNorm statistics stay put),
    gradients on and every parameter in the autograd graph, frozen ones included; all restored after."""
    was_training = model.training
    # By name: pruning replaces parameters with new (trainable) ones, which must end up frozen again.
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        model.train(was_training)
        parameters = dict(model.named_parameters())
        for name in frozen:
            parameters[name].requires_grad_(False)


def _in_graph(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if isinstance(value, (tuple, list)):
        return any(_in_graph(v) for v in value)
    return False


def output_width(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels  # type: ignore[return-value]


def probe(model: nn.Module, example_input: torch.Tensor) -> Probe:
    """Run the model once, as torch-pruning will trace it, with hooks on every module."""
    names = {module: name for name, module in model.named_modules()}
    result = Probe()
    widths: list[tuple[str, int]] = []

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        name = names[module]
        result.executed.append(name)
        if _in_graph(inputs) and not _in_graph(output):
            result.cuts.append(name)
        if isinstance(module, WEIGHTED_LAYERS):
            widths.append((name, output_width(module)))

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with tracing(model):
            output = model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        # The classifier is the last weighted layer to run whose width is the number of classes.
        result.classifier = next((name for name, width in reversed(widths) if width == output.shape[1]), None)
    return result


def ignored_modules(model: nn.Module, patterns: tuple[str, ...] | list[str], classifier: str | None) -> list[nn.Module]:
    """The classifier plus every module whose path matches one of `patterns` (fnmatch globs)."""
    modules = dict(model.named_modules())
    paths = [name for name in modules if name]
    chosen = {classifier} if classifier else set()
    for pattern in patterns:
        matched = [name for name in paths if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise InputError(
                f"prune.ignore: {pattern!r} matches no module of the model.{close_matches(pattern, paths)} "
                f"Module paths look like {', '.join(repr(p) for p in paths[:6])}, … (globs such as 'layers.*.conv1' work)."
            )
        chosen.update(matched)
    return [modules[name] for name in sorted(chosen)]


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """Head counts of timm-style attention modules (a `qkv` Linear and an int `num_heads`), keyed by their qkv."""
    return {
        module.qkv: module.num_heads
        for module in model.modules()
        if isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int)
    }


def head_groups(model: nn.Module) -> dict[nn.Module, int]:
    """torch's nn.MultiheadAttention modules and their head counts: their embedding channels come in that
    many groups, so torch-pruning removes the same dimensions from every head and the width stays a
    multiple of the head count (timm-style attention goes through `attention_heads` instead)."""
    return {module: module.num_heads for module in model.modules() if isinstance(module, nn.MultiheadAttention)}


def sync_attention(model: nn.Module, heads: dict[nn.Module, int]) -> None:
    """After pruning, make each attention module's forward read the new head layout."""
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        if qkv in heads:
            module.num_heads = heads[qkv]
            if hasattr(module, "head_dim"):
                module.head_dim = qkv.out_features // (3 * module.num_heads)


def check_traced(model: nn.Module, traced: set[Any], found: Probe, ignored: list[nn.Module]) -> None:
    """Every weighted module that ran must be in torch-pruning's graph, or pruning would break its shapes."""
    modules = dict(model.named_modules())
    kept = {sub for module in ignored for sub in module.modules()}
    for name in dict.fromkeys(found.executed):
        module = modules[name]
        params = list(module.parameters(recurse=False))
        if not params or module in kept or module in traced or all(p in traced for p in params):
            continue
        cut = [c for c in found.cuts if not any(other.startswith(c + ".") for other in found.cuts)]
        cause = (
            f"module {cut[-1]!r} ({type(modules[cut[-1]]).__name__}) cuts the autograd graph (detach, .numpy(), "
            "no_grad or a non-differentiable op), so torch-pruning cannot follow how earlier layers reach the output"
            if cut
            else "its output does not reach the model output through autograd"
        )
        raise InputError(
            f"torch-pruning cannot trace module {name!r} ({type(module).__name__}): {cause}. "
            f"Make that layer differentiable, or keep the affected layers with prune.ignore: [{name!r}]."
        )
