"""Constructs of torchvision's classification models (bench/zoo.py), rebuilt by hand so the tests
need no torchvision: nn.MultiheadAttention (vit_b_16) through pruning, quantization, export and
ONNX Runtime; a width kept as a Python number (vit_b_16's hidden_dim); Linear layers on channels-last feature maps (convnext) through the TensorRT lint;
a channel shuffle (shufflenet_v2), which torch-pruning cannot trace."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.export import export_onnx, lint_tensorrt, parity
from edgekd.export.onnx_export import read_metadata
from edgekd.prune import ChannelPruner, PruneConfig
from edgekd.quant import QuantLayer, calibrate, insert_fake_quant, profiles


class TokenMixer(nn.Module):
    """A one-block ViT in torchvision's style: patch conv, pre-norm nn.MultiheadAttention and MLP, mean-pooled head."""

    def __init__(self, dim: int = 32, heads: int = 4, num_classes: int = 10):
        super().__init__()
        self.patches = nn.Conv2d(1, dim, 4, stride=4)
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        normed = self.norm(tokens)
        tokens = tokens + self.attention(normed, normed, normed, need_weights=False)[0]
        tokens = tokens + self.mlp(tokens)
        return self.head(tokens.mean(1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's: channels viewed as (groups, per group), transposed, flattened back."""
    batch, channels, height, width = x.shape
    return x.view(batch, groups, channels // groups, height, width).transpose(1, 2).contiguous().view(batch, -1, height, width)


class ChannelShuffleNet(nn.Module):
    """shufflenet_v2's blocks: a downsampling block (two branches), then blocks that pass half the
    channels through, transform the other half, concatenate and shuffle."""

    def __init__(self, channels: int = 8, blocks: int = 3, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.left, self.right = nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 1)
        self.branches = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(blocks))
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1), 2)
        for branch in self.branches:
            kept, transformed = x.chunk(2, dim=1)
            x = channel_shuffle(torch.cat([kept, branch(transformed)], dim=1), 2)
        return self.head(x.mean((2, 3)))


def images(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def token_mixer() -> TokenMixer:
    torch.manual_seed(0)
    return TokenMixer().eval()


def test_pruning_multihead_attention_removes_the_same_dimensions_from_every_head(tmp_path):
    model = token_mixer()
    pruner = ChannelPruner(model, images(1, 0), PruneConfig(target_macs=0.5))
    start = pruner.measure("macs")
    assert pruner.prune_to(start * 0.5) <= start * 0.5
    attention = model.attention
    assert attention.embed_dim < 32 and attention.num_heads == 4
    assert attention.head_dim * attention.num_heads == attention.embed_dim == model.patches.out_channels
    path = tmp_path / "pruned.onnx"
    export_onnx(model, path, images(1, 0))
    assert parity(model, path, [images(32, 1)], min_agreement=0.999)["agreement"] == 1.0


@pytest.mark.parametrize("profile", profiles.names())
def test_multihead_attention_stays_float_in_a_quantized_model_that_exports_and_matches(profile, tmp_path):
    model = token_mixer()
    quantized = insert_fake_quant(model, profiles.get(profile), batches_per_epoch=1)
    # The attention's out_proj is read by nn.MultiheadAttention as a weight, not called: it stays a Linear,
    # in the quantized copy and in the original, which insert_fake_quant must not touch.
    assert type(model.attention.out_proj) is type(quantized.attention.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert isinstance(quantized.get_submodule("mlp.0"), QuantLayer) and isinstance(model.mlp[0], nn.Linear)
    calibrate(quantized, [images(64, 2)])
    path = tmp_path / "int8.onnx"
    export_onnx(quantized.eval(), path, images(1, 0))
    # Random weights leave near-tied logits, where a one-step rounding difference can swap the top class
    # (README, Limitations): the logit difference is the check, top-1 agreement only a loose one.
    result = parity(quantized, path, [images(64, 3)], min_agreement=0.95)
    assert result["agreement"] >= 0.95 and result["max_abs_diff"] < 0.05


class WidthInAttribute(nn.Module):
    """torchvision's VisionTransformer: the patch tokens are reshaped with a width kept as a Python int."""

    def __init__(self, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.width = width
        self.patches = nn.Conv2d(1, width, 4, stride=4)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).reshape(x.shape[0], self.width, -1).transpose(1, 2)
        return self.head(self.mlp(tokens).mean(1))


def test_a_width_kept_as_a_python_number_is_named_and_ignoring_its_layer_prunes_the_rest():
    torch.manual_seed(0)
    with pytest.raises(InputError, match=r"removed channels of 'patches', the model's forward fails: .*prune.ignore: \['patches'\]"):
        pruner = ChannelPruner(WidthInAttribute().eval(), images(1, 0), PruneConfig(target_macs=0.5))
        pruner.prune_to(pruner.measure("macs") * 0.5)
    model = WidthInAttribute().eval()
    pruner = ChannelPruner(model, images(1, 0), PruneConfig(target_macs=0.5, ignore=("patches",)))
    start = pruner.measure("macs")
    assert pruner.prune_to(start * 0.8) <= start * 0.8
    assert model.patches.out_channels == model.width == 16 and model.mlp[0].out_features < 32
    assert model(images(2, 1)).shape == (2, 10)


class ChannelsLastMLP(nn.Module):
    """convnext's pointwise MLP: Linear layers on an (N, H, W, C) feature map, which export as MatMul
    reading a transposed weight."""

    def __init__(self, channels: int = 16, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.expand, self.project = nn.Linear(channels, 4 * channels), nn.Linear(4 * channels, channels)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        x = self.project(torch.relu(self.expand(x)))
        return self.head(x.mean((1, 2)))


def test_linear_layers_on_channels_last_maps_read_int8_weights_with_their_transpose_folded(tmp_path):
    torch.manual_seed(0)
    quantized = insert_fake_quant(ChannelsLastMLP().eval(), profiles.get("tensorrt"), batches_per_epoch=1)
    calibrate(quantized, [images(32, 2)])
    path = tmp_path / "int8.onnx"
    export_onnx(quantized.eval(), path, images(1, 0))
    proto = onnx.load(path)
    matmuls = [node for node in proto.graph.node if node.op_type == "MatMul"]
    producers = {output: node.op_type for node in proto.graph.node for output in node.output}
    # The exporter puts a Transpose between each weight and its MatMul; the export folds it into the int8 weight.
    assert len(matmuls) == 2 and all(producers[node.input[1]] == "DequantizeLinear" for node in matmuls)
    assert read_metadata(path)["transposes_folded"] == "2"
    assert lint_tensorrt(proto) == []


def test_a_channel_shuffle_is_refused_as_untraceable_by_torch_pruning():
    model = ChannelShuffleNet().eval()
    with pytest.raises(InputError, match="torch-pruning cannot trace ChannelShuffleNet: ZeroDivisionError"):
        ChannelPruner(model, images(1, 0), PruneConfig(target_macs=0.5))
