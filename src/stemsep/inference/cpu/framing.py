"""HS-TasNet's TasNet encoder and decoder on one frame, as matrix products (CPU streaming).

Streamed hop by hop, HS-TasNet's waveform branch sees one frame of ``segment_len`` samples: its
encoder (a strided ``Conv1d`` as wide as the frame) has one output position, and its decoder (a
transposed conv with Hann-windowed filters) one input position. On CPU both then run through
im2col / col2im and a generic convolution, and the decoder multiplies its whole weight by the
window on every call (3 M values written per hop at paper size). As matrix products on the
flattened frame, with the windowed decoder weight kept until the weight or window changes, they
compute the same values. Same parameters and ``state_dict``; other shapes, gradients and devices
take the plain modules' path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.inference.cpu.predicates import cpu_inference_path
from stemsep.models.hstasnet import WindowedDecoder


def _plain_conv(conv: nn.Conv1d | nn.ConvTranspose1d) -> bool:
    """No padding, dilation or groups: one frame is one product."""
    return conv.padding == (0,) and conv.dilation == (1,) and conv.groups == 1 and conv.padding_mode == "zeros"


class FrameConv1d(nn.Conv1d):
    """``nn.Conv1d``: an input exactly one kernel long (one output position) as ``F.linear`` in CPU inference."""

    @staticmethod
    def takes(conv: nn.Conv1d) -> bool:
        return _plain_conv(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.kernel_size[0] or not cpu_inference_path(x):
            return super().forward(x)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[..., None]


class FrameDecoder(WindowedDecoder):
    """:class:`~stemsep.models.hstasnet.WindowedDecoder` with its windowed weight kept between calls,
    and one input position as one matrix product, in CPU inference."""

    @staticmethod
    def takes(decoder: WindowedDecoder) -> bool:
        return _plain_conv(decoder) and decoder.output_padding == (0,)

    def _windowed(self) -> torch.Tensor:
        """``weight * window``, recomputed only when either changed (in place or replaced)."""
        key = (self.weight.data_ptr(), self.weight._version, self.window.data_ptr(), self.window._version)
        if getattr(self, "_windowed_key", None) != key:
            self._windowed_weight, self._windowed_key = self.weight * self.window, key
        return self._windowed_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or not cpu_inference_path(x):
            return super().forward(x)
        weight = self._windowed()
        if x.shape[-1] != 1:
            return F.conv_transpose1d(x, weight, stride=self.stride)
        return torch.mm(x[..., 0], weight.flatten(1)).view(x.shape[0], *weight.shape[1:])
