"""Pruning Hugging Face models so that their config still describes them.

A Hugging Face config holds one size per kind — heads, head size, hidden size,
MLP width — and `from_pretrained` rebuilds the model from those numbers. So a
pruned student must keep every layer alike and write the new sizes back into its
config; then `save_pretrained` → `from_pretrained` reloads it. `FAMILIES` says, per
`model_type`, which config field holds each size and which layers are the MLP's
first (whose width is the intermediate size). Families whose config derives the
head size from hidden_size / num_attention_heads (BERT, GPT-2) can only lose heads
together with as many hidden channels (`ties_head_size`).

ConvNeXt has no heads; its config holds one width per stage (`hidden_sizes`) and builds
every block's MLP `mlp_ratio` = 4 times wider than its stage. So its stage widths — each
stage's residual stream: stem or downsampling conv, depthwise convs, channel LayerNorms,
layer scales, the MLPs' outputs — are torch-pruning's groups, and each MLP follows its
stage to 4 × the new width, keeping its highest-ranked channels (`edgekd.prune.transformer`).

GPT-2-style models use transformers' `Conv1D` (a Linear with a transposed weight);
`Conv1DPruner` teaches torch-pruning its layout.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch_pruning as tp
from torch import nn

from edgekd.errors import InputError


@dataclass(frozen=True)
class Family:
    """Where a family's config keeps each size. `head_dim` None: the head size is hidden / heads.
    With `stage_widths`, the config lists one width per stage (module paths `….stages.N.…`) and every
    MLP is `mlp_ratio` times as wide as its stage; `intermediate` is then None."""

    intermediate: str | None
    mlp: str  # glob over module paths: the MLP's first layer, whose output width is `intermediate`
    head_dim: str | None = None
    stage_widths: str | None = None
    mlp_ratio: int | None = None


FAMILIES = {
    "bert": Family(intermediate="intermediate_size", mlp="*.intermediate.dense"),
    "roberta": Family(intermediate="intermediate_size", mlp="*.intermediate.dense"),
    "gpt2": Family(intermediate="n_inner", mlp="*.mlp.c_fc"),
    "t5": Family(intermediate="d_ff", mlp="*.DenseReluDense.wi*", head_dim="d_kv"),
    "vit": Family(intermediate="intermediate_size", mlp="*.mlp.fc1", head_dim="head_dim"),
    "convnext": Family(intermediate=None, mlp="*.pwconv1", stage_widths="hidden_sizes", mlp_ratio=4),
}
STAGE = re.compile(r"(?:^|\.)stages\.(\d+)\.")


def conv1d_type() -> type | None:
    """transformers' Conv1D when transformers is loaded (a model using it cannot exist otherwise)."""
    if sys.modules.get("transformers") is None:
        return None
    from transformers.pytorch_utils import Conv1D

    return Conv1D


class Conv1DPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning for transformers' Conv1D: weight (in, out), bias (out), `nf` output features."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.nf)) - set(idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        layer.nf = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[0])) - set(idxs))
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.nf)

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.weight.shape[0])


def customized_pruners() -> dict[type, tp.pruner.function.BasePruningFunc]:
    conv1d = conv1d_type()
    return {conv1d: Conv1DPruner()} if conv1d else {}


def is_hf_model(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return hasattr(config, "model_type") and hasattr(model, "save_pretrained")


def family_of(model: nn.Module) -> Family | None:
    return FAMILIES.get(model.config.model_type) if is_hf_model(model) else None


def ties_head_size(model: nn.Module) -> bool:
    """Whether the model's config derives the head size from hidden_size / num_attention_heads."""
    if not is_hf_model(model):
        return False
    family = family_of(model)
    if family is not None:
        return family.head_dim is None
    return not hasattr(model.config, "head_dim")


def mlp_layers(model: nn.Module) -> list[nn.Module]:
    """The MLPs' first layers of a known family (their width is the config's intermediate size)."""
    family = family_of(model)
    if family is None:
        return []
    return [module for name, module in model.named_modules() if fnmatch.fnmatchcase(name, family.mlp)]


def mlp_follows_stage(model: nn.Module) -> bool:
    """Whether the model's MLP widths follow its stage widths (ConvNeXt) instead of being pruned on their own."""
    family = family_of(model)
    return family is not None and family.mlp_ratio is not None


def stage_mlp_width(model: nn.Module, layer: nn.Module) -> int:
    """The width a follower MLP's first `layer` must have: `mlp_ratio` × its stage's (its input) width."""
    family = family_of(model)
    assert family is not None and family.mlp_ratio is not None
    return family.mlp_ratio * in_width(layer)


def stage_widths(model: nn.Module) -> list[int]:
    """Each stage's width, read from its MLPs' input width, in stage order."""
    widths: dict[int, set[int]] = {}
    for name, module in model.named_modules():
        match = STAGE.search(name)
        if match and module in mlp_layers(model):
            widths.setdefault(int(match.group(1)), set()).add(in_width(module))
    if any(len(found) > 1 for found in widths.values()):
        raise InputError(f"the pruned {model.config.model_type} has blocks of different widths within a stage: {widths}")
    return [widths[stage].pop() for stage in sorted(widths)]


def out_width(layer: nn.Module) -> int:
    return int(layer.nf) if hasattr(layer, "nf") else int(layer.weight.shape[0])


def in_width(layer: nn.Module) -> int:
    return int(layer.weight.shape[0]) if hasattr(layer, "nf") else int(layer.weight.shape[1])


def sync_config(model: nn.Module, heads: int | None, head_dim: int | None, hidden: int | None) -> None:
    """Write the pruned sizes into a Hugging Face model's config (heads, head size, hidden, MLP width).

    Raises InputError when layers of one kind differ in width: a config holds one size per kind."""
    family = family_of(model)
    if family is None:
        return
    config = model.config
    if family.stage_widths is not None:
        setattr(config, family.stage_widths, stage_widths(model))
        return
    widths = {out_width(layer) for layer in mlp_layers(model)}
    if len(widths) > 1:
        raise InputError(
            f"the pruned {config.model_type} has MLP widths {sorted(widths)}, but its config holds one "
            "intermediate size: prune with global_pruning off so every layer keeps the same width"
        )
    if widths and family.intermediate is not None:
        setattr(config, family.intermediate, widths.pop())
    if heads is not None:
        config.num_attention_heads = heads
        if family.head_dim is not None and head_dim is not None:
            setattr(config, family.head_dim, head_dim)
    if hidden is not None:
        config.hidden_size = hidden
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # pruning gave tied embeddings new, separate tensors


def config_mismatches(model: nn.Module) -> list[str]:
    """Tensors whose shape differs between the model and one its config would build (on the meta device)."""
    with torch.device("meta"):
        fresh = type(model)(copy.deepcopy(model.config))
    expected = {name: tuple(t.shape) for name, t in fresh.state_dict().items()}
    return [
        f"{name}: {tuple(t.shape)} but the config builds {expected.get(name)}"
        for name, t in model.state_dict().items()
        if expected.get(name) != tuple(t.shape)
    ]


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """`model.save_pretrained(folder)` after checking that its config rebuilds every pruned shape,
    so `from_pretrained(folder)` reloads it."""
    mismatches = config_mismatches(model)
    if mismatches:
        raise InputError(
            f"the {model.config.model_type} config cannot describe this pruned model, so from_pretrained would not "
            f"reload it ({'; '.join(mismatches[:3])}). Save it with edgekd.prune.save_pruned instead"
        )
    model.save_pretrained(str(folder))
    return Path(folder)


def size_fields(model: nn.Module) -> list[str]:
    """The config fields pruning changes, for a model of a known family."""
    family = family_of(model)
    if family is None:
        return []
    if family.stage_widths is not None:
        return [family.stage_widths]
    return ["num_attention_heads", "hidden_size", *[f for f in (family.intermediate, family.head_dim) if f]]


def config_sizes(model: nn.Module) -> dict[str, Any]:
    """The pruned sizes in a model's config (JSON-able), for checkpoints that rebuild it from its spec."""
    return {name: getattr(model.config, name) for name in size_fields(model)}


def restore_sizes(model: nn.Module, sizes: dict[str, Any]) -> None:
    for name, value in sizes.items():
        setattr(model.config, name, value)
