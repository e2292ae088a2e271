"""Structured pruning towards a measured target.

torch-pruning removes channels through its dependency graph, so residual adds,
depthwise convolutions, concatenations and attention heads stay consistent.
Targets are reached by measurement, not by formula: the pruner steps in
increments of 5% of each layer's channels, one dependency group at a time, and
measures MACs, parameters or channels after every change until the value is at
or below the aim — so it overshoots by at most one group's channels.

>>> from edgekd.models import build_model
>>> model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
>>> pruner = ChannelPruner(model, torch.zeros(1, 1, 8, 8), PruneConfig(target_macs=0.5))
>>> start = pruner.measure("macs")
>>> pruner.prune_to(start / 2) <= start / 2
True
"""

from __future__ import annotations

import warnings
from typing import Iterable

import torch
import torch_pruning as tp
from torch import nn

from edgekd.errors import EdgekdError, InputError
from edgekd.metrics import measure
from edgekd.prune.config import Metric, PruneConfig
from edgekd.prune.graph import (
    WEIGHTED_LAYERS,
    attention_heads,
    check_traced,
    head_groups,
    ignored_modules,
    output_width,
    probe,
    sync_attention,
    tracing,
)
from edgekd.prune.importances import importances

# The pruner's schedule: increment k asks every layer for 5·k% fewer channels than it had at the start.
INCREMENTS = 20

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def aim_for_step(start: float, target: float, step: int, steps: int) -> float:
    """Geometric interpolation: every step removes the same fraction of what the previous one left.

    >>> [round(aim_for_step(1000, 125, k, 3)) for k in (1, 2, 3)]
    [500, 250, 125]
    """
    if start <= target:
        return start
    return start * (target / start) ** (step / steps)


class ChannelPruner:
    """A torch-pruning pruner over one model (the classifier and `config.ignore` kept), built for `config`.

    With `regularization` it builds torch-pruning's GroupNormPruner instead, whose
    `regularize(model)` adds the group-norm sparsity penalty to the gradients."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, config: PruneConfig, *, regularization: float | None = None):
        self.model = model
        self.example_input = example_input
        self.config = config
        self.criterion = importances.get(config.importance)
        found = probe(model, example_input)
        ignored = ignored_modules(model, config.ignore, found.classifier)
        kept = {sub for module in ignored for sub in module.modules()}
        self.layers = [m for m in model.modules() if isinstance(m, WEIGHTED_LAYERS) and m not in kept]
        self.names = {module: name for name, module in model.named_modules()}
        self.pruner = self._build(ignored, regularization)
        check_traced(model, set(self.pruner.DG.module2node), found, ignored)

    def _build(self, ignored: list[nn.Module], regularization: float | None) -> tp.pruner.BasePruner:
        settings = dict(
            global_pruning=self.config.global_pruning,
            pruning_ratio=1.0,
            iterative_steps=INCREMENTS,
            max_pruning_ratio=self.config.max_layer_ratio,
            ignored_layers=ignored,
            round_to=self.config.round_to,
            # Fresh dicts: torch-pruning mutates these and its defaults are shared between pruners.
            num_heads=attention_heads(self.model),
            in_channel_groups=head_groups(self.model),
            out_channel_groups=head_groups(self.model),
        )
        with tracing(self.model), warnings.catch_warnings():
            # Unwrapped parameters (a ViT's position embedding) are pruned along their last dimension, as wanted.
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            try:
                if regularization is not None:
                    return tp.pruner.GroupNormPruner(
                        self.model, self.example_input, importance=tp.importance.GroupMagnitudeImportance(p=2),
                        reg=regularization, **settings,
                    )
                return tp.pruner.BasePruner(self.model, self.example_input, importance=self.criterion.build(), **settings)
            # ArithmeticError: its reshape index mapping divides by zero on a channel shuffle (view to 5-D and back).
            except (RuntimeError, AssertionError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
                raise InputError(f"torch-pruning cannot trace {type(self.model).__name__}: {type(exc).__name__}: {exc}") from None

    def regularize(self, model: nn.Module) -> None:
        """The group-norm penalty's gradient (GroupNormPruner only); call after every backward pass."""
        self.pruner.regularize(model)

    def measure(self, metric: Metric) -> int:
        """The model's MACs or parameters (as the report counts them), or its prunable channels."""
        if metric == "channels":
            return sum(output_width(layer) for layer in self.layers)
        return measure(self.model, self.example_input)[metric]

    def widths(self) -> dict[str, list[int]]:
        """[in, out] channels of every layer the pruner can shrink, by module path."""
        init_in, init_out = self.pruner.layer_init_in_ch, self.pruner.layer_init_out_ch
        return {self.names[m]: [init_in[m], init_out[m]] for m in init_out if m in self.names}

    def limit_widths(self, original: dict[str, list[int]]) -> None:
        """Apply max_layer_ratio to the widths a layer had before its stage began, not to today's."""
        for module in list(self.pruner.layer_init_out_ch):
            name = self.names.get(module)
            if name in original:
                self.pruner.layer_init_in_ch[module], self.pruner.layer_init_out_ch[module] = original[name]

    def prune_to(self, aim: float, *, seed: int = 0, gradient_batches: Batches = ()) -> int:
        """Remove channels until `config.metric` measures ≤ `aim`; returns the measured value.

        Raises EdgekdError when nothing more can be removed before the aim is met."""
        metric = self.config.metric
        batches = list(gradient_batches)
        if self.criterion.needs_gradients and not batches:
            raise InputError(f"importance {self.config.importance!r} ranks channels by gradients; pass gradient_batches")
        start = value = self.measure(metric)
        size = _parameter_count(self.model)
        with tracing(self.model), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            while value > aim:
                if self.pruner.current_step >= self.pruner.iterative_steps or self.pruner.initial_total_channels == 0:
                    raise EdgekdError(self._unreachable(metric, aim, value, start))
                if batches:
                    _accumulate_gradients(self.model, batches)
                # Group by group, so that an increment stops as soon as the aim is met (round_to makes big groups).
                for group in self.pruner.step(interactive=True):
                    group.prune()
                    sync_attention(self.model, self.pruner.num_heads)
                    if _parameter_count(self.model) != size:  # measure only when something was removed
                        size = _parameter_count(self.model)
                        value = self._measure_pruned(metric, group)
                        if value <= aim:
                            break
        self.model.zero_grad(set_to_none=True)
        return value

    def _measure_pruned(self, metric: Metric, group: tp.Group) -> int:
        """`measure` after `group` was removed; a forward pass it broke is named, with the usual cause."""
        try:
            return self.measure(metric)
        except RuntimeError as exc:
            root = self.names.get(group[0].dep.target.module, "?")
            raise InputError(
                f"after torch-pruning removed channels of {root!r}, the model's forward fails: {' '.join(str(exc).split())}. "
                "A width the model keeps as a plain Python number (e.g. torchvision VisionTransformer.hidden_dim, "
                f"used to reshape) is not updated by pruning: keep that width with prune.ignore: [{root!r}]."
            ) from None

    def _unreachable(self, metric: str, aim: float, value: int, start: int) -> str:
        return (
            f"prune: cannot reach {metric} ≤ {aim:,.0f}: stopped at {value:,} ({value / start:.1%} of the {start:,} "
            f"this step started from) because nothing more can be removed — the remaining layers are ignored, "
            f"at max_layer_ratio={self.config.max_layer_ratio}, down to one channel, or not scored by "
            f"importance {self.config.importance!r} (bn_scale needs BatchNorm layers). "
            "Choose a less aggressive target, raise max_layer_ratio or ignore fewer layers."
        )


def prune(
    model: nn.Module, example_input: torch.Tensor, config: PruneConfig | None = None, *,
    gradient_batches: Batches = (), seed: int = 0, **settings: object,
) -> nn.Module:  # fmt: skip
    """Prune `model` in place to its target in one go, and return it: `target_macs` / `target_params`
    as a fraction of the model's own MACs / parameters, `ratio` of its prunable channels
    (a `PruneConfig`, or its fields as keywords). The recipe's prune stage does the same in steps,
    with recovery between them and targets relative to the teacher.

    >>> from edgekd.models import build_model
    >>> from edgekd.metrics import measure
    >>> model = build_model("cnn(width=8)", in_channels=1, num_classes=10)
    >>> before = measure(model, torch.zeros(1, 1, 8, 8))["macs"]
    >>> after = measure(prune(model, torch.zeros(1, 1, 8, 8), target_macs=0.5), torch.zeros(1, 1, 8, 8))["macs"]
    >>> after <= before / 2
    True
    """
    config = config or PruneConfig.model_validate(settings)
    pruner = ChannelPruner(model, example_input, config)
    pruner.prune_to(config.keep * pruner.measure(config.metric), seed=seed, gradient_batches=gradient_batches)
    return model


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _accumulate_gradients(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Cross-entropy gradients summed over a few batches, for gradient-based importance."""
    device = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for x, y in batches:
            nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
