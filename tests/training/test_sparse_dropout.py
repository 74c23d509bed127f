"""CPU training's attention dropout (:mod:`stemsep.training.sparse_dropout`): Poisson-many dropped
indices have Bernoulli(p) law and keep the mean; the rewrite is a class swap of the models'
``BackendAttention`` (same state_dict, same values outside CPU training) that ``SeparationModule``
applies while fitting on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import stemsep.training.sparse_dropout as sparse_module
from stemsep.models import HTDemucs
from stemsep.models.attention.layer import BackendAttention
from stemsep.training import SeparationModule
from stemsep.training.sparse_dropout import (
    SparseDropoutAttention,
    apply_sparse_dropout,
    remove_sparse_dropout,
    sparse_dropout_attention,
)


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


@pytest.fixture
def sparse_calls(monkeypatch) -> list[float]:
    calls: list[float] = []

    def spy(q, k, v, p):
        calls.append(p)
        return sparse_dropout_attention(q, k, v, p)

    monkeypatch.setattr(sparse_module, "sparse_dropout_attention", spy)
    return calls


def test_swap_keeps_weights_and_plain_values_outside_cpu_training(sparse_calls):
    torch.manual_seed(0)
    net = HTDemucs(sources=["a", "b"], channels=8, depth=3, t_layers=1, t_dropout=0.3, segment=1)
    attentions = [m for m in net.modules() if type(m) is BackendAttention]
    assert attentions
    state = {k: v.clone() for k, v in net.state_dict().items()}
    mix = torch.randn(1, 2, 44100)
    with torch.no_grad():
        plain_eval = net.eval()(mix)
    assert apply_sparse_dropout(net) is net
    assert all(type(m) is SparseDropoutAttention for m in attentions)
    assert not any(type(m) is BackendAttention for m in net.modules())
    assert net.state_dict().keys() == state.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(net(mix), plain_eval)  # eval: no dropout, the backend kernel
    assert not sparse_calls
    net.train()(mix).mean().backward()  # CPU training with dropout: the sparse draw, with gradients
    assert sparse_calls and set(sparse_calls) == {0.3}
    assert all(p.grad is not None for m in attentions for p in m.parameters())
    sparse_calls.clear()
    assert remove_sparse_dropout(net) is net
    assert all(type(m) is BackendAttention for m in attentions)
    net(mix)
    assert not sparse_calls


def test_other_backends_and_no_dropout_keep_the_kernel(sparse_calls):
    x = torch.randn(2, 40, 16)
    for attn in (BackendAttention(16, 2, dropout=0.0), BackendAttention(16, 2, dropout=0.3, attention="lsh")):
        apply_sparse_dropout(attn).train()
        attn(x, x)
    assert not sparse_calls


def test_separation_module_applies_it_while_fitting_on_cpu(sparse_calls):
    torch.manual_seed(0)
    module = SeparationModule(HTDemucs(sources=["a", "b"], channels=8, depth=3, t_layers=1, t_dropout=0.3,
                                       segment=1))
    kinds = lambda: {type(m) for m in module.net.modules()}  # noqa: E731
    assert BackendAttention in kinds()
    module.on_fit_start()
    assert SparseDropoutAttention in kinds() and BackendAttention not in kinds()
    module.net.train()(torch.randn(1, 2, 44100))
    assert sparse_calls
    module.on_fit_end()
    assert BackendAttention in kinds() and SparseDropoutAttention not in kinds()
