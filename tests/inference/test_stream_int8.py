"""Streaming an int8 HS-TasNet (issue 25): ``stemsep quantize`` quantizes its LSTMs / GRUs, Linear layers
and framing convolutions with activations per frame, the checkpoint loads weights-only, and ``StreamingSeparator`` on it
gives its own offline output ``latency`` samples late, close to the float network's."""

from __future__ import annotations

import random

import pytest
import torch

from helpers.stream import stream_blocks
from stemsep.cli import main
from stemsep.inference import StreamingSeparator, optimize_for_cpu
from stemsep.inference.stream import _CausalEngine
from stemsep.io.checkpoint import load_checkpoint, load_separator, save_checkpoint
from stemsep.io.quantized import (
    FRAME_SCHEME,
    SCHEME,
    FrameConv1dInt8,
    FrameGRU,
    FrameLinear,
    FrameLSTM,
    quantize_net,
    scheme_for,
)
from stemsep.models import HSTasNet, HTDemucs

HOP = 64
CONFIG = {"dim": 32, "num_basis": 48, "segment_len": 2 * HOP, "overlap_len": HOP, "n_fft": 2 * HOP}
TOL = 1e-5
# measured: 32.3 dB (LSTM) and 32.0 dB (GRU) between the int8 and float stems of these random networks
MIN_SNR_DB = 25.0


def _net(**overrides) -> HSTasNet:
    """Random weights everywhere (mask heads too), scaled so the stems stay near the mix's level."""
    torch.manual_seed(0)
    net = HSTasNet(**{**CONFIG, **overrides}).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.2)
    return net


def _quantized_checkpoint(tmp_path, net: HSTasNet):
    config = {"class_path": "stemsep.models.HSTasNet", "init_args": dict(net.init_args)}
    ckpt = save_checkpoint(tmp_path / "f32.ckpt", net, config)
    assert main(["quantize", str(ckpt), "-o", str(tmp_path / "int8.ckpt")]) == 0
    return ckpt, tmp_path / "int8.ckpt"


def _mix(channels: int, length: int = 40 * HOP + 17) -> torch.Tensor:
    torch.manual_seed(1)
    mix = 0.125 * torch.randn(channels, length)
    mix[:, length // 2:] *= 8  # a loud second half: per-tensor activation scales would reach back
    return mix


def _streamed_minus_offline(net, mix) -> float:
    separator = StreamingSeparator(net)
    assert isinstance(separator.engines[0], _CausalEngine)
    rng = random.Random(0)
    streamed = stream_blocks(separator, mix, [rng.choice([1, 7, HOP, 100, 513]) for _ in range(mix.shape[-1])])
    with torch.no_grad():
        offline = net(mix[None])[0]
    return (streamed[..., separator.latency:] - offline).abs().max().item()


def _snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    return 10 * torch.log10(reference.square().sum() / (reference - estimate).square().sum()).item()


@pytest.mark.parametrize("use_gru", [False, True])
def test_int8_checkpoint_streams_as_its_offline_output(tmp_path, capsys, use_gru):
    net = _net(use_gru=use_gru)
    ckpt, int8_path = _quantized_checkpoint(tmp_path, net)
    assert "wrote" in capsys.readouterr().out

    stored = load_checkpoint(int8_path)  # weights_only=True
    assert stored["hyper_parameters"]["quantization"] == FRAME_SCHEME
    assert stored["state_dict"]["net.fusion_branch.weight_hh_l1"].dtype == torch.qint8
    for layer in ("to_spec_masks.1", "conv_encode", "basis_to_embed.0"):
        assert stored["state_dict"][f"net.{layer}._packed_params._packed_params"][0].dtype == torch.qint8
    assert int8_path.stat().st_size < 0.6 * ckpt.stat().st_size

    int8 = load_separator(int8_path)
    assert not any(type(m) in (torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear) for m in int8.modules())
    assert type(int8.conv_encode) is FrameConv1dInt8 and type(int8.conv_decode).__name__ == "WindowedDecoder"
    mix = _mix(net.audio_channels)
    assert _streamed_minus_offline(int8, mix) <= TOL
    assert _streamed_minus_offline(optimize_for_cpu(int8), mix) <= TOL  # the CPU rewrites on the float rest

    with torch.no_grad():
        float_stems, int8_stems = net(mix[None]), int8(mix[None])
    assert MIN_SNR_DB < _snr_db(float_stems, int8_stems) < 80  # rounded weights, not broken, not float


def test_per_tensor_activations_would_break_the_causal_contract():
    net = _net()
    mix = _mix(net.audio_channels)
    assert _streamed_minus_offline(quantize_net(net, SCHEME), mix) > 1e-3  # why the scheme is per frame
    assert _streamed_minus_offline(quantize_net(net), mix) <= TOL


def test_batched_offline_equals_each_stream_alone():
    int8 = quantize_net(_net())
    mixes = torch.stack([_mix(2), 0.1 * _mix(2)])
    with torch.no_grad():
        together = int8(mixes)
        alone = torch.cat([int8(mix[None]) for mix in mixes])
    assert (together - alone).abs().max().item() <= TOL


def test_linear_only_checkpoints_still_load(tmp_path):
    net = _net()
    old = {**SCHEME, "modules": ["Linear"]}
    path = save_checkpoint(tmp_path / "old.ckpt", quantize_net(net, old),
                           {"class_path": "stemsep.models.HSTasNet", "init_args": dict(net.init_args)},
                           {"quantization": old})
    loaded = load_separator(path)
    assert type(loaded.fusion_branch) is torch.nn.LSTM
    assert isinstance(loaded.to_spec_masks[1], torch.ao.nn.quantized.dynamic.Linear)
    with torch.no_grad():
        assert torch.equal(loaded(_mix(2)[None]), quantize_net(net, old)(_mix(2)[None]))


def test_networks_without_the_causal_contract_keep_per_tensor_scales_and_float_convolutions():
    net = HTDemucs(sources=["a", "b"], channels=4, depth=2, t_layers=1, nfft=256, segment=1, samplerate=8000,
                   t_heads=2, bottom_channels=16)
    assert scheme_for(net) == SCHEME
    int8 = quantize_net(net)
    assert not any(isinstance(m, FrameConv1dInt8) for m in int8.modules())
    assert not any(isinstance(m, (FrameLinear, FrameLSTM, FrameGRU)) for m in int8.modules())  # per-tensor scales
    assert any(type(m) is torch.nn.Conv1d for m in int8.modules())
