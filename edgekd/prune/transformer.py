"""How a transformer is pruned: whole attention heads, MLP widths and (optionally) the
hidden size, on the channel pruner's schedule of 5% increments.

- MLP widths (and any other width inside a block) are torch-pruning's ordinary channel
  groups. In a Hugging Face model only the MLP's are: its config has no field for others.
  A ConvNeXt's MLPs follow their stage instead, to 4 × its width (edgekd.prune.hf).
- Heads: at increment k every attention module keeps ⌈H·(1 − k/20)⌉ of its H heads
  (never fewer than one, nor below `max_layer_ratio`); the lowest-ranked go. Layers that
  share per-head tables lose the same heads.
- Hidden size (`prune.hidden`): the residual stream — embeddings, norms, every block's
  input and output — shrinks by the same schedule, ranked by the importance criterion.
  Where a config derives the head size from hidden / heads (BERT, GPT-2), the hidden size
  follows the heads instead: heads × head size.

After pruning, a Hugging Face model's config holds the new sizes (edgekd.prune.hf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator

import torch
import torch_pruning as tp
from torch import nn

from edgekd.errors import InputError
from edgekd.prune.attention import AttentionUnit, HeadScore, tied_sets
from edgekd.prune.config import PruneConfig
from edgekd.prune.graph import weighted_layers
from edgekd.prune.hf import in_width, is_hf_model, mlp_follows_stage, mlp_layers, out_width, stage_mlp_width, sync_config, ties_head_size

# Attribute names of a hidden width some modules keep as numbers (GPT-2's embed_dim, T5's d_model).
HIDDEN_ATTRIBUTES = ("embed_dim", "hidden_size", "d_model")


def kept(origin: int, step: int, increments: int, max_layer_ratio: float, multiple: int = 1) -> int:
    """Units a layer keeps at increment `step`: ⌈origin·(1 − step/increments)⌉ rounded down to `multiple`,
    at least one multiple and at least ⌈origin·(1 − max_layer_ratio)⌉.

    >>> [kept(4, k, 20, 1.0) for k in (1, 5, 10, 15, 19, 20)]
    [4, 3, 2, 1, 1, 1]
    """
    scheduled = math.ceil(origin * (increments - step) / increments)
    scheduled -= scheduled % multiple
    return max(scheduled, multiple, math.ceil(origin * (1 - max_layer_ratio)))


@dataclass
class Residual:
    """A residual stream: the dependency group of an attention output's output channels."""

    name: str
    root: nn.Module
    origin: int


class TransformerSteps:
    """Heads and hidden size of the attention `units`, removed on the channel pruner's schedule."""

    def __init__(self, model: nn.Module, units: list[AttentionUnit], config: PruneConfig, head_score: HeadScore):
        self.model = model
        self.units = units
        self.config = config
        self.head_score = head_score
        self.lockstep = ties_head_size(model) and bool(units)
        self.head_origin = {unit.name: unit.heads for unit in units}
        self.tied: list[list[AttentionUnit]] = []
        self.residuals: list[Residual] = []
        self.followers: list[nn.Module] = []
        self.stage_mlps = mlp_layers(model) if mlp_follows_stage(model) else []
        self.names: dict[nn.Module, str] = {}
        self.graph: Any = None
        self.importance: Callable[[Any], torch.Tensor] | None = None
        if self.lockstep and config.hidden and not config.heads:
            raise InputError(
                f"prune.hidden: a {model.config.model_type} config derives the head size from hidden_size / heads, "
                "so its hidden size can only shrink with its heads: set prune.heads: true"
            )

    @property
    def prunes_hidden(self) -> bool:
        return bool(self.units) and (self.config.hidden or (self.lockstep and self.config.heads))

    def ignored(self) -> list[nn.Module]:
        """Layers torch-pruning must not shrink on its own: the heads' projections and the attention
        outputs (whose output channels are the residual stream); this class prunes those."""
        return [layer for unit in self.units for layer in (*unit.projections, unit.output)]

    def attach(self, graph: Any, importance: Callable[[Any], torch.Tensor], names: dict[nn.Module, str], kept: set[nn.Module]) -> None:
        """Read tied heads and residual streams from torch-pruning's dependency graph; `kept` layers
        (the classifier, prune.ignore) never lose output channels."""
        self.graph, self.importance, self.names = graph, importance, names
        self.tied = tied_sets(self.units, self._coupled)
        if not self.prunes_hidden:
            return
        found: dict[frozenset[nn.Module], Residual] = {}
        for unit in self.units:
            members = frozenset(self._coupled(unit.output))
            found.setdefault(members, Residual(names[unit.output], unit.output, out_width(unit.output)))
        self.residuals = list(found.values())
        self._check_shared_parameters(list(found), names)
        if is_hf_model(self.model):
            self.followers = self._hidden_followers(set().union(*found), kept)

    def _hidden_followers(self, streams: set[nn.Module], kept: set[nn.Module]) -> list[nn.Module]:
        """Layers outside the residual streams whose output width a Hugging Face config also calls the
        hidden size (BERT's pooler): they shrink with it."""
        hidden = {out_width(unit.output) for unit in self.units}
        heads = {layer for unit in self.units for layer in unit.projections}
        skip = streams | heads | kept | set(mlp_layers(self.model))
        return [m for m in self.model.modules() if isinstance(m, weighted_layers()) and m not in skip and out_width(m) in hidden]

    def _coupled(self, layer: nn.Module) -> set[nn.Module]:
        """Modules whose output channels torch-pruning couples to `layer`'s."""
        graph = self.graph
        group = graph.get_pruning_group(layer, graph.get_pruner_of_module(layer).prune_out_channels, list(range(out_width(layer))))
        return {dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)}

    def _check_shared_parameters(self, streams: list[frozenset[nn.Module]], names: dict[nn.Module, str]) -> None:
        """Two residual streams holding one tensor (T5's encoder and decoder share their embedding)
        cannot shrink apart."""
        owners: dict[int, int] = {}
        for index, members in enumerate(streams):
            for module in members:
                for parameter in module.parameters(recurse=False) if isinstance(module, nn.Module) else ():
                    other = owners.setdefault(id(parameter), index)
                    if other != index:
                        raise InputError(
                            f"prune.hidden: module {names.get(module, '?')!r} shares a tensor with another residual stream "
                            "(tied embeddings of an encoder and a decoder), so their hidden sizes cannot shrink apart; "
                            "prune heads and MLP widths only (prune.hidden: false)"
                        )

    def can_prune(self) -> bool:
        return bool(self.units) and (self.config.heads or self.prunes_hidden)

    def actions(self, step: int, increments: int) -> Iterator[tuple[str, Callable[[], None]]]:
        """(module path, how) of the removals of increment `step`: heads first (hidden sizes may follow them)."""
        if self.config.heads:
            for tied in self.tied:
                yield tied[0].name, partial(self._remove_heads, tied, step, increments)
        if self.prunes_hidden:
            for residual in self.residuals:
                yield residual.name, partial(self._shrink_hidden, residual, step, increments)
        for layer in self.stage_mlps:  # after torch-pruning's groups: the stage widths of this increment are set
            yield self.names[layer], partial(self._follow_stage, layer)

    def _follow_stage(self, layer: nn.Module) -> None:
        surplus = out_width(layer) - stage_mlp_width(self.model, layer)
        if surplus > 0:
            self._prune_weakest(layer, surplus)

    def _remove_heads(self, tied: list[AttentionUnit], step: int, increments: int) -> None:
        first = tied[0]
        target = kept(self.head_origin[first.name], step, increments, self.config.max_layer_ratio)
        surplus = first.heads - target
        if surplus <= 0:
            return
        scores = sum(unit.scores(self.head_score) for unit in tied)
        weakest = torch.argsort(scores)[:surplus].tolist()  # type: ignore[union-attr]
        for unit in tied:
            unit.remove(sorted(weakest), self.graph.get_pruner_of_module)

    def _shrink_hidden(self, residual: Residual, step: int, increments: int) -> None:
        width = out_width(residual.root)
        if self.lockstep:
            unit = next(u for u in self.units if u.output is residual.root)
            target = unit.heads * unit.head_dim
        else:
            target = kept(residual.origin, step, increments, self.config.max_layer_ratio, self.config.round_to or 1)
        if target >= width:
            return
        self._prune_weakest(residual.root, width - target)
        for follower in self.followers:
            if out_width(follower) == width:
                self._prune_weakest(follower, width - target)
        for module in self.model.modules():
            for name in HIDDEN_ATTRIBUTES:
                if getattr(module, name, None) == width and isinstance(getattr(module, name), int):
                    setattr(module, name, target)

    def _prune_weakest(self, layer: nn.Module, count: int) -> None:
        """Remove the `count` output channels of `layer` (and its dependency group) that rank lowest."""
        prune = self.graph.get_pruner_of_module(layer).prune_out_channels
        group = self.graph.get_pruning_group(layer, prune, list(range(out_width(layer))))
        assert self.importance is not None
        scores = self.importance(group)
        if scores is None:  # a criterion that cannot rank this group (bn_scale without BatchNorm)
            scores = tp.importance.GroupMagnitudeImportance(p=2)(group)
        self.graph.get_pruning_group(layer, prune, torch.argsort(scores)[:count].tolist()).prune()

    def widths(self) -> dict[str, list[int]]:
        """Head counts (by attention module) and residual widths (by root layer) when pruning began."""
        heads = {name: [count, count] for name, count in self.head_origin.items()}
        return heads | {r.name: [in_width(r.root), r.origin] for r in self.residuals}

    def limit_widths(self, original: dict[str, list[int]]) -> None:
        for name in self.head_origin:
            if name in original:
                self.head_origin[name] = original[name][1]
        for residual in self.residuals:
            if residual.name in original:
                residual.origin = original[residual.name][1]

    def sync(self) -> None:
        """Write the sizes into a Hugging Face model's config."""
        if not is_hf_model(self.model):
            return
        heads = {unit.heads for unit in self.units}
        if len(heads) > 1:
            raise InputError(f"attention modules kept different head counts {sorted(heads)}; a Hugging Face config holds one")
        first = self.units[0] if self.units else None
        sync_config(
            self.model,
            heads=heads.pop() if heads else None,
            head_dim=first.head_dim if first else None,
            hidden=in_width(first.projections[0]) if first else None,
        )
