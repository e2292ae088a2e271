"""`prune.attention_heads` in a recipe: a user's attention module whose head count lives in an
attribute edgekd does not know loses whole heads, the attribute follows, and the student runs and
exports; a declaration that does not fit the model stops the run before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import edgekd
from edgekd.errors import InputError
from edgekd.recipe import load_recipe
from edgekd.run import Run
from tests.conftest import tiny_recipe
from tests.test_exit_codes import assert_bad_input, edgekd_cli, write_recipe

SPEC = "tests.test_prune_declared_heads:patch_transformer"


class StreamAttention(nn.Module):
    """User code: the head count is `streams`; the forward pass reshapes by it, so a stale count breaks it."""

    def __init__(self, dim: int, streams: int):
        super().__init__()
        self.streams, self.width, self.scale = streams, dim // streams, (dim // streams) ** -0.5
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(batch, tokens, self.streams, self.width).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        mixed = (q @ k.transpose(-2, -1) * self.scale).softmax(-1) @ v
        return self.to_out(mixed.transpose(1, 2).reshape(batch, tokens, self.streams * self.width))


class Block(nn.Module):
    def __init__(self, dim: int, streams: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = StreamAttention(dim, streams)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchTransformer(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, dim: int = 32, streams: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, 2, stride=2)  # 2×2 patches: 16 tokens of an 8×8 digit
        self.blocks = nn.Sequential(Block(dim, streams), Block(dim, streams))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.blocks(self.embed(x).flatten(2).transpose(1, 2))
        return self.head(self.norm(tokens).mean(1))


def patch_transformer(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The user's factory (a recipe's 'tests.test_prune_declared_heads:patch_transformer')."""
    return PatchTransformer(in_channels, num_classes)


def declared_recipe(workdir: Path, declared: dict[str, str]) -> dict:
    return tiny_recipe(
        workdir, student="teacher",
        teacher={"model": SPEC, "train": {"epochs": 3, "lr": 0.003, "optimizer": {"name": "adamw"}}},
        distill={"epochs": 1, "lr": 0.001, "optimizer": {"name": "adamw"}},
        stages=[{"prune": {"target_macs": 0.6, "steps": 1, "attention_heads": declared}}, {"export": {}}],
    )  # fmt: skip


def test_a_declared_attention_module_loses_whole_heads_and_its_attribute_follows(tmp_path):
    run = Run(load_recipe(declared_recipe(tmp_path / "run", {"blocks.*.attn": "streams"})), quiet=True)
    report = run.execute().to_json()
    assert report["steps"][0]["macs"] < report["teacher"]["macs"]
    attentions = [block.attn for block in run.student.blocks]
    assert min(a.streams for a in attentions) < 4  # heads went
    for attention in attentions:
        assert attention.width == 8  # whole heads: each keeps its size
        assert attention.to_q.out_features == attention.streams * 8 == attention.to_out.in_features
    assert run.student(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    fp32 = report["student"]["onnx"]["fp32"]
    assert fp32["parity"]["agreement"] >= fp32["parity"]["min_agreement"] and fp32["accuracy"] > 0.3


@pytest.mark.parametrize(
    ("declared", "says"),
    [
        ({"block.*.attn": "streams"}, r"'block.*.attn' matches no module of the model. Did you mean"),
        ({"blocks.*.attn": "heads"}, "has no int attribute 'heads' holding its head count"),
        ({"blocks.*.attn": "scale"}, "has no int attribute 'scale'"),  # a float
        ({"blocks.*.attn": "to_q"}, "has no int attribute 'to_q'"),  # a module
    ],
    ids=["no module", "missing", "float", "module"],
)
def test_a_declaration_that_does_not_fit_stops_the_run_before_the_teacher_trains(declared, says, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", declared_recipe(tmp_path / "run", declared))
    code, output = edgekd_cli(["compress", recipe, "--quiet"], capsys)
    assert_bad_input(code, output, "stages[0].prune.attention_heads:", says)
    assert not list((tmp_path / "run").glob("teacher-*.pt"))


def test_a_declaration_is_checked_on_a_student_built_from_its_own_spec(tmp_path):
    recipe = declared_recipe(tmp_path / "run", {"blocks.*.attention": "streams"})
    recipe["student"] = SPEC
    with pytest.raises(InputError, match=r"stages\[0\]\.prune\.attention_heads: 'blocks\.\*\.attention' matches no module"):
        edgekd.compress(recipe, quiet=True)
