"""Rotary position embeddings (Su et al. 2021, "RoFormer", arXiv 2104.09864).

Each pair of features ``(x[2i], x[2i + 1])`` of a query or key at position ``p`` is rotated by
the angle ``p * theta ** (-2i / dim)``; the dot product of a rotated query and key then depends
on their relative position only. Pairs are adjacent features ("interleaved" layout), the
frequencies are a parameter ``freqs`` that is not trained, as in ``rotary-embedding-torch``
(whose ``RotaryEmbedding(dim)`` defaults the RoFormers use), so its ``state_dict`` key
``rotary_embed.freqs`` loads. Angles and the rotation are computed in float32 whatever the input
dtype (positions past 256 are not representable in bfloat16), then cast back.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """``rotate(x (..., n, dim_head))``: rotary embedding of a sequence of length ``n``."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary embedding needs an even dimension, got {dim}")
        exponents = torch.arange(0, dim, 2)[: dim // 2].float() / dim
        self.freqs = nn.Parameter(1.0 / theta ** exponents, requires_grad=False)

    def angles(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos`` and ``sin`` of the rotation angles, each repeated for both features of a pair:
        ``(length, dim)`` float32."""
        positions = torch.arange(length, device=device, dtype=torch.float32)
        angles = positions[:, None] * self.freqs.to(device=device, dtype=torch.float32)[None, :]
        angles = angles.repeat_interleave(2, dim=-1)
        return angles.cos(), angles.sin()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self.angles(x.shape[-2], x.device)
        x32 = x.float().contiguous()  # contiguous first: the strided pair access below is then cheap
        pairs = x32.unflatten(-1, (-1, 2))
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (-odd, even) per pair
        return (x32 * cos + turned * sin).to(x.dtype)
