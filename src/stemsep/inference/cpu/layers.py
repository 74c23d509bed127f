"""Encoder/decoder layers handing their 2D convolutions channels-last inputs on CPU.

Same modules, weights and values as :class:`~stemsep.models.layers.EncoderLayer` and
:class:`~stemsep.models.layers.DecoderLayer`; the forwards below are theirs with the memory
layout of the 4D tensors chosen by :func:`~stemsep.inference.cpu.predicates.cpu_channels_last`
before each 2D convolution and after the per-frequency DConv, and the GLU written as
:func:`channels_last_glu`. Keep them in step with the plain forwards
(tests/inference/test_cpu_rewrites.py compares the two, layer by layer and over whole networks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stemsep.inference.cpu.predicates import cpu_channels_last
from stemsep.models.layers import DecoderLayer, EncoderLayer, dconv_over_time


def channels_last_glu(x: torch.Tensor) -> torch.Tensor:
    """GLU over channels (dim 1). ``F.glu``'s backward is ~4x slower on channels-last tensors than
    ``a * sigmoid(b)``'s (same values), so that form is used for 4D inputs when gradients are
    tracked."""
    if x.dim() == 4 and x.requires_grad:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)
    return F.glu(x, dim=1)


def _dconv(layer: EncoderLayer | DecoderLayer, y: torch.Tensor) -> torch.Tensor:
    return cpu_channels_last(dconv_over_time(layer.dconv, y))


class CpuEncoderLayer(EncoderLayer):
    """:class:`~stemsep.models.layers.EncoderLayer` with channels-last 2D convolutions on CPU."""

    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
        # time layers: not a channels-fastest view of the last frequency layer's output
        y = self.conv(cpu_channels_last(x, self.conv.weight) if self.freq else self.time_input(x).contiguous())
        if self.empty:
            return y
        y = F.gelu(self.norm1(self.add_inject(y, inject)))
        if self.dconv is not None:
            y = _dconv(self, y)
        if self.rewrite is not None:
            y = channels_last_glu(self.norm2(self.rewrite(y)))
        return y


class CpuDecoderLayer(DecoderLayer):
    """:class:`~stemsep.models.layers.DecoderLayer` with channels-last 2D convolutions on CPU."""

    def forward(self, x: torch.Tensor | None, skip: torch.Tensor | None,
                length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.empty:
            y = x
        else:
            y = cpu_channels_last(self.add_skip(x, skip), None if self.rewrite is None else self.rewrite.weight)
            if self.rewrite is not None:
                y = channels_last_glu(self.norm1(self.rewrite(y)))
            if self.dconv is not None:
                y = _dconv(self, y)
        y = self.freq_view(y)
        return self.output(self.norm2(self.conv_tr(cpu_channels_last(y, self.conv_tr.weight))), length), y
