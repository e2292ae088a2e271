"""What pruning needs to know about a model before torch-pruning touches it:
which layer is the classifier, which modules the user wants kept, and whether
every layer can be traced. Inputs may be a tensor or a text batch's keyword
arguments; outputs anything `logits_of` reads.

>>> from edgekd.models import build_model
>>> model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
>>> probe(model, torch.zeros(1, 1, 8, 8)).classifier
'fc'
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.outputs import Inputs, logits_of, run_model
from edgekd.prune.hf import conv1d_type, out_width
from edgekd.registry import close_matches


def weighted_layers() -> tuple[type, ...]:
    """Layer types whose output channels pruning removes (transformers' Conv1D when it is loaded)."""
    extra = conv1d_type()
    return (nn.Linear, nn.modules.conv._ConvNd, *([extra] if extra else []))


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
    gradients on and every parameter in the autograd graph, frozen ones included, no key/value
    cache (a Hugging Face decoder concatenates one along the sequence); all restored after."""
    was_training = model.training
    # By name: pruning replaces parameters with new (trainable) ones, which must end up frozen again.
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    if use_cache:
        config.use_cache = False  # type: ignore[union-attr]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        if use_cache:
            config.use_cache = use_cache  # type: ignore[union-attr]
        model.train(was_training)
        parameters = dict(model.named_parameters())
        for name in frozen:
            parameters[name].requires_grad_(False)


def _in_graph(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if isinstance(value, (tuple, list)):
        return any(_in_graph(v) for v in value)
    if isinstance(value, Mapping):  # a Hugging Face ModelOutput
        return any(_in_graph(v) for v in value.values())
    return False


def output_width(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else out_width(module)  # type: ignore[return-value]


def probe(model: nn.Module, example_input: Inputs) -> Probe:
    """Run the model once, as torch-pruning will trace it, with hooks on every module."""
    names = {module: name for name, module in model.named_modules()}
    result = Probe()
    widths: list[tuple[str, int]] = []
    layer_types = weighted_layers()

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        name = names[module]
        result.executed.append(name)
        if _in_graph(inputs) and not _in_graph(output):
            result.cuts.append(name)
        if isinstance(module, layer_types):
            widths.append((name, output_width(module)))

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with tracing(model):
            logits = logits_of(run_model(model, example_input))
    finally:
        for handle in handles:
            handle.remove()
    if logits.dim() >= 2:
        # The classifier (or language-model head) is the last weighted layer to run whose width is the logits'.
        result.classifier = next((name for name, width in reversed(widths) if width == logits.shape[-1]), None)
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


def head_groups(model: nn.Module) -> dict[nn.Module, int]:
    """torch's nn.MultiheadAttention modules and their head counts: their embedding channels come in that
    many groups, so torch-pruning removes the same dimensions from every head and the width stays a
    multiple of the head count (other attention modules lose whole heads: edgekd.prune.attention)."""
    return {module: module.num_heads for module in model.modules() if isinstance(module, nn.MultiheadAttention)}


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
