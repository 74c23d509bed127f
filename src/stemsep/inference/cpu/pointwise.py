"""1x1 convolutions computed as batched matrix products.

A kernel-size-1 ``Conv1d`` is ``W @ x + b`` per batch item. On CPU, oneDNN handles it
poorly when the batch is large and the channels few (the frequency-branch DConv runs on
``(batch * freqs, C, T)`` with C as low as 6): a batched matrix product is 2-6x faster there and
gives the same values up to float rounding. Same parameters and ``state_dict`` keys as
``nn.Conv1d``, so checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from stemsep.inference.cpu.predicates import cpu_inference_path


class PointwiseConv1d(nn.Conv1d):
    """``nn.Conv1d(in_channels, out_channels, 1)``, as a batched matrix product in CPU inference on batches > 1."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    @staticmethod
    def takes(conv: nn.Conv1d) -> bool:
        """Whether ``conv`` is a plain 1x1 convolution (stride 1, no padding, one group)."""
        return (conv.kernel_size == (1,) and conv.stride == (1,) and conv.padding == (0,)
                and conv.dilation == (1,) and conv.groups == 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or not cpu_inference_path(x) or x.shape[0] == 1:  # one long sequence: oneDNN is as fast
            return super().forward(x)
        n, _, length = x.shape
        weight = self.weight[:, :, 0].expand(n, -1, -1)
        if self.bias is None:
            return torch.bmm(weight, x)
        return torch.baddbmm(self.bias[:, None].expand(n, -1, length), weight, x)
