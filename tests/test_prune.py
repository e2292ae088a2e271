"""Structured pruning with real torch-pruning on real models: every built-in model,
every importance criterion, targets, ignored layers, limits, and bad inputs."""

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from edgekd.data import load_data
from edgekd.errors import EdgekdError, InputError, RecipeError
from edgekd.models import build_model, model_names
from edgekd.prune import ChannelPruner, PruneConfig, importances
from edgekd.recipe import load_recipe


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def convolution_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


class TwoBranchNet(nn.Module):
    """User code: two convolution branches concatenated along channels, then a classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.left = nn.Sequential(nn.Conv2d(in_channels, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(in_channels, 20, 5, padding=2), nn.BatchNorm2d(20), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(32, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.mix(torch.cat([self.left(x), self.right(x)], dim=1))
        return self.fc(mixed.mean(dim=(2, 3)))


def two_branch_net(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    return TwoBranchNet(in_channels, num_classes)


class ThroughNumpy(nn.Module):
    """A layer torch-pruning cannot see through: it leaves autograd via NumPy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.detach().numpy().copy())


def numpy_detour_net(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    body = nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(), ThroughNumpy(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(num_classes))
    body(torch.zeros(1, in_channels, 8, 8))  # materialise the lazy layer
    return body


def prune_to_fraction(model: nn.Module, example: torch.Tensor, fraction: float, **settings) -> tuple[int, int]:
    pruner = ChannelPruner(model, example, PruneConfig(target_macs=0.5, **settings))
    start = pruner.measure("macs")
    return start, pruner.prune_to(start * fraction)


@pytest.mark.parametrize("name", model_names("image"))
def test_every_builtin_model_pruned_to_half_its_macs_still_exports_to_onnx(name, digits, tmp_path):
    model = build_model(name, in_channels=1, num_classes=10)
    images = digits.test.tensors[0][:8]
    start, reached = prune_to_fraction(model, images[:1], 0.5)
    assert 0.5 * start * 0.9 <= reached <= 0.5 * start  # at the aim, overshooting by less than one increment's worth
    model.eval()
    with torch.no_grad():
        expected = model(images).numpy()
    assert expected.shape == (8, 10)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (images,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": images.numpy()})
    assert np.abs(got - expected).max() < 1e-4


def test_vit_pruning_removes_whole_heads_and_keeps_heads_consistent(digits):
    model = build_model("vit_s(dim=32, depth=2, heads=4)", in_channels=1, num_classes=10)
    prune_to_fraction(model, digits.test.tensors[0][:1], 0.5)
    for block in model.blocks:
        attention = block.attn
        assert attention.num_heads < 4 and attention.head_dim == 8  # heads go whole; their size stays
        assert attention.qkv.out_features == 3 * attention.num_heads * attention.head_dim
        assert attention.proj.in_features == attention.num_heads * attention.head_dim
        assert attention.proj.out_features == 32  # the hidden size is kept unless prune.hidden is on
    assert model(digits.test.tensors[0][:3]).shape == (3, 10)


@pytest.mark.parametrize("criterion", importances.names())
def test_each_importance_criterion_prunes_a_step_of_a_small_resnet(criterion, digits):
    model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
    images = digits.test.tensors[0][:1]
    pruner = ChannelPruner(model, images, PruneConfig(target_macs=0.5, importance=criterion))
    start = pruner.measure("macs")
    batches = list(zip(digits.train.tensors[0][:64].split(32), digits.train.tensors[1][:64].split(32)))
    reached = pruner.prune_to(start * 0.8, seed=1, gradient_batches=batches)
    assert reached <= start * 0.8
    assert model(images).shape == (1, 10)


def test_taylor_without_gradient_batches_is_refused(digits):
    model = build_model("cnn(width=8)", in_channels=1, num_classes=10)
    pruner = ChannelPruner(model, digits.test.tensors[0][:1], PruneConfig(ratio=0.2, importance="taylor"))
    with pytest.raises(InputError, match="gradient_batches"):
        pruner.prune_to(0)


def test_random_importance_draws_from_the_step_seed_only(digits):
    def pruned_weights(seed: int, caller_state: int) -> list[float]:
        torch.manual_seed(0)
        model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
        torch.manual_seed(caller_state)
        pruner = ChannelPruner(model, digits.test.tensors[0][:1], PruneConfig(ratio=0.3, importance="random"))
        pruner.prune_to(0.7 * pruner.measure("channels"), seed=seed)
        return [p.sum().item() for p in model.parameters()]

    assert pruned_weights(3, caller_state=1) == pruned_weights(3, caller_state=2)
    assert pruned_weights(3, caller_state=1) != pruned_weights(4, caller_state=1)


def test_ratio_removes_that_share_of_the_prunable_channels(digits):
    model = build_model("mobilenet_s", in_channels=1, num_classes=10)
    pruner = ChannelPruner(model, digits.test.tensors[0][:1], PruneConfig(ratio=0.4))
    start = pruner.measure("channels")
    assert pruner.prune_to(0.6 * start) <= 0.6 * start
    assert model.fc.out_features == 10


def test_ignored_modules_and_the_classifier_keep_their_width(digits):
    model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
    before = convolution_widths(model)
    prune_to_fraction(model, digits.test.tensors[0][:1], 0.5, ignore=("layers.0.conv1", "layers.2.*"))
    after = convolution_widths(model)
    kept = ["layers.0.conv1", "layers.2.conv1", "layers.2.conv2", "layers.2.shortcut.0"]
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert after["layers.1.conv1"] < before["layers.1.conv1"]
    assert (model.fc.in_features, model.fc.out_features) == (32, 10)


def test_user_model_with_a_concatenation_prunes_like_a_builtin(digits):
    model = build_model(f"{__name__}:two_branch_net", in_channels=1, num_classes=10)
    images = digits.test.tensors[0][:4]
    start, reached = prune_to_fraction(model, images[:1], 0.5)
    assert reached <= 0.5 * start
    assert model.mix[0].in_channels == model.left[0].out_channels + model.right[0].out_channels
    assert model(images).shape == (4, 10)


def test_round_to_keeps_channel_counts_multiples(digits):
    model = build_model("resnet_s(width=16)", in_channels=1, num_classes=10)
    prune_to_fraction(model, digits.test.tensors[0][:1], 0.4, round_to=4)
    widths = convolution_widths(model)
    assert all(width % 4 == 0 for width in widths.values())
    assert sum(widths.values()) < sum(convolution_widths(build_model("resnet_s(width=16)", in_channels=1, num_classes=10)).values())


def test_max_layer_ratio_holds_across_pruners_that_remember_the_original_widths(digits):
    model = build_model("resnet_s(width=16)", in_channels=1, num_classes=10)
    images = digits.test.tensors[0][:1]
    config = PruneConfig(target_macs=0.5, max_layer_ratio=0.5)
    first = ChannelPruner(model, images, config)
    original, start = first.widths(), first.measure("macs")
    first.prune_to(0.7 * start)
    second = ChannelPruner(model, images, config)
    second.limit_widths(original)
    with pytest.raises(EdgekdError, match="max_layer_ratio=0.5"):
        second.prune_to(0.1 * start)
    for name, width in convolution_widths(model).items():
        before = original[name][1]
        assert width >= before // 2 - math.ceil(0.05 * before) - 1, name  # the last increment (5%) may overshoot


def test_global_pruning_ranks_channels_across_layers(digits):
    local_model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
    global_model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
    global_model.load_state_dict(local_model.state_dict())
    images = digits.test.tensors[0][:1]
    prune_to_fraction(local_model, images, 0.5)
    start, reached = prune_to_fraction(global_model, images, 0.5, global_pruning=True)
    assert reached <= 0.5 * start
    assert convolution_widths(global_model) != convolution_widths(local_model)


def test_group_norm_regularizer_shrinks_weights_during_training(digits):
    def trained_weight_norm(regularize: bool) -> float:
        torch.manual_seed(0)
        model = build_model("cnn(width=8)", in_channels=1, num_classes=10)
        pruner = ChannelPruner(model, digits.test.tensors[0][:1], PruneConfig(ratio=0.5), regularization=0.05)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for x, y in digits.loader("train", 64, shuffle=True, seed=0):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if regularize:
                pruner.regularize(model)
            optimizer.step()
        return sum(m.weight.norm().item() for m in model.modules() if isinstance(m, nn.Conv2d))

    assert trained_weight_norm(regularize=True) < 0.9 * trained_weight_norm(regularize=False)


# ---- bad inputs -------------------------------------------------------------------


def test_an_unreachable_target_says_what_was_reached(digits):
    model = build_model("cnn(width=8)", in_channels=1, num_classes=10)
    pruner = ChannelPruner(model, digits.test.tensors[0][:1], PruneConfig(target_macs=0.5, max_layer_ratio=0.3))
    start = pruner.measure("macs")
    with pytest.raises(EdgekdError, match=r"cannot reach macs ≤ .* stopped at [\d,]+ \(\d+\.\d% of") as caught:
        pruner.prune_to(0.05 * start)
    assert not isinstance(caught.value, InputError)


def test_nothing_to_prune_when_everything_is_ignored_fails_at_once(digits):
    model = build_model("cnn(width=8)", in_channels=1, num_classes=10)
    pruner = ChannelPruner(model, digits.test.tensors[0][:1], PruneConfig(target_macs=0.5, ignore=("features",)))
    with pytest.raises(EdgekdError, match="nothing more can be removed"):
        pruner.prune_to(1000)
    assert pruner.pruner.current_step == 0


def test_an_ignore_pattern_that_matches_nothing_lists_close_matches(digits):
    model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
    with pytest.raises(InputError, match=r"'layer\.0\.conv1' matches no module.*Did you mean 'layers\.0\.conv1'"):
        ChannelPruner(model, digits.test.tensors[0][:1], PruneConfig(ratio=0.5, ignore=("layer.0.conv1",)))


def test_a_layer_torch_pruning_cannot_trace_is_named(digits):
    model = build_model(f"{__name__}:numpy_detour_net", in_channels=1, num_classes=10)
    with pytest.raises(InputError, match=r"cannot trace module '0' \(Conv2d\): module '2' \(ThroughNumpy\) cuts the autograd graph"):
        ChannelPruner(model, digits.test.tensors[0][:1], PruneConfig(ratio=0.5))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ratio": 1.5}, "stages[0].prune.ratio: must be < 1"),
        ({"ratio": 0}, "stages[0].prune.ratio: must be > 0"),
        ({"target_macs": 0.3, "ratio": 0.5}, "stages[0].prune: give exactly one of ratio, target_macs or target_params (found ratio and target_macs)"),
        ({"steps": 4}, "found none"),
        ({"target_params": 0.5, "importance": "group_l3"}, "stages[0].prune.importance: unknown importance criterion 'group_l3'. Did you mean 'group_l2'"),
        ({"ratio": 0.5, "max_layer_ratio": 0}, "stages[0].prune.max_layer_ratio: must be > 0"),
        ({"ratio": 0.5, "sparsity": {"reg": 1e-4}}, "stages[0].prune.sparsity.epochs: required field is missing"),
        ({"ratio": 0.5, "round_to": 0}, "stages[0].prune.round_to: must be ≥ 1"),
    ],
)
def test_bad_prune_settings_name_their_field(settings, message):
    recipe = {"name": "bad", "teacher": {"model": "cnn", "train": {"epochs": 1}}, "stages": [{"prune": settings}]}
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert message in str(caught.value)


def test_prune_config_errors_carry_the_field_location():
    with pytest.raises(ValidationError) as caught:
        PruneConfig(ratio=1.0)
    assert caught.value.errors()[0]["loc"] == ("ratio",)


def test_frozen_layers_are_traced_pruned_and_stay_frozen(digits):
    model = build_model("resnet_s(width=8)", in_channels=1, num_classes=10)
    model.stem.requires_grad_(False)
    start, reached = prune_to_fraction(model, digits.test.tensors[0][:1], 0.5)
    assert reached <= 0.5 * start
    assert model.stem[0].out_channels < 8
    assert [p.requires_grad for p in model.stem.parameters()] == [False, False, False]
    assert all(p.requires_grad for p in model.layers.parameters())
