"""Small transformers for text, in plain PyTorch: an encoder classifier (`bert_s`),
a decoder-only language model (`gpt_s`) and an encoder-decoder (`t5_s`).

They are built from the layers torch-pruning, torch.fx and the ONNX exporter know:
nn.Embedding, nn.Linear, nn.LayerNorm, GELU. Attention computes q, k and v with
three Linears and splits them into `num_heads` heads of `head_dim` channels; both
are attributes that head pruning updates. The softmax scale is fixed when the
model is built, so removing heads never changes it. Blocks are pre-norm.

Every forward takes `input_ids` (B, T) and an optional `attention_mask` (B, T),
1 for real tokens and 0 for padding (absent: every token is real), like Hugging
Face models; decoders also mask future positions. `t5_s` takes the decoder's
input as `decoder_input_ids`.

>>> model = gpt_s(vocab_size=50, max_length=16, pad_id=0, dim=32, depth=1, heads=2)
>>> model(torch.ones(3, 10, dtype=torch.long)).shape
torch.Size([3, 10, 50])
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.errors import InputError
from edgekd.models.registry import card, models


def _tracing() -> bool:
    fx = torch.fx._symbolic_trace
    symbolic = getattr(fx, "is_fx_tracing_symbolic_tracing", fx.is_fx_tracing)
    return torch.jit.is_tracing() or symbolic() or torch.compiler.is_compiling()


# Hidden positions get the float32 minimum rather than -inf: a row whose keys are all hidden stays finite.
HIDDEN = torch.finfo(torch.float32).min


def padding_bias(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) mask of real tokens → (B, 1, 1, T) additive bias: 0 where attended, HIDDEN where not."""
    if attention_mask is None:
        return None
    return (1.0 - attention_mask[:, None, None, :].float()) * HIDDEN


def causal_bias(tokens: torch.Tensor) -> torch.Tensor:
    """(1, 1, T, T) additive bias that hides later positions of the (B, T) `tokens`; built from the
    runtime length, so it stays dynamic in ONNX."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    future = positions[None, :] > positions[:, None]
    return (future.float() * HIDDEN)[None, None]


class Attention(nn.Module):
    """Multi-head attention with separate q, k, v projections; `kv` is the sequence keys and
    values come from (the query sequence itself, or the encoder's output for cross-attention)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.num_heads = heads
        self.head_dim = head_dim
        # Fixed at construction: pruning heads must not change the softmax temperature.
        self.scale = head_dim**-0.5
        inner = heads * head_dim
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.o = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(kv)), self._split(self.v(kv))
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if bias is not None:
            scores = scores + bias.to(scores.dtype)
        mixed = scores.softmax(dim=-1) @ v
        batch, _, tokens, _ = mixed.shape
        return self.o(mixed.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm self-attention (+ cross-attention in a seq2seq decoder) + MLP, each with a residual add."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_ratio: float, cross: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim)
        self.cross = Attention(dim, heads, head_dim) if cross else None
        self.norm_cross = nn.LayerNorm(dim) if cross else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, max(1, int(dim * mlp_ratio)))

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None, memory: torch.Tensor | None = None, memory_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        normed = self.norm1(x)
        x = x + self.attn(normed, normed, bias)
        if self.cross is not None and self.norm_cross is not None and memory is not None:
            x = x + self.cross(self.norm_cross(x), memory, memory_bias)
        return x + self.mlp(self.norm2(x))


class Stack(nn.Module):
    """Token + learned position embeddings, `depth` blocks, a final norm."""

    def __init__(self, vocab_size: int, max_length: int, pad_id: int, dim: int, depth: int, heads: int, head_dim: int, mlp_ratio: float, cross: bool = False):
        super().__init__()
        self.max_length = max_length
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.positions = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, head_dim, mlp_ratio, cross) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, input_ids: torch.Tensor, bias: torch.Tensor | None, memory: torch.Tensor | None = None, memory_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        # Checked eagerly only: under ONNX or torch.fx tracing the comparison would be frozen into the graph.
        if not _tracing() and length > self.max_length:
            raise InputError(
                f"a sequence of {length} tokens is longer than the model's max_length ({self.max_length}); "
                "build the model with a larger max_length or truncate the data (data.options.max_length)"
            )
        x = self.tokens(input_ids) + self.positions(torch.arange(length, device=input_ids.device))
        for block in self.blocks:
            x = block(x, bias, memory, memory_bias)
        return self.norm(x)


def _head_dim(dim: int, heads: int, head_dim: int | None) -> int:
    if head_dim is not None:
        return head_dim
    if dim % heads != 0:
        raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads}), or give head_dim")
    return dim // heads


class EncoderClassifier(nn.Module):
    """BERT-style encoder; the mean of the real tokens' final states feeds a linear classifier."""

    def __init__(self, vocab_size: int, max_length: int, pad_id: int, num_classes: int, dim: int, depth: int, heads: int, head_dim: int | None, mlp_ratio: float):
        super().__init__()
        self.encoder = Stack(vocab_size, max_length, pad_id, dim, depth, heads, _head_dim(dim, heads, head_dim), mlp_ratio)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        states = self.encoder(input_ids, padding_bias(attention_mask))
        if attention_mask is None:
            pooled = states.mean(dim=1)
        else:
            weights = attention_mask.to(states.dtype)[:, :, None]
            pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.classifier(pooled)


class DecoderLM(nn.Module):
    """GPT-style decoder-only language model: logits (B, T, vocab) for the next token at every position."""

    def __init__(self, vocab_size: int, max_length: int, pad_id: int, dim: int, depth: int, heads: int, head_dim: int | None, mlp_ratio: float):
        super().__init__()
        self.decoder = Stack(vocab_size, max_length, pad_id, dim, depth, heads, _head_dim(dim, heads, head_dim), mlp_ratio)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        bias = causal_bias(input_ids)
        padding = padding_bias(attention_mask)
        if padding is not None:  # a future padded key would sum two minima to -inf
            bias = (bias + padding).clamp(min=HIDDEN)
        return self.lm_head(self.decoder(input_ids, bias))


class EncoderDecoderLM(nn.Module):
    """T5-style encoder-decoder: the decoder attends to its own past and to the encoded source.
    Encoder and decoder have their own embeddings (untied, so each can be pruned on its own)."""

    def __init__(self, vocab_size: int, max_length: int, pad_id: int, dim: int, depth: int, heads: int, head_dim: int | None, mlp_ratio: float):
        super().__init__()
        size = _head_dim(dim, heads, head_dim)
        self.encoder = Stack(vocab_size, max_length, pad_id, dim, depth, heads, size, mlp_ratio)
        self.decoder = Stack(vocab_size, max_length, pad_id, dim, depth, heads, size, mlp_ratio, cross=True)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, decoder_input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if decoder_input_ids is None:
            raise InputError("t5_s needs decoder_input_ids: the target shifted right behind the decoder start token")
        source_bias = padding_bias(attention_mask)
        memory = self.encoder(input_ids, source_bias)
        return self.lm_head(self.decoder(decoder_input_ids, causal_bias(decoder_input_ids), memory, source_bias))


@models.register
@card(tiny="bert_s(dim=32, depth=2, heads=2)", inputs="tokens", tasks=("classify",))
def bert_s(
    vocab_size: int = 1024, max_length: int = 128, pad_id: int = 0, num_classes: int = 2,
    dim: int = 128, depth: int = 4, heads: int = 4, head_dim: int | None = None, mlp_ratio: float = 4.0,
) -> nn.Module:
    """BERT-style encoder for sequence classification (masked mean pooling, linear classifier)."""
    return EncoderClassifier(vocab_size, max_length, pad_id, num_classes, dim, depth, heads, head_dim, mlp_ratio)


@models.register
@card(tiny="gpt_s(dim=32, depth=2, heads=2)", inputs="tokens", tasks=("causal-lm",))
def gpt_s(
    vocab_size: int = 1024, max_length: int = 128, pad_id: int = 0,
    dim: int = 128, depth: int = 4, heads: int = 4, head_dim: int | None = None, mlp_ratio: float = 4.0,
) -> nn.Module:
    """GPT-style decoder-only causal language model (no KV cache: each step re-reads the prefix)."""
    return DecoderLM(vocab_size, max_length, pad_id, dim, depth, heads, head_dim, mlp_ratio)


@models.register
@card(tiny="t5_s(dim=32, depth=2, heads=2)", inputs="tokens", tasks=("seq2seq",))
def t5_s(
    vocab_size: int = 1024, max_length: int = 128, pad_id: int = 0,
    dim: int = 128, depth: int = 3, heads: int = 4, head_dim: int | None = None, mlp_ratio: float = 4.0,
) -> nn.Module:
    """T5-style encoder-decoder for sequence-to-sequence generation (pre-norm, learned positions)."""
    return EncoderDecoderLM(vocab_size, max_length, pad_id, dim, depth, heads, head_dim, mlp_ratio)
