"""Importance criteria: how torch-pruning ranks the channels of a dependency group.

Each entry builds a fresh torch-pruning importance object; `needs_gradients`
criteria (taylor) score channels from gradients, so the pruner runs a loss
backward on a few training batches before every increment.

>>> type(importances.get("group_l2").build()).__name__
'GroupMagnitudeImportance'
>>> importances.get("taylor").needs_gradients
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch_pruning as tp

from edgekd.prune.attention import HeadScore
from edgekd.registry import Registry

Importance = tp.importance.Importance


@dataclass(frozen=True)
class Criterion:
    """A way to rank channels; register your own with `importances.register(Criterion(...), name=...)`.

    `head_score` ranks whole attention heads: the L1 or L2 norm of their weights, |weight·gradient|
    (taylor) or random."""

    build: Callable[[], Importance]
    needs_gradients: bool = False
    head_score: HeadScore = "l2"


importances: Registry[Criterion] = Registry("importance criterion")

importances.register(Criterion(lambda: tp.importance.GroupMagnitudeImportance(p=1), head_score="l1"), name="group_l1")
importances.register(Criterion(lambda: tp.importance.GroupMagnitudeImportance(p=2)), name="group_l2")
importances.register(Criterion(tp.importance.GroupTaylorImportance, needs_gradients=True, head_score="taylor"), name="taylor")
importances.register(Criterion(tp.importance.BNScaleImportance), name="bn_scale")
importances.register(Criterion(tp.importance.LAMPImportance), name="lamp")
importances.register(Criterion(tp.importance.FPGMImportance), name="fpgm")
# A baseline: draws from torch's global generator, which ChannelPruner.prune_to seeds per step.
importances.register(Criterion(tp.importance.RandomImportance, head_score="random"), name="random")
