"""The model's attention dropout is the backend kernel's: ``scaled_dot_product_attention(q, k, v,
dropout_p=p)`` for ``dense``, in training only (the CPU training rewrite lives in
``stemsep.training.sparse_dropout``, tests/training/test_sparse_dropout.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stemsep.models.attention.layer import BackendAttention


def test_module_dropout_only_in_training():
    torch.manual_seed(0)
    attn = BackendAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 40, 16)
    attn.eval()
    assert torch.equal(attn(x, x), attn(x, x))
    attn.train()
    assert not torch.equal(attn(x, x), attn(x, x))


def test_dense_dropout_is_sdpa_dropout_on_cpu():
    # the same random stream gives the same output as SDPA's own dropout: no other draw in the model
    torch.manual_seed(0)
    attn = BackendAttention(16, 2, dropout=0.3).train()
    x = torch.randn(2, 40, 16)
    q, k, v = (t.reshape(2, 40, 2, 8).transpose(1, 2) for t in F.linear(x, attn.in_proj_weight,
                                                                          attn.in_proj_bias).chunk(3, dim=-1))
    torch.manual_seed(1)
    want = attn.out_proj(F.scaled_dot_product_attention(q, k, v, dropout_p=0.3).transpose(1, 2).reshape(2, 40, 16))
    torch.manual_seed(1)
    got = attn(x, x)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.manual_seed(1)
    assert not torch.equal(attn.eval()(x, x), want)  # the dropout was drawn
