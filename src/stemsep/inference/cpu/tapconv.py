"""Dilated "same" 1D convolutions computed as one matrix product plus shifted adds.

The DConv squeeze convolution maps many channels to few (48 -> 6 in the first layer) with a
small dilated kernel, over ``(batch * freqs, C, T)`` views whose channels are the fastest axis
in memory (the frequency branch runs channels-last). oneDNN reorders such inputs and handles
few output channels poorly on CPU; multiplying the input once by all taps' weights stacked
(``(..., C) @ (C, kernel * K)``) and adding the taps' outputs shifted by the dilation gives the
same values up to float rounding, 2-7x faster there. Same parameters and ``state_dict`` keys
as ``nn.Conv1d``, so checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from stemsep.inference.cpu.predicates import channels_fastest, cpu_inference_path


class TapConv1d(nn.Conv1d):
    """``nn.Conv1d(in, out, kernel, dilation=d, padding=d * (kernel // 2))``, by taps in CPU inference."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        if kernel_size % 2 != 1:
            raise ValueError("TapConv1d kernel must be odd")
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation,
                         padding=dilation * (kernel_size // 2), bias=bias)

    @staticmethod
    def takes(conv: nn.Conv1d) -> bool:
        """Whether ``conv`` is a "same" dilated convolution this class computes (odd kernel,
        stride 1, one group, zero padding of ``dilation * (kernel // 2)``)."""
        kernel, dilation = conv.kernel_size[0], conv.dilation[0]
        return (kernel % 2 == 1 and conv.stride == (1,) and conv.groups == 1 and conv.padding_mode == "zeros"
                and conv.padding == (dilation * (kernel // 2),))

    def _by_taps(self, x: torch.Tensor) -> bool:
        # one contiguous sequence (the time branch at batch 1): oneDNN is as fast
        return x.dim() == 3 and cpu_inference_path(x) and (channels_fastest(x) or x.shape[0] > 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._by_taps(x):
            return super().forward(x)
        n, _, t = x.shape
        out_channels, _, taps = self.weight.shape
        step = self.dilation[0]
        centre = taps // 2
        if channels_fastest(x):  # channels fastest: (N, T, C) @ (C, taps * K), time-major result
            y = torch.matmul(x.transpose(1, 2), self.weight.permute(1, 2, 0).reshape(-1, taps * out_channels))
            y = y.view(n, t, taps, out_channels).permute(0, 2, 3, 1)  # (N, taps, K, T) view
        else:  # (taps * K, C) @ (N, C, T)
            y = torch.matmul(self.weight.permute(2, 0, 1).reshape(taps * out_channels, -1), x)
            y = y.view(n, taps, out_channels, t)
        out = y[:, centre] + self.bias[:, None] if self.bias is not None else y[:, centre].clone()
        for tap in range(taps):
            shift = (tap - centre) * step  # output t reads input t + shift
            if shift < 0:
                out[..., -shift:] += y[:, tap, :, :shift]
            elif shift > 0:
                out[..., :-shift] += y[:, tap, :, shift:]
        return out
