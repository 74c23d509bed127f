"""Attention dropout for training on CPU, drawn sparsely: a training speed rewrite.

``scaled_dot_product_attention`` on CPU falls back to its math path when dropout is on and
draws one Bernoulli number per attention weight, which dominates HT Demucs' CPU training step.
:func:`apply_sparse_dropout` swaps, in place, the class of each
:class:`~stemsep.models.attention.layer.BackendAttention` for :class:`SparseDropoutAttention`,
whose dense attention with dropout on CPU tensors is :func:`sparse_dropout_attention` (same law
of the dropout mask, ~``p`` times fewer random numbers); everything else (GPU, eval, other
kernels, no dropout) is the plain module's computation. Same parameters and ``state_dict``.
:class:`~stemsep.training.module.SeparationModule` applies it when fitting on CPU and
:func:`remove_sparse_dropout` undoes it when fitting ends; the model classes themselves always
use the backend kernel (``scaled_dot_product_attention(q, k, v, dropout_p=p)`` for ``dense``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stemsep.models.attention.layer import BackendAttention


def sparse_dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """Softmax attention with dropout ``p`` on the attention weights, for CPU training.

    The dropped positions are drawn directly: a Poisson(-N ln(1 - p)) number of uniform
    indices over the N weights. By Poisson splitting each weight is then hit independently
    with probability exactly ``p``, so the mask has the same law as Bernoulli dropout while
    needing about ``p * N`` random numbers. The ``1 / (1 - p)`` rescaling is applied to the
    (much smaller) output instead of the weights.
    """
    scale = q.shape[-1] ** -0.5
    weights = torch.matmul(q * scale, k.transpose(-2, -1)).softmax(dim=-1)
    n = weights.numel()
    rate = torch.tensor(-n * math.log1p(-p), dtype=torch.float64)
    count = int(torch.poisson(rate).item())
    if count:
        drop = torch.randint(n, (count,), device=weights.device)
        weights = weights.reshape(-1).index_fill(0, drop, 0.0).view(weights.shape)
    return torch.matmul(weights, v) * (1.0 / (1.0 - p))


class SparseDropoutAttention(BackendAttention):
    """:class:`~stemsep.models.attention.layer.BackendAttention` whose dense attention with
    dropout on CPU tensors runs :func:`sparse_dropout_attention`."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        if dropout_p > 0 and self.attention == "dense" and q.device.type == "cpu":
            return sparse_dropout_attention(q, k, v, dropout_p)
        return super().attend(q, k, v, dropout_p)


def apply_sparse_dropout(net: nn.Module) -> nn.Module:
    """Make every plain ``BackendAttention`` of ``net`` a :class:`SparseDropoutAttention` (in place,
    found by exact type: a subclass with an ``attend`` of its own is left alone); returns ``net``."""
    for module in net.modules():
        if type(module) is BackendAttention:
            module.__class__ = SparseDropoutAttention
    return net


def remove_sparse_dropout(net: nn.Module) -> nn.Module:
    """Undo :func:`apply_sparse_dropout` (in place); returns ``net``."""
    for module in net.modules():
        if type(module) is SparseDropoutAttention:
            module.__class__ = BackendAttention
    return net
