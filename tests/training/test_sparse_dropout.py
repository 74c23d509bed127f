"""Attention dropout drawn as Poisson-many dropped indices has Bernoulli(p) law and keeps the mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stemsep.models.attention.layer import BackendAttention, sparse_dropout_attention


def _uniform_identity_case(length: int):
    # q = k = 0 gives uniform weights 1/L; v = identity makes the output equal to the weights
    q = torch.zeros(2, 3, length, length)
    v = torch.eye(length).expand(2, 3, length, length)
    return q, q, v


def test_dropped_fraction_and_rescaling():
    torch.manual_seed(0)
    p, length = 0.1, 256
    q, k, v = _uniform_identity_case(length)
    out = sparse_dropout_attention(q, k, v, p)
    dropped = (out == 0).float().mean().item()
    n = out.numel()
    assert abs(dropped - p) < 5 * (p * (1 - p) / n) ** 0.5
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (length * (1 - p))))


def test_mean_over_draws_matches_dense_attention_and_gradients_flow():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 8, requires_grad=True) for _ in range(3))
    dense = F.scaled_dot_product_attention(q, k, v)
    mean = sum(sparse_dropout_attention(q, k, v, 0.2) for _ in range(300)) / 300
    assert (mean - dense).abs().max().item() < 0.1
    sparse_dropout_attention(q, k, v, 0.2).sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_module_dropout_only_in_training():
    torch.manual_seed(0)
    attn = BackendAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 40, 16)
    attn.eval()
    assert torch.equal(attn(x, x), attn(x, x))
    attn.train()
    assert not torch.equal(attn(x, x), attn(x, x))
