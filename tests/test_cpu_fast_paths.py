"""The CPU-only rewrites of DConv pieces give the plain modules' values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stemsep.models.dconv import DConv, expand_residual
from stemsep.models.tapconv import TapConv1d


def _layouts(n: int, c: int, t: int) -> list[torch.Tensor]:
    return [torch.randn(n, c, t), torch.randn(n, t, c).transpose(1, 2)]  # (N, C, T) and channels-fastest


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), (5, 4), (1, 1)])
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_tapconv_matches_conv1d(kernel, dilation, n, bias):
    torch.manual_seed(0)
    tap = TapConv1d(16, 4, kernel, dilation, bias=bias)
    plain = nn.Conv1d(16, 4, kernel, dilation=dilation, padding=dilation * (kernel // 2), bias=bias)
    plain.load_state_dict(tap.state_dict())
    params = [p for p in (tap.weight, tap.bias) if p is not None]
    plain_params = [p for p in (plain.weight, plain.bias) if p is not None]
    for x in [*_layouts(n, 16, 37), torch.randn(n, 16, 3)]:  # 3 steps: shorter than the widest shift
        assert tap._by_taps(x) == (n > 1 or x.stride(1) == 1)
        x.requires_grad_(True)
        got, want = tap(x), plain(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        grad = torch.randn_like(want)
        torch.testing.assert_close(torch.autograd.grad(got, [x, *params], grad),
                                   torch.autograd.grad(want, [x, *plain_params], grad), atol=1e-4, rtol=1e-4)


def test_fast_paths_stay_off_for_float64_autocast_and_tracing(monkeypatch):
    monkeypatch.setattr("stemsep.models.dconv.FUSE_MIN_ELEMENTS", 0)
    tap = TapConv1d(8, 2, 3)
    x = torch.randn(4, 8, 20)
    assert tap._by_taps(x)
    assert not tap._by_taps(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not tap._by_taps(x)
    dconv = DConv(32, compress=4).eval()
    traced = torch.jit.trace(dconv, torch.randn(3, 32, 20))
    graph = str(traced.inlined_graph)
    assert "aten::_convolution" in graph and "aten::addcmul" not in graph and "aten::matmul" not in graph
    x = torch.randn(3, 32, 20)
    torch.testing.assert_close(traced(x), dconv(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("extras", [{}, {"lstm": True, "attn": True}])
def test_dconv_fused_tail_matches_modules(norm, extras, monkeypatch):
    monkeypatch.setattr("stemsep.models.dconv.FUSE_MIN_ELEMENTS", 0)  # small test tensors take the fused path
    torch.manual_seed(0)
    dconv = DConv(32, compress=4, init=0.5, norm=norm, **extras)
    for layer in dconv.layers:  # make the norm's affine map and the scale matter
        for module in layer:
            if isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight)
                nn.init.normal_(module.bias)
        layer[-1].scale.data.normal_()
    for x in _layouts(6, 32, 41):
        x = (x * 3 + 1).requires_grad_(True)  # an offset mean stresses the moment-based statistics
        got = dconv(x)
        assert got.grad_fn.name() == "AddcmulBackward0"  # the fused tail ran
        want = _plain(dconv, x)  # the plain modules, unfused
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
        grad = torch.randn_like(want)
        params = [x, *dconv.parameters()]
        for a, b in zip(torch.autograd.grad(got, params, grad), torch.autograd.grad(want, params, grad), strict=True):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)


def test_expand_residual_rejects_other_norms():
    conv, glu = nn.Conv1d(4, 8, 1), nn.GLU(1)
    from stemsep.models.layerscale import LayerScale

    with pytest.raises(ValueError, match="one group"):
        expand_residual(torch.randn(2, 4, 5), torch.randn(2, 4, 5), conv, nn.GroupNorm(2, 8), glu, LayerScale(4))


def _plain(dconv: DConv, x: torch.Tensor) -> torch.Tensor:
    for layer in dconv.layers:
        x = x + layer(x)
    return x


def test_fused_tail_yields_to_hooks_and_other_modules(monkeypatch):
    monkeypatch.setattr("stemsep.models.dconv.FUSE_MIN_ELEMENTS", 0)
    torch.manual_seed(0)
    dconv = DConv(32, compress=4, init=0.5)
    x = torch.randn(3, 32, 20, requires_grad=True)
    assert dconv(x).grad_fn.name() == "AddcmulBackward0"
    seen = []
    handle = dconv.layers[-1][-4].register_forward_hook(lambda *_: seen.append(1))
    out = dconv(x)
    assert seen and out.grad_fn.name() != "AddcmulBackward0"  # the hooked module ran
    handle.remove()
    dconv.layers[-1][-2] = nn.Sequential(nn.GLU(1))  # not a module expand_residual folds
    out = dconv(x)
    assert out.grad_fn.name() != "AddcmulBackward0"
    torch.testing.assert_close(out, _plain(dconv, x))
