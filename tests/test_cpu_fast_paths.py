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
def test_tapconv_matches_conv1d(kernel, dilation, n):
    torch.manual_seed(0)
    tap = TapConv1d(16, 4, kernel, dilation)
    plain = nn.Conv1d(16, 4, kernel, dilation=dilation, padding=dilation * (kernel // 2))
    plain.load_state_dict(tap.state_dict())
    for x in _layouts(n, 16, 37):
        x.requires_grad_(True)
        got, want = tap(x), plain(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        grad = torch.randn_like(want)
        torch.testing.assert_close(torch.autograd.grad(got, (x, tap.weight, tap.bias), grad),
                                   torch.autograd.grad(want, (x, plain.weight, plain.bias), grad),
                                   atol=1e-4, rtol=1e-4)


def test_tapconv_short_input_falls_back():
    tap = TapConv1d(8, 2, 5, dilation=4)  # padding 8 > 3 steps
    x = torch.randn(3, 8, 3)
    torch.testing.assert_close(tap(x), nn.Conv1d.forward(tap, x))


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
        want = x
        for layer in dconv.layers:
            want = want + layer(want)  # the plain modules, unfused
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
