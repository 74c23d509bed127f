"""LayerScale (Touvron et al. 2021): a learnt per-channel gain on a residual branch.

Started near zero so each residual branch begins as (almost) the identity, which keeps
deep stacks trainable without warm-up tricks.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiply by a per-channel ``scale``; channels on axis 1, or last if ``channel_last``."""

    def __init__(self, channels: int, init: float = 0.0, channel_last: bool = False):
        super().__init__()
        self.channel_last = channel_last
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_last:
            return self.scale * x
        return self.scale[:, None] * x
