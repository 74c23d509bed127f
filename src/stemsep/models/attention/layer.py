"""Multi-head attention whose kernel is pluggable (dense, LSH, fast-transformers, ...).

Parameters are laid out exactly like ``torch.nn.MultiheadAttention`` (``in_proj_weight``,
``in_proj_bias``, ``out_proj``), or like Demucs' sparse-attention module (``q``, ``k``,
``v``, ``proj``) with ``separate_proj=True``, so pretrained weights load either way. The
softmax(QK^T)V part runs through :func:`stemsep.models.attention.backends.get_backend`,
so the same weights can be run with any backend.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.errors import StemsepError
from stemsep.models.attention.backends import get_backend


def resolve_backend(name: str):
    """Return the kernel for ``name``; an unknown name is a config error (key ``attention``)."""
    try:
        return get_backend(name)
    except ValueError as err:
        raise StemsepError(f"attention: {err}") from None


def sparse_dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """Softmax attention with dropout ``p`` on the attention weights, for CPU training.

    ``scaled_dot_product_attention`` on CPU falls back to its math path when dropout is on and
    draws one Bernoulli number per attention weight, which dominated HTDemucs' training step.
    Here the dropped positions are drawn directly: a Poisson(-N ln(1 - p)) number of uniform
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


def _accepts_dropout(kernel) -> bool:
    try:
        return "dropout_p" in inspect.signature(kernel).parameters
    except (TypeError, ValueError):
        return False


class BackendAttention(nn.Module):
    """Batch-first multi-head attention: ``forward(query (B, Lq, E), key (B, Lk, E)) -> (B, Lq, E)``.

    Values are the keys (all uses here are self- or cross-attention on one source). Dropout
    on the attention weights is applied in training only, by the dense backend (or by any
    backend kernel that takes a ``dropout_p`` keyword); other kernels skip it.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, separate_proj: bool = False,
                 attention: str = "dense"):
        super().__init__()
        if embed_dim % num_heads:
            raise StemsepError(f"attention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.separate_proj = separate_proj
        if separate_proj:
            self.q = nn.Linear(embed_dim, embed_dim)
            self.k = nn.Linear(embed_dim, embed_dim)
            self.v = nn.Linear(embed_dim, embed_dim)
            self.proj = nn.Linear(embed_dim, embed_dim)
        else:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
            self.out_proj = nn.Linear(embed_dim, embed_dim)
            nn.init.xavier_uniform_(self.in_proj_weight)
            nn.init.zeros_(self.out_proj.bias)
        self.set_backend(attention)

    def set_backend(self, name: str) -> None:
        """Select the attention kernel by name (see ``attention_backends``)."""
        self._kernel = resolve_backend(name)
        self._kernel_dropout = _accepts_dropout(self._kernel)
        self.attention = name

    def _project(self, query: torch.Tensor, key: torch.Tensor):
        e = self.embed_dim
        if self.separate_proj:
            return self.q(query), self.k(key), self.v(key)
        if query is key:
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q = F.linear(query, self.in_proj_weight[:e], self.in_proj_bias[:e])
        k, v = F.linear(key, self.in_proj_weight[e:], self.in_proj_bias[e:]).chunk(2, dim=-1)
        return q, k, v

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        b, lq, e = query.shape
        lk = key.shape[1]
        h = self.num_heads
        q, k, v = self._project(query, key)
        q = q.reshape(b, lq, h, -1).transpose(1, 2)
        k = k.reshape(b, lk, h, -1).transpose(1, 2)
        v = v.reshape(b, lk, h, -1).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if p > 0 and self.attention == "dense":
            if q.device.type == "cpu":
                out = sparse_dropout_attention(q, k, v, p)
            else:  # fused kernels with built-in dropout
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        elif p > 0 and self._kernel_dropout:
            out = self._kernel(q, k, v, dropout_p=p)
        else:
            out = self._kernel(q, k, v)
        out = out.transpose(1, 2).reshape(b, lq, e)
        if self.separate_proj:
            return F.dropout(self.proj(out), p, self.training)
        return self.out_proj(out)
