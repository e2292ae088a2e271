"""Structured pruning towards a measured target.

torch-pruning removes channels through its dependency graph, so residual adds,
depthwise convolutions and concatenations stay consistent; transformers lose whole
attention heads (edgekd.prune.transformer). Targets are reached by measurement, not
by formula: the pruner steps in increments of 5% of each layer's channels, one
dependency group at a time, and measures MACs, parameters or channels after every
change until the value is at or below the aim — so it overshoots by at most one
group's channels. A Hugging Face model, whose config holds one size per kind, always
finishes an increment so that every layer stays alike.

>>> from edgekd.models import build_model
>>> model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
>>> pruner = ChannelPruner(model, torch.zeros(1, 1, 8, 8), PruneConfig(target_macs=0.5))
>>> start = pruner.measure("macs")
>>> pruner.prune_to(start / 2) <= start / 2
True
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Iterator

import torch
import torch_pruning as tp
from torch import nn

from edgekd.errors import EdgekdError, InputError
from edgekd.metrics import measure
from edgekd.outputs import Inputs, flatten_tokens, logits_of, move_inputs, run_model
from edgekd.prune.attention import find_attention
from edgekd.prune.config import Metric, PruneConfig
from edgekd.prune.graph import check_traced, head_groups, ignored_modules, output_width, probe, tracing, weighted_layers
from edgekd.prune.hf import customized_pruners, family_of, is_hf_model, mlp_follows_stage, mlp_layers
from edgekd.prune.importances import importances
from edgekd.prune.transformer import TransformerSteps

# The pruner's schedule: increment k asks every layer for 5·k% fewer channels than it had at the start.
INCREMENTS = 20

# (inputs, targets) pairs: inputs as the model takes them (a tensor, or a text batch's keyword arguments).
Batches = Iterable[tuple[Inputs, torch.Tensor]]


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

    def __init__(self, model: nn.Module, example_input: Inputs, config: PruneConfig, *, regularization: float | None = None):
        self.model = model
        self.example_input = example_input
        self.config = config
        self.criterion = importances.get(config.importance)
        self.uniform = is_hf_model(model)
        if self.uniform and config.global_pruning:
            raise InputError(
                "prune.global_pruning: a Hugging Face config holds one width per kind of layer, so every layer must "
                "keep the same width; prune with global_pruning: false"
            )
        found = probe(model, example_input)
        ignored = ignored_modules(model, config.ignore, found.classifier)
        kept = {sub for module in ignored for sub in module.modules()}
        layer_types = weighted_layers()
        self.layers = [m for m in model.modules() if isinstance(m, layer_types) and m not in kept]
        self.names = {module: name for name, module in model.named_modules()}
        self.transformer = TransformerSteps(model, find_attention(model, example_input, config.attention_heads), config, self.criterion.head_score)
        self.pruner = self._build(ignored + self._left_to_others(), regularization)
        check_traced(model, set(self.pruner.DG.module2node), found, ignored)
        self.transformer.attach(self.pruner.DG, self.pruner.estimate_importance, self.names, kept)

    def _left_to_others(self) -> list[nn.Module]:
        """Layers whose widths torch-pruning's schedule leaves alone: attention heads and residual streams
        (TransformerSteps prunes them) and, in a Hugging Face model, every width its config cannot hold."""
        left = self.transformer.ignored()
        if mlp_follows_stage(self.model):  # ConvNeXt: stage widths on the schedule, the MLPs follow them
            left += mlp_layers(self.model)
        elif family_of(self.model) is not None:
            mlp, layer_types = set(mlp_layers(self.model)), weighted_layers()
            left += [m for m in self.model.modules() if isinstance(m, layer_types) and m not in mlp]
        return left

    def _build(self, ignored: list[nn.Module], regularization: float | None) -> tp.pruner.BasePruner:
        custom = customized_pruners()
        settings = dict(
            global_pruning=self.config.global_pruning,
            pruning_ratio=1.0,
            iterative_steps=INCREMENTS,
            max_pruning_ratio=self.config.max_layer_ratio,
            ignored_layers=ignored,
            round_to=self.config.round_to,
            # Fresh dicts: torch-pruning mutates these and its defaults are shared between pruners.
            in_channel_groups=head_groups(self.model),
            out_channel_groups=head_groups(self.model),
            num_heads={},
            customized_pruners=custom,
            root_module_types=[tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR, tp.ops.TORCH_LSTM, *custom],
            output_transform=logits_of,
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
        """[in, out] channels of every layer the pruner can shrink, by module path (for an attention
        module: its head count twice)."""
        init_in, init_out = self.pruner.layer_init_in_ch, self.pruner.layer_init_out_ch
        layers = {self.names[m]: [init_in[m], init_out[m]] for m in init_out if m in self.names}
        return layers | self.transformer.widths()

    def limit_widths(self, original: dict[str, list[int]]) -> None:
        """Apply max_layer_ratio to the widths a layer had before its stage began, not to today's."""
        for module in list(self.pruner.layer_init_out_ch):
            name = self.names.get(module)
            if name in original:
                self.pruner.layer_init_in_ch[module], self.pruner.layer_init_out_ch[module] = original[name]
        self.transformer.limit_widths(original)

    def prune_to(self, aim: float, *, seed: int = 0, gradient_batches: Batches = ()) -> int:
        """Remove channels (and heads) until `config.metric` measures ≤ `aim`; returns the measured value.

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
                if self.pruner.current_step >= self.pruner.iterative_steps or not self._prunable():
                    raise EdgekdError(self._unreachable(metric, aim, value, start))
                if batches:
                    _accumulate_gradients(self.model, batches)
                # Removal by removal, so that an increment stops as soon as the aim is met (round_to makes big groups);
                # a uniform model is measured once its increment is complete (between removals its layers differ).
                where = ""
                for where, remove in self._increment():
                    remove()
                    if _parameter_count(self.model) != size and not self.uniform:  # measure only when something was removed
                        size = _parameter_count(self.model)
                        value = self._measure_pruned(metric, where)
                        if value <= aim:
                            break
                if self.uniform and where:
                    value = self._measure_pruned(metric, where)
        self.transformer.sync()
        self.model.zero_grad(set_to_none=True)
        return value

    def _prunable(self) -> bool:
        return self.pruner.initial_total_channels > 0 or self.transformer.can_prune()

    def _increment(self) -> Iterator[tuple[str, Callable[[], None]]]:
        """(module path, how) of every removal in the next increment: torch-pruning's channel groups,
        then heads and hidden sizes."""
        for group in self.pruner.step(interactive=True):
            yield self.names.get(group[0].dep.target.module, "?"), group.prune
        yield from self.transformer.actions(self.pruner.current_step, INCREMENTS)

    def _measure_pruned(self, metric: Metric, where: str) -> int:
        """`measure` after a removal at module `where`; a forward pass it broke is named, with the usual causes."""
        try:
            return self.measure(metric)
        except RuntimeError as exc:
            raise InputError(
                f"after torch-pruning removed channels of {where!r}, the model's forward fails: {' '.join(str(exc).split())}. "
                "A width the model keeps as a plain Python number (e.g. torchvision VisionTransformer.hidden_dim, "
                f"used to reshape) is not updated by pruning: keep that width with prune.ignore: [{where!r}]. An attention "
                "module whose head count edgekd does not find needs prune.attention_heads: {module path: attribute}."
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


def _accumulate_gradients(model: nn.Module, batches: list[tuple[Inputs, torch.Tensor]]) -> None:
    """Cross-entropy gradients summed over a few batches, for gradient-based importance."""
    device = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for inputs, targets in batches:
            logits = logits_of(run_model(model, move_inputs(inputs, device)))
            nn.functional.cross_entropy(*flatten_tokens(logits, targets.to(device))).backward()
