"""A small vision transformer: patch embedding, pre-norm encoder blocks with
multi-head self-attention, mean-pooled tokens, a linear classifier.

The attention computes q, k, v with one `qkv` Linear and reads its head layout
from `num_heads` and `head_dim`, so pruning can remove whole heads and update
`num_heads` (edgekd.prune.attention).

>>> model = vit_s(in_channels=1, num_classes=10, image_size=8, patch_size=2, dim=32, depth=1, heads=2)
>>> model(torch.zeros(3, 1, 8, 8)).shape
torch.Size([3, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.models.registry import card, models


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"vit_s dim ({dim}) must be a multiple of heads ({heads})")
        self.num_heads = heads
        self.head_dim = dim // heads
        # Fixed at construction: pruning head dimensions must not change the softmax temperature.
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return self.proj(mixed)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = max(1, int(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformerS(nn.Module):
    """Patches of `patch_size`² pixels from `image_size`² images; learned position embeddings."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, patch_size: int, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"vit_s image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        self.image_size = image_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Checked eagerly only: under ONNX or torch.fx tracing the comparison would be frozen into the graph.
        tracing = torch.jit.is_tracing() or torch.fx._symbolic_trace.is_fx_tracing()
        if not tracing and x.shape[-2:] != (self.image_size, self.image_size):
            height, width = x.shape[-2:]
            raise InputError(
                f"vit_s was built for {self.image_size}×{self.image_size} images but got {height}×{width}; "
                f"set image_size in the model spec, e.g. vit_s(image_size={height}, patch_size=…)"
            )
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


@models.register
@card(tiny="vit_s(dim=16, depth=1, heads=2)")
def vit_s(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 8,
    patch_size: int = 2,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
) -> nn.Module:
    """Small vision transformer; 8×8 digits with patch 2 or 4, 28×28 with patch 4 or 7 (image_size=28)."""
    return VisionTransformerS(in_channels, num_classes, image_size, patch_size, dim, depth, heads, mlp_ratio)
