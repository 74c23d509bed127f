"""The CPU inference rewrites of DConv pieces give the plain modules' values, and stay out of
the way where they must (training, float64, autocast, tracing, hooks, other modules)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import stemsep.models.dconv as dconv_module
from stemsep.models.dconv import DConv, expand_residual
from stemsep.models.layerscale import LayerScale
from stemsep.models.tapconv import TapConv1d


def _layouts(n: int, c: int, t: int) -> list[torch.Tensor]:
    return [torch.randn(n, c, t), torch.randn(n, t, c).transpose(1, 2)]  # (N, C, T) and channels-fastest


def _plain(dconv: DConv, x: torch.Tensor) -> torch.Tensor:
    for layer in dconv.layers:
        x = x + layer(x)
    return x


@pytest.fixture
def fused_calls(monkeypatch) -> list[int]:
    """Count the fused tails run; small test tensors are let through the size threshold."""
    calls: list[int] = []

    def spy(*args):
        calls.append(1)
        return expand_residual(*args)

    monkeypatch.setattr(dconv_module, "FUSE_MIN_ELEMENTS", 0)
    monkeypatch.setattr(dconv_module, "expand_residual", spy)
    return calls


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), (5, 4), (1, 1)])
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("bias", [True, False])
@torch.no_grad()
def test_tapconv_matches_conv1d(kernel, dilation, n, bias):
    torch.manual_seed(0)
    tap = TapConv1d(16, 4, kernel, dilation, bias=bias)
    plain = nn.Conv1d(16, 4, kernel, dilation=dilation, padding=dilation * (kernel // 2), bias=bias)
    plain.load_state_dict(tap.state_dict())
    for x in [*_layouts(n, 16, 37), torch.randn(n, 16, 3)]:  # 3 steps: shorter than the widest shift
        assert tap._by_taps(x) == (n > 1 or x.stride(1) == 1)
        torch.testing.assert_close(tap(x), plain(x), atol=1e-5, rtol=1e-5)


def test_fast_paths_stay_off_in_training_float64_autocast_and_tracing(fused_calls):
    tap = TapConv1d(8, 2, 3)
    x = torch.randn(4, 8, 20)
    assert not tap._by_taps(x)  # autograd on: training keeps the plain modules
    with torch.no_grad():
        assert tap._by_taps(x)
        assert not tap._by_taps(x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not tap._by_taps(x)
    dconv = DConv(32, compress=4).eval()
    dconv(torch.randn(3, 32, 20))
    assert not fused_calls
    with torch.no_grad():
        traced = torch.jit.trace(dconv, torch.randn(3, 32, 20), check_trace=False)  # as export.py
    graph = str(traced.inlined_graph)
    assert "aten::_convolution" in graph and "aten::addcmul" not in graph and "aten::matmul" not in graph
    assert not fused_calls
    x = torch.randn(3, 32, 20)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), dconv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("extras", [{}, {"lstm": True, "attn": True}])
def test_dconv_fused_tail_matches_modules(norm, extras, fused_calls):
    torch.manual_seed(0)
    dconv = DConv(32, compress=4, init=0.5, norm=norm, **extras)
    for layer in dconv.layers:  # make the norm's affine map and the scale matter
        for module in layer:
            if isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight)
                nn.init.normal_(module.bias)
        layer[-1].scale.data.normal_()
    for x in _layouts(6, 32, 41):
        x = x * 3 + 1  # an offset mean stresses the moment-based statistics
        with torch.no_grad():
            got = dconv(x)
            assert len(fused_calls) == len(dconv.layers)
            fused_calls.clear()
            torch.testing.assert_close(got, _plain(dconv, x), atol=1e-4, rtol=1e-5)
        # expand_residual itself is differentiable: gradients of one fused tail
        layer = dconv.layers[0]
        x.requires_grad_(True)
        h = layer[:-4](x)
        grad = torch.randn_like(x)
        params = [x, *layer.parameters()]
        got = torch.autograd.grad(expand_residual(x, h, *layer[-4:]), params, grad, allow_unused=True,
                                  retain_graph=True)
        want = torch.autograd.grad(x + layer[-4:](h), params, grad, allow_unused=True)
        for a, b in zip(got, want, strict=True):
            if b is not None:
                torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)


@torch.no_grad()
def test_fused_tail_yields_to_hooks_and_other_modules(fused_calls):
    torch.manual_seed(0)
    dconv = DConv(32, compress=4, init=0.5)
    x = torch.randn(3, 32, 20)
    dconv(x)
    assert len(fused_calls) == 2
    seen = []
    handle = dconv.layers[-1][-4].register_forward_hook(lambda *_: seen.append(1))
    fused_calls.clear()
    dconv(x)
    assert seen and len(fused_calls) == 1  # the hooked sub-block ran its modules
    handle.remove()
    dconv.layers[-1][-2] = nn.Sequential(nn.GLU(1))  # not a module expand_residual folds
    fused_calls.clear()
    torch.testing.assert_close(dconv(x), _plain(dconv, x))
    assert len(fused_calls) == 1


def test_expand_residual_rejects_other_norms():
    conv, glu = nn.Conv1d(4, 8, 1), nn.GLU(1)
    with pytest.raises(ValueError, match="one group"):
        expand_residual(torch.randn(2, 4, 5), torch.randn(2, 4, 5), conv, nn.GroupNorm(2, 8), glu, LayerScale(4))
