"""Attention heads: found in any model, ranked, and removed whole.

An attention module keeps its head count in an int attribute: `num_heads` (timm,
edgekd's built-ins, GPT-2), `num_attention_heads` (BERT, ViT), `n_heads` (T5) — or
any name a recipe declares, `prune.attention_heads: {"blocks.*.attn": heads}`. One
forward pass with hooks finds, for each such module, the layers whose outputs are
split into heads (q, k and v, or one fused qkv: "projections"), the layer that reads
the heads' concatenated channels ("output"; for BERT it sits outside the module)
and per-head tables (T5's relative position bias, one column per head).

Removing head h takes channels [h·d, (h+1)·d) out of every part of every projection
and out of the output's input, and column h out of the tables; then the head count
attribute (and an inner width kept as a number: all_head_size, inner_dim,
split_size) is updated. Heads keep their size, so the softmax scale is unchanged.

Modules that must lose the same heads — T5 layers share one position bias — are found
from torch-pruning's dependency graph, which couples their channels.

>>> from edgekd.models import build_model
>>> model = build_model("gpt_s(dim=32, depth=1, heads=4)", inputs="tokens", task="causal-lm", vocab_size=40, max_length=8)
>>> (unit,) = find_attention(model, torch.ones(1, 8, dtype=torch.long), {})
>>> unit.name, unit.heads, unit.head_dim, [type(p).__name__ for p in unit.projections]
('decoder.blocks.0.attn', 4, 8, ['Linear', 'Linear', 'Linear'])
>>> import torch_pruning
>>> unit.remove([1, 3], torch_pruning.DependencyGraph().get_pruner_of_module)
>>> unit.heads, unit.module.q.out_features, unit.module.o.in_features
(2, 16, 16)
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.outputs import Inputs, run_model
from edgekd.prune.graph import weighted_layers
from edgekd.prune.hf import in_width, out_width
from edgekd.registry import close_matches, unknown_name

HEAD_ATTRIBUTES = ("num_heads", "num_attention_heads", "n_heads", "n_head")
# Inner widths (heads × head size) some modules keep as numbers for their reshapes.
INNER_ATTRIBUTES = ("all_head_size", "inner_dim", "split_size")

HeadScore = Literal["l1", "l2", "taylor", "random"]
PrunerOf = Callable[[nn.Module], Any]  # torch-pruning's per-layer pruning functions for a module


@dataclass(eq=False)
class AttentionUnit:
    """One attention module and the layers its heads live in."""

    name: str
    module: nn.Module
    attribute: str
    projections: list[nn.Module]
    output: nn.Module
    tables: list[nn.Embedding]
    head_dim: int

    @property
    def heads(self) -> int:
        return int(getattr(self.module, self.attribute))

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    def _channels(self, heads: Iterable[int]) -> list[int]:
        return [h * self.head_dim + j for h in heads for j in range(self.head_dim)]

    def _projection_channels(self, layer: nn.Module, heads: list[int]) -> list[int]:
        """The head's channels in every part (q, k, v) of a fused projection."""
        channels = self._channels(heads)
        return [part * self.inner + c for part in range(out_width(layer) // self.inner) for c in channels]

    def scores(self, kind: HeadScore) -> torch.Tensor:
        """One importance per head: the Lp norm of its weights, or |weight · gradient| summed (taylor)."""
        if kind == "random":
            return torch.rand(self.heads)
        total = torch.zeros(self.heads)
        pieces = [(layer, _out_axis(layer), out_width(layer) // self.inner) for layer in self.projections]
        pieces.append((self.output, 1 - _out_axis(self.output), 1))
        for layer, axis, parts in pieces:
            weight = layer.weight.detach()
            if kind == "taylor":
                if layer.weight.grad is None:
                    raise InputError("taylor importance needs gradients: pass gradient_batches")
                values = (weight * layer.weight.grad).abs()
            else:
                values = weight.abs() if kind == "l1" else weight.pow(2)
            per_channel = values.sum(dim=1 - axis).float().cpu()
            total += per_channel.reshape(parts, self.heads, self.head_dim).sum(dim=(0, 2))
        for table in self.tables:
            weight = table.weight.detach()
            values = (weight * table.weight.grad).abs() if kind == "taylor" and table.weight.grad is not None else weight.abs()
            total += values.sum(dim=0).float().cpu()
        return total.sqrt() if kind == "l2" else total

    def remove(self, heads: list[int], pruner_of: PrunerOf) -> None:
        """Remove `heads` (indices into the current heads) from every layer they live in."""
        if not heads:
            return
        old_inner = self.inner
        for layer in self.projections:
            pruner_of(layer).prune_out_channels(layer, self._projection_channels(layer, heads))
        pruner_of(self.output).prune_in_channels(self.output, self._channels(heads))
        for table in self.tables:
            pruner_of(table).prune_out_channels(table, list(heads))
        setattr(self.module, self.attribute, self.heads - len(heads))
        for name in INNER_ATTRIBUTES:
            if getattr(self.module, name, None) == old_inner:
                setattr(self.module, name, self.inner)


def _out_axis(layer: nn.Module) -> int:
    """The weight axis of a layer's output channels (transformers' Conv1D stores its weight transposed)."""
    return 1 if hasattr(layer, "nf") else 0


def find_attention(
    model: nn.Module, example_input: Inputs, declared: dict[str, str], field: str = "prune.attention_heads"
) -> list[AttentionUnit]:
    """Every attention module whose heads can be removed: found by attribute name, or `declared`
    (glob over module paths → the attribute holding the head count; errors name it as `field`)."""
    candidates = _candidates(model, declared, field)
    if not candidates:
        return []
    events = _execution(model, example_input, [module for _, module, _ in candidates])
    units = []
    for name, module, attribute in candidates:
        unit = _resolve(name, module, attribute, events)
        if unit is None and name in _declared_names(model, declared):
            raise InputError(
                f"{field}: module {name!r} ran no layers that split into {getattr(module, attribute)} heads "
                "(projections whose width is a multiple of the head count, read by an output layer); "
                "declare the module that holds q, k and v"
            )
        if unit is not None:
            units.append(unit)
    return units


def _declared_names(model: nn.Module, declared: dict[str, str]) -> set[str]:
    names = [name for name, _ in model.named_modules() if name]
    return {name for pattern in declared for name in names if fnmatch.fnmatchcase(name, pattern)}


def _candidates(model: nn.Module, declared: dict[str, str], field: str) -> list[tuple[str, nn.Module, str]]:
    """(path, module, head attribute) of declared modules and of modules with a known head attribute;
    a candidate inside another candidate wins (the innermost module holds the projections)."""
    modules = dict(model.named_modules())
    paths = [name for name in modules if name]
    found: dict[str, str] = {}
    for pattern, attribute in declared.items():
        matched = [name for name in paths if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise InputError(
                f"{field}: {pattern!r} matches no module of the model.{close_matches(pattern, paths)} "
                f"Module paths look like {', '.join(repr(p) for p in paths[:6])}, … (globs such as 'blocks.*.attn' work)."
            )
        for name in matched:
            value = getattr(modules[name], attribute, None)
            if not isinstance(value, int) or isinstance(value, bool):
                ints = [k for k, v in vars(modules[name]).items() if type(v) is int and not k.startswith("_")]  # not bools
                raise InputError(
                    f"{field}: module {name!r} ({type(modules[name]).__name__}) has no int attribute {attribute!r} "
                    f"holding its head count: {unknown_name('int attribute', attribute, ints)}"
                )
            found[name] = attribute
    for name in paths:
        module = modules[name]
        if name in found or isinstance(module, nn.MultiheadAttention):  # torch's MHA: head_groups in graph.py
            continue
        attribute = next((a for a in HEAD_ATTRIBUTES if isinstance(vars(module).get(a), int)), None)
        if attribute is not None:
            found[name] = attribute
    innermost = [n for n in found if not any(other.startswith(n + ".") for other in found)]
    return [(name, modules[name], found[name]) for name in innermost]


@dataclass
class _Events:
    """Weighted layers in the order they ran (with the tensor each read first), and where each
    candidate's call began and ended in that list."""

    layers: list[nn.Module]
    spans: dict[nn.Module, tuple[int, int]]
    read: dict[nn.Module, Any]


def _execution(model: nn.Module, example_input: Inputs, candidates: list[nn.Module]) -> _Events:
    events = _Events([], {}, {})
    starts: dict[nn.Module, int] = {}

    def enter(module: nn.Module, *_: Any) -> None:
        starts.setdefault(module, len(events.layers))

    def leave(module: nn.Module, *_: Any) -> None:
        if module not in events.spans:
            events.spans[module] = (starts[module], len(events.layers))

    def ran(module: nn.Module, inputs: tuple[Any, ...], _: Any) -> None:
        events.layers.append(module)
        events.read.setdefault(module, inputs[0] if inputs else None)

    layer_types = weighted_layers()
    handles = [m.register_forward_pre_hook(enter) for m in candidates]
    handles += [m.register_forward_hook(leave) for m in candidates]
    handles += [m.register_forward_hook(ran) for m in model.modules() if isinstance(m, layer_types)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run_model(model, example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return events


def _resolve(name: str, module: nn.Module, attribute: str, events: _Events) -> AttentionUnit | None:
    """The unit's layers: inside the module, the projections then (usually) the output; an output
    outside it is the first layer to run after the module whose input width fits the heads."""
    heads = int(getattr(module, attribute))
    if module not in events.spans or heads < 1:
        return None
    start, end = events.spans[module]
    inside = list(dict.fromkeys(events.layers[start:end]))
    if not inside:
        return None
    after = events.layers[end : end + 1]
    for projections, output in ((inside[:-1], inside[-1]), (inside, after[0] if after else None)):
        # The output reads what attention made of the projections, never a tensor a projection read
        # (BERT's value has the output's shape when hidden size = heads × head size).
        if output is None or not projections or any(events.read[output] is events.read[p] for p in projections):
            continue
        inner = in_width(output)
        if inner % heads == 0 and all(out_width(p) % inner == 0 and out_width(p) // inner in (1, 2, 3) for p in projections):
            tables = [m for m in module.modules() if isinstance(m, nn.Embedding) and m.embedding_dim == heads]
            return AttentionUnit(name, module, attribute, projections, output, tables, inner // heads)
    return None


def tied_sets(units: list[AttentionUnit], coupled: Callable[[nn.Module], set[nn.Module]]) -> list[list[AttentionUnit]]:
    """Units that must lose the same heads: those whose projections torch-pruning couples
    (`coupled(layer)`: the modules in the dependency group of the layer's output channels)."""
    sets: list[list[AttentionUnit]] = []
    for unit in units:
        members = coupled(unit.projections[0])
        joined = [s for s in sets if any(other.projections[0] in members for other in s)]
        merged = [u for s in joined for u in s] + [unit]
        sets = [s for s in sets if s not in joined] + [merged]
    return sets
