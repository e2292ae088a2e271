"""Structured pruning with torch-pruning: targets reached by measurement, importance
criteria, ignored layers, sparse training, attention heads and hidden sizes of
transformers (Hugging Face ones kept reloadable), pruned structures saved as data,
and the `prune` stage (registered on import)."""

from edgekd.prune import stage  # noqa: F401  (registers the prune stage)
from edgekd.prune.attention import AttentionUnit, find_attention
from edgekd.prune.config import PruneConfig, SparsityConfig
from edgekd.prune.hf import save_pretrained
from edgekd.prune.importances import Criterion, importances
from edgekd.prune.pruner import ChannelPruner, aim_for_step, prune
from edgekd.prune.stage import PruneStage
from edgekd.prune.structure import apply_structure, capture_structure, load_pruned, save_pruned

__all__ = [
    "AttentionUnit",
    "ChannelPruner",
    "Criterion",
    "PruneConfig",
    "PruneStage",
    "SparsityConfig",
    "aim_for_step",
    "apply_structure",
    "capture_structure",
    "find_attention",
    "importances",
    "load_pruned",
    "prune",
    "save_pretrained",
    "save_pruned",
]
