"""The CPU inference rewrites (:func:`stemsep.inference.cpu.optimize_for_cpu`) give the plain
modules' values, keep the state_dict, and stay out of the way where they must (training, float64,
autocast, tracing, modules they do not fold)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import stemsep.inference.cpu.dconv as dconv_module
from stemsep.inference.cpu import optimize_for_cpu, restore_plain
from stemsep.inference.cpu.dconv import FusedDConv, expand_residual
from stemsep.inference.cpu.layers import CpuDecoderLayer, CpuEncoderLayer
from stemsep.inference.cpu.pointwise import PointwiseConv1d
from stemsep.inference.cpu.tapconv import TapConv1d
from stemsep.models import HDemucs, HTDemucs
from stemsep.models.dconv import DConv
from stemsep.models.layers import DecoderLayer, EncoderLayer
from stemsep.models.layerscale import LayerScale


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
    dconv = optimize_for_cpu(DConv(32, compress=4).eval())
    assert isinstance(dconv, FusedDConv)
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
    dconv = optimize_for_cpu(DConv(32, compress=4, init=0.5, norm=norm, **extras))
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
def test_tails_it_cannot_fold_keep_the_plain_dconv(fused_calls):
    torch.manual_seed(0)
    dconv = DConv(32, compress=4, init=0.5)
    dconv.layers[-1][-2] = nn.Sequential(nn.GLU(1))  # not a module expand_residual folds
    x = torch.randn(3, 32, 20)
    want = _plain(dconv, x)
    optimize_for_cpu(dconv)
    assert type(dconv) is DConv and type(dconv.layers[0][0]) is TapConv1d
    torch.testing.assert_close(dconv(x), want, atol=1e-5, rtol=1e-5)
    assert not fused_calls


@pytest.mark.parametrize("cls,config", [(HTDemucs, dict(channels=8, depth=3, t_layers=1, segment=1)),
                                        (HDemucs, dict(channels=8, depth=3))])
def test_optimize_for_cpu_swaps_modules_keeps_weights_and_values(cls, config):
    torch.manual_seed(0)
    net = cls(sources=["a", "b"], **config).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    mix = torch.randn(2, 2, 44100)
    with torch.no_grad():
        plain = net(mix)
    assert optimize_for_cpu(net) is net
    kinds = {type(m) for m in net.modules()}
    assert {CpuEncoderLayer, CpuDecoderLayer, FusedDConv, TapConv1d, PointwiseConv1d} <= kinds
    assert not {EncoderLayer, DecoderLayer, DConv} & kinds
    assert net.state_dict().keys() == state.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        torch.testing.assert_close(net(mix), plain, atol=1e-4, rtol=1e-4)
    # with autograd recording the rewritten modules compute the plain way (up to layout rounding)
    net(mix).square().mean().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    restore_plain(net)
    kinds = {type(m) for m in net.modules()}
    assert not {CpuEncoderLayer, CpuDecoderLayer, FusedDConv, TapConv1d, PointwiseConv1d} & kinds
    with torch.no_grad():
        torch.testing.assert_close(net(mix), plain, atol=0, rtol=0)
    net(mix).square().mean().backward()
    for got, p in zip(grads, net.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, atol=1e-5, rtol=1e-3)


LAYER_CASES = {  # name -> (encoder kwargs, decoder kwargs, frequency bins); dconv_kw as HT Demucs'
    "freq": (dict(), dict(), 32),
    "freq, context 1, no norm": (dict(context=1, norm=False), dict(norm=False), 16),
    "freq, no rewrite": (dict(rewrite=False), dict(rewrite=False), 16),
    "freq, no dconv": (dict(dconv=False), dict(dconv=False, context_freq=False), 16),
    "freq, lstm and attention": (dict(dconv_kw=dict(lstm=True, attn=True)), dict(dconv_kw=dict(lstm=True, attn=True)), 8),
    "time": (dict(freq=False, context=1), dict(freq=False), None),
    "time, empty": (dict(freq=False, empty=True), dict(freq=False, empty=True), None),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_cpu_layers_compute_the_plain_layers(case):
    # each rewritten layer against its plain class, same weights: forward (no grad and with
    # gradients) and parameter gradients
    enc_kw, dec_kw, bins = LAYER_CASES[case]
    torch.manual_seed(0)
    dconv_kw = dict(compress=4, init=0.5, **enc_kw.pop("dconv_kw", {}))
    enc = EncoderLayer(8, 16, dconv_kw=dconv_kw, **enc_kw)
    dconv_kw = dict(compress=4, init=0.5, **dec_kw.pop("dconv_kw", {}))
    dec = DecoderLayer(16, 8, dconv_kw=dconv_kw, **dec_kw)
    cpu_enc, cpu_dec = EncoderLayer(8, 16, dconv_kw=dconv_kw, **enc_kw), DecoderLayer(16, 8, dconv_kw=dconv_kw, **dec_kw)
    cpu_enc.load_state_dict(enc.state_dict())
    cpu_dec.load_state_dict(dec.state_dict())
    optimize_for_cpu(cpu_enc)
    optimize_for_cpu(cpu_dec)
    assert (type(cpu_enc), type(cpu_dec)) == (CpuEncoderLayer, CpuDecoderLayer)
    x = torch.randn(2, 8, bins, 24) if bins else torch.randn(2, 8, 95)  # 95: padded to the stride
    inject = None if enc.empty else torch.randn(2, 16, *(() if bins is None else (bins // 4,)), 24)
    length = x.shape[-1] if bins is None else 24

    def run(e, d, x):
        y = e(x, inject)
        z, pre = d(y, y.detach() * 0.5, length)
        return z, pre

    with torch.no_grad():
        got, want = (run(e, d, x) for e, d in ((cpu_enc, cpu_dec), (enc, dec)))
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # the frequency branch took the channels-last path (the plain layers never do)
        def channels_last(tensors) -> bool:
            return any(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() for t in tensors)

        assert channels_last((cpu_enc(x, inject), *got)) == (bins is not None)
        assert not channels_last((enc(x, inject), *want))
        if not enc.empty:  # a zero input (x=None: the skip alone)
            torch.testing.assert_close(cpu_dec(None, x.new_ones(2, 16, *x.shape[2:-1], 24), length)[0],
                                       dec(None, x.new_ones(2, 16, *x.shape[2:-1], 24), length)[0],
                                       atol=1e-5, rtol=1e-5)
    outs = [run(e, d, x) for e, d in ((cpu_enc, cpu_dec), (enc, dec))]
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-5)
    grads = []
    for (z, _), modules in zip(outs, ((cpu_enc, cpu_dec), (enc, dec)), strict=True):
        params = [p for m in modules for p in m.parameters()]
        grads.append(torch.autograd.grad(z.square().sum(), params))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_targets_are_found_by_type_not_position():
    # a DConv sub-block with its LSTM and attention (other places for the tail) and a network that
    # holds the layers deep inside other containers
    torch.manual_seed(0)
    dconv = DConv(32, compress=4, lstm=True, attn=True)
    assert len(dconv.layers[0]) == 9
    net = nn.ModuleDict({"inner": nn.Sequential(nn.Identity(), dconv), "enc": EncoderLayer(4, 8)})
    optimize_for_cpu(net)
    for layer in dconv.layers:
        assert type(layer[0]) is TapConv1d and type(layer[5]) is PointwiseConv1d
        assert type(layer[4].content) is nn.Conv1d  # LocalState's own 1x1 convolutions stay plain
    assert type(dconv) is FusedDConv and type(net["enc"]) is CpuEncoderLayer

    class MyEncoderLayer(EncoderLayer):  # a subclass with its own forward is not replaced
        def forward(self, x, inject=None):
            return super().forward(x, inject) * 2

    mine = optimize_for_cpu(MyEncoderLayer(4, 8))
    assert type(mine) is MyEncoderLayer and type(mine.dconv) is FusedDConv


def test_networks_without_these_modules_are_left_alone():
    net = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.Conv1d(4, 8, 1))
    before = [type(m) for m in net.modules()]
    assert [type(m) for m in optimize_for_cpu(net).modules()] == before


def test_expand_residual_rejects_other_norms():
    conv, glu = nn.Conv1d(4, 8, 1), nn.GLU(1)
    with pytest.raises(ValueError, match="one group"):
        expand_residual(torch.randn(2, 4, 5), torch.randn(2, 4, 5), conv, nn.GroupNorm(2, 8), glu, LayerScale(4))


def test_stemsep_test_separates_with_the_rewrites_and_training_never_sees_them():
    from stemsep.training import SeparationModule

    torch.manual_seed(0)
    module = SeparationModule(HDemucs(sources=["a", "b"], channels=8, depth=3))
    seen = []
    module.net.encoder[0].register_forward_pre_hook(lambda m, _: seen.append(type(m)))
    module.on_test_start()
    module.net(torch.randn(1, 2, 4096))
    module.on_test_end()
    module.net(torch.randn(1, 2, 4096))
    assert seen == [CpuEncoderLayer, EncoderLayer]
