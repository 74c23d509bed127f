"""RMSNorm, gated multi-head attention with rotary embeddings, linear (cross-covariance)
attention, feed-forward and the pre-norm transformer of the band-split RoFormers.

Layout and parameter names follow ``bs-roformer`` 0.5.x / MSST: a ``Transformer`` holds
``layers`` of ``[attention, feed-forward]`` pairs and an output ``norm`` (RMSNorm, or nothing);
attention has ``norm``, ``to_qkv`` (no bias), ``to_gates`` (one sigmoid gate per head),
``to_out.0`` (no bias) and, with ``value_residual``, ``to_value_residual_mix``. Softmax
attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a
flash / memory-efficient kernel where one applies (``flash=False``: the plain
``softmax(q k^T / sqrt(d)) v`` in PyTorch, same numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.models.roformer.rope import RotaryEmbedding


class RMSNorm(nn.Module):
    """``x / ||x|| * sqrt(dim) * gamma`` over the last axis (``gamma`` starts at one)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class FeedForward(nn.Module):
    """Pre-norm MLP ``dim -> mult * dim -> dim`` with GELU; ``net`` indices as in the reference."""

    def __init__(self, dim: int, mult: float = 4, dropout: float = 0.0):
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.Sequential(RMSNorm(dim), nn.Linear(dim, inner), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float, flash: bool,
           scale: float | None = None) -> torch.Tensor:
    """Softmax attention of ``(B, H, N, D)`` tensors; ``scale`` defaults to ``D ** -0.5``."""
    if flash:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    weights = (q @ k.transpose(-2, -1) * scale).softmax(dim=-1)
    return F.dropout(weights, dropout) @ v


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with rotary embeddings and per-head output gates.

    ``forward(x, value_residual)`` returns the output and this layer's values ``v``: with
    ``value_residual`` (bs-roformer 0.5.x's learned value residual mix) the values are moved
    towards the first layer's values by a learned per-head, per-token sigmoid weight.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0,
                 rotary_embed: RotaryEmbedding | None = None, flash: bool = True, value_residual: bool = False):
        super().__init__()
        self.heads, self.dropout, self.flash = heads, dropout, flash
        inner = heads * dim_head
        self.rotary_embed = rotary_embed
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_value_residual_mix = nn.Linear(dim, heads) if value_residual else None
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, value_residual: torch.Tensor | None = None):
        x = self.norm(x)
        batch, length, _ = x.shape
        q, k, v = self.to_qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        values = v
        if self.to_value_residual_mix is not None:
            if value_residual is None:
                raise ValueError("an attention layer with value_residual needs the first layer's values")
            mix = self.to_value_residual_mix(x).sigmoid().transpose(1, 2)[..., None]
            v = v.lerp(value_residual.to(v.dtype), mix.to(v.dtype))
        if self.rotary_embed is not None:
            q, k = self.rotary_embed(q), self.rotary_embed(k)
        out = attend(q, k, v, self.dropout if self.training else 0.0, self.flash)
        out = out * self.to_gates(x).sigmoid().transpose(1, 2)[..., None]
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1)), values


class _SplitQKV(nn.Module):
    """``(B, N, 3 * H * D) -> (3, B, H, D, N)``: heads first, features as the attended axis."""

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 4, 1)


class _MergeHeads(nn.Module):
    """``(B, H, D, N) -> (B, N, H * D)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, heads, dim, length = x.shape
        return x.permute(0, 3, 1, 2).reshape(batch, length, heads * dim)


class LinearAttention(nn.Module):
    """Cross-covariance attention (El-Nouby et al. 2021, "XCiT", arXiv 2106.09681).

    Attends across the ``dim_head`` features instead of the tokens, so its cost is linear in the
    sequence length: queries and keys are L2-normalised along the sequence, queries scaled by a
    learned per-head ``temperature.exp()``, and the softmax has the fixed ``scale``.
    """

    def __init__(self, *, dim: int, dim_head: int = 32, heads: int = 8, scale: float = 8, flash: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        inner = dim_head * heads
        self.scale, self.flash, self.dropout = scale, flash, dropout
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Sequential(nn.Linear(dim, inner * 3, bias=False), _SplitQKV(heads))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.Sequential(_MergeHeads(), nn.Linear(inner, dim, bias=False))

    def forward(self, x: torch.Tensor, value_residual: torch.Tensor | None = None):
        q, k, v = self.to_qkv(self.norm(x))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        q = q * self.temperature.exp()
        out = attend(q, k, v, self.dropout if self.training else 0.0, self.flash, scale=self.scale)
        return self.to_out(out), None


class Transformer(nn.Module):
    """``depth`` pre-norm residual ``[attention, feed-forward]`` layers, then ``norm`` (RMSNorm or none).

    ``forward(x, value_residual)`` returns the output and the first layer's attention values
    (what later blocks mix in with ``value_residual``; ``None`` for linear attention).
    """

    def __init__(self, *, dim: int, depth: int, dim_head: int = 64, heads: int = 8, attn_dropout: float = 0.0,
                 ff_dropout: float = 0.0, ff_mult: float = 4, norm_output: bool = True,
                 rotary_embed: RotaryEmbedding | None = None, flash_attn: bool = True, linear_attn: bool = False,
                 value_residual: bool = False):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            if linear_attn:
                attn = LinearAttention(dim=dim, dim_head=dim_head, heads=heads, dropout=attn_dropout, flash=flash_attn)
            else:
                attn = Attention(dim=dim, dim_head=dim_head, heads=heads, dropout=attn_dropout,
                                 rotary_embed=rotary_embed, flash=flash_attn, value_residual=value_residual)
            self.layers.append(nn.ModuleList([attn, FeedForward(dim=dim, mult=ff_mult, dropout=ff_dropout)]))
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor, value_residual: torch.Tensor | None = None):
        first = None
        for attn, ff in self.layers:
            out, values = attn(x, value_residual)
            first = values if first is None else first
            x = x + out
            x = x + ff(x)
        return self.norm(x), first
