"""Multi-head attention whose kernel is pluggable (dense, LSH, fast-transformers, ...).

Parameters are laid out exactly like ``torch.nn.MultiheadAttention`` (``in_proj_weight``,
``in_proj_bias``, ``out_proj``), or like Demucs' sparse-attention module (``q``, ``k``,
``v``, ``proj``) with ``separate_proj=True``, so pretrained weights load either way. The
softmax(QK^T)V part runs through :func:`stemsep.models.attention.backends.get_backend`,
so the same weights can be run with any backend.
"""

from __future__ import annotations

import inspect

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

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d)) v`` of ``(B, H, L, D)`` heads through the backend kernel, with
        dropout ``dropout_p`` on the attention weights when the kernel takes a ``dropout_p`` keyword
        (``dense``: ``scaled_dot_product_attention(q, k, v, dropout_p=...)``)."""
        if dropout_p > 0 and self._kernel_dropout:
            return self._kernel(q, k, v, dropout_p=dropout_p)
        return self._kernel(q, k, v)

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
        out = self.attend(q, k, v, p).transpose(1, 2).reshape(b, lq, e)
        if self.separate_proj:
            return F.dropout(self.proj(out), p, self.training)
        return self.out_proj(out)
