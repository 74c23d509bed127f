"""Attention kernels: dense is exact, lsh approximates it sparsely, fast_transformers is optional."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from stemsep.errors import StemsepError
from stemsep.models.attention.backends import available_backends, get_backend
from stemsep.models.attention.fast_transformers import FastTransformersAttention, fast_transformers_available
from stemsep.models.attention.lsh import LSHAttention, lsh_sparsity


def reference_attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


def peaky_inputs(lq: int, lk: int, *, heads: int = 2, dim: int = 64, noise: float = 0.2, seed: int = 0):
    """Each query is a scaled noisy copy of one random key: attention concentrates on that key."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(1, heads, lk, dim, generator=g)
    target = torch.randint(lk, (1, heads, lq), generator=g)
    q = k.gather(2, target.unsqueeze(-1).expand(-1, -1, -1, dim)) + noise * torch.randn(1, heads, lq, dim, generator=g)
    v = torch.randn(1, heads, lk, dim, generator=g)
    return 2.0 * q, k, v


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def test_registry_lists_backends_and_rejects_unknown_names():
    assert {"dense", "lsh", "fast_transformers"} <= set(available_backends())
    with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
        get_backend("nope")
    with pytest.raises(ValueError, match="unknown option"):
        get_backend("lsh:colour=3")
    with pytest.raises(ValueError, match="integer or boolean"):
        get_backend("lsh:window=big")


def test_backend_options_are_parsed():
    kernel = get_backend("lsh:window=64,n_rounds=1,resample=false")
    assert isinstance(kernel, LSHAttention)
    assert (kernel.window, kernel.n_rounds, kernel.resample) == (64, 1, False)
    assert get_backend("lsh:window=64,n_rounds=1,resample=false") is kernel


@pytest.mark.parametrize("lq,lk", [(37, 37), (50, 23), (23, 50)])
def test_dense_equals_softmax_reference(lq, lk):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, lq, 16), torch.randn(2, 3, lk, 16), torch.randn(2, 3, lk, 8)
    out = get_backend("dense")(q, k, v)
    assert out.shape == (2, 3, lq, 8)
    torch.testing.assert_close(out, reference_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lq,lk", [(200, 200), (333, 150), (150, 333)])
@pytest.mark.parametrize("rounds", [1, 3])
def test_lsh_equals_dense_when_window_covers_all_keys(lq, lk, rounds):
    """Sorting, windows, padding, un-sorting and round merging are exact when nothing is skipped."""
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 4, lq, 32), torch.randn(2, 4, lk, 32), torch.randn(2, 4, lk, 16)
    kernel = LSHAttention(window=lk, chunk_size=32, bucket_size=16, n_rounds=rounds)
    assert kernel.sparsity(lq, lk) == 0.0
    out = kernel(q, k, v)
    assert out.shape == (2, 4, lq, 16)
    torch.testing.assert_close(out, reference_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lq,lk", [(2048, 2048), (2048, 1024), (1024, 2048)])
def test_lsh_tracks_dense_on_peaky_attention_while_skipping_most_pairs(lq, lk):
    q, k, v = peaky_inputs(lq, lk, noise=0.1)
    kernel = LSHAttention()
    sparsity = kernel.sparsity(lq, lk)
    assert sparsity >= 0.75
    dense = reference_attention(q, k, v)
    assert correlation(kernel(q, k, v), dense) > 0.9
    # The same budget of keys picked at random instead of by hashing does much worse.
    budget = kernel.window * kernel.n_rounds
    random_keys = torch.randperm(lk, generator=torch.Generator().manual_seed(3))[:budget]
    assert correlation(reference_attention(q, k[:, :, random_keys], v[:, :, random_keys]), dense) < 0.5


def test_more_hash_rounds_miss_fewer_keys():
    q, k, v = peaky_inputs(2048, 2048, noise=0.3)
    dense = reference_attention(q, k, v)
    one, two = (correlation(LSHAttention(window=128, chunk_size=32, n_rounds=r)(q, k, v), dense) for r in (1, 2))
    assert two > one + 0.05


def test_lsh_sparsity_at_htdemucs_12s_shapes_is_about_ninety_percent():
    # Frequency branch 8 x 526 = 4208 positions, time branch 2102 (demucs reference, 12.2 s).
    assert lsh_sparsity(4208, 4208) == pytest.approx(1 - 256 / 4208)
    assert lsh_sparsity(2102, 2102) == pytest.approx(1 - 256 / 2102)
    assert lsh_sparsity(10, 10) == 0.0


def test_lsh_is_deterministic_and_seeded():
    q, k, v = peaky_inputs(300, 300, noise=1.0)
    a = LSHAttention(window=32, bucket_size=16)
    first = a(q, k, v)
    torch.testing.assert_close(a(q, k, v), first, rtol=0, atol=0)
    torch.testing.assert_close(LSHAttention(window=32, bucket_size=16)(q, k, v), first, rtol=0, atol=0)
    assert not torch.equal(LSHAttention(window=32, bucket_size=16, seed=7)(q, k, v), first)
    resampled = LSHAttention(window=32, bucket_size=16, resample=True)
    assert not torch.equal(resampled(q, k, v), resampled(q, k, v))


def test_lsh_gradients_reach_queries_keys_and_values():
    q, k, v = (t.clone().requires_grad_() for t in peaky_inputs(200, 150))
    LSHAttention(window=32, bucket_size=16)(q, k, v).square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def _saved_elements(kernel, length: int) -> int:
    """Elements autograd keeps for backward: the memory a training step needs for attention."""
    q, k, v = (t.clone().requires_grad_() for t in peaky_inputs(length, length, heads=1, dim=16))
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        kernel(q, k, v)
    return total


def test_lsh_memory_grows_linearly_with_length_dense_quadratically():
    lsh = LSHAttention(window=64, bucket_size=32)
    lsh_ratio = _saved_elements(lsh, 2048) / _saved_elements(lsh, 1024)
    dense_ratio = _saved_elements(reference_attention, 2048) / _saved_elements(reference_attention, 1024)
    assert lsh_ratio < 2.3
    assert dense_ratio > 3.5
    assert _saved_elements(lsh, 2048) < _saved_elements(reference_attention, 2048) / 4


def test_lsh_runs_under_bf16_autocast():
    q, k, v = peaky_inputs(256, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = LSHAttention(window=64, bucket_size=32)(q, k, v)
    assert out.shape == q.shape and torch.isfinite(out.float()).all()


def test_lsh_rejects_bad_shapes_and_options():
    with pytest.raises(ValueError, match="expected q"):
        LSHAttention()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="window must be >= 1"):
        LSHAttention(window=0)


def test_fast_transformers_missing_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "fast_transformers.attention", None)
    with pytest.raises(StemsepError, match="install_sparse.sh") as err:
        FastTransformersAttention()(*peaky_inputs(200, 200))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not fast_transformers_available(),
                    reason="pytorch-fast-transformers not installed (bash scripts/install_sparse.sh)")
def test_fast_transformers_approximates_dense_deterministically():
    q, k, v = peaky_inputs(1024, 512)
    kernel = get_backend("fast_transformers:clusters=64")
    state = torch.get_rng_state()
    out = kernel(q, k, v)
    assert torch.equal(torch.get_rng_state(), state)
    assert out.shape == q.shape
    torch.testing.assert_close(kernel(q, k, v), out, rtol=0, atol=0)
    assert correlation(out, reference_attention(q, k, v)) > 0.9


# -- in the model ------------------------------------------------------------------------------
SOURCES = ["drums", "bass", "other", "vocals"]
# No LayerScale, so the (random-init) attention layers weigh on the output from the start.
HT_TINY = dict(channels=8, depth=4, t_layers=2, t_heads=4, segment=0.5, t_layer_scale=False)


def _tiny_htdemucs(attention: str):
    from stemsep.models import HTDemucs

    return HTDemucs(SOURCES, **HT_TINY, attention=attention)


def test_same_weights_run_with_every_backend():
    torch.manual_seed(0)
    dense = _tiny_htdemucs("dense").eval()
    mix = torch.randn(1, 2, 22050)
    with torch.no_grad():
        expected = dense(mix)
        outputs = {}
        names = ["lsh:window=100000", "lsh:window=16,bucket_size=8"]
        if fast_transformers_available():
            names.append("fast_transformers:clusters=16")
        for name in names:
            model = _tiny_htdemucs(name).eval()
            model.load_state_dict(dense.state_dict(), strict=True)
            outputs[name] = model(mix)
    # A window holding every key is dense attention computed through the LSH machinery.
    torch.testing.assert_close(outputs["lsh:window=100000"], expected, atol=1e-5, rtol=0)
    for name, out in outputs.items():
        assert out.shape == expected.shape and torch.isfinite(out).all(), name
    # A sparse window changes the output (it is really skipping keys) but stays close.
    sparse = outputs["lsh:window=16,bucket_size=8"]
    assert not torch.allclose(sparse, expected, atol=1e-5)
    assert correlation(sparse, expected) > 0.9


def test_htdemucs_with_lsh_attention_trains():
    torch.manual_seed(0)
    model = _tiny_htdemucs("lsh:window=16,bucket_size=8").train()
    mix = torch.randn(2, 2, 22050)
    target = torch.stack([mix * w for w in (0.1, 0.2, 0.3, 0.4)], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = (model(mix) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            attention_grads = [p.grad for n, p in model.named_parameters() if "in_proj_weight" in n]
            assert attention_grads and all(g is not None and g.abs().sum() > 0 for g in attention_grads)
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0]
