"""HS-TasNet's CPU streaming rewrites (``optimize_for_cpu``: LSTMs / GRUs stepped by their cells, the TasNet
encoder and decoder on one frame as products) compute the plain modules' values, keep the state_dict, take
their fast path where they should, and leave gradients and longer sequences to the plain modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from stemsep.inference.cpu import optimize_for_cpu, restore_plain
from stemsep.inference.cpu.framing import FrameConv1d, FrameDecoder
from stemsep.inference.cpu.recurrent import StepGRU, StepLSTM, _steppable
from stemsep.models import HSTasNet
from stemsep.models.hstasnet import WindowedDecoder

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hstasnet" / "reference.pt"
TOL = 1e-5


def _random(config: dict, seed: int = 0) -> HSTasNet:
    """A network with every weight random (mask heads too, so recurrent errors reach the stems)."""
    torch.manual_seed(seed)
    net = HSTasNet(**config).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.3)
    return net


def _optimized_copy(net: HSTasNet) -> HSTasNet:
    fast = HSTasNet(**net.init_args).eval()
    fast.load_state_dict(net.state_dict())
    return optimize_for_cpu(fast)


def _streamed(net: HSTasNet, mix: torch.Tensor) -> torch.Tensor:
    state, outs = None, []
    with torch.no_grad():
        for chunk in mix.split(net.overlap_len, dim=-1):
            out, state = net.stream_step(chunk, state)
            outs.append(out)
    return torch.cat(outs, -1)


CONFIGS = {
    "paper": {},
    "small": {"small": True},
    "mono": {"stereo": False},
    "gru": {"use_gru": True},
    "magnitude": {"spec_branch_use_phase": False, "norm_before_mask_estimate": False},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rewritten_steps_equal_plain_steps(name):
    net = _random({"dim": 16, "num_basis": 24, "segment_len": 128, "overlap_len": 64, "n_fft": 128,
                   **CONFIGS[name]})
    fast = _optimized_copy(net)
    recurrent = StepGRU if CONFIGS[name].get("use_gru") else StepLSTM
    assert all(type(m) is recurrent for m in (fast.pre_spec_branch, fast.fusion_branch, fast.post_waveform_branch))
    assert (type(fast.conv_encode), type(fast.conv_decode)) == (FrameConv1d, FrameDecoder)
    assert list(fast.state_dict()) == list(net.state_dict())
    mix = torch.randn(1, net.audio_channels, 64 * 12)
    plain, got = _streamed(net, mix), _streamed(fast, mix)
    assert plain.abs().max().item() > 0.1
    assert (got - plain).abs().max().item() <= TOL * plain.abs().max().item()
    with torch.no_grad():  # offline: sequences of many frames take the plain paths
        assert (fast(mix) - net(mix)).abs().max().item() <= TOL * plain.abs().max().item()
    restore_plain(fast)
    assert type(fast.fusion_branch) in (nn.LSTM, nn.GRU) and type(fast.conv_decode) is WindowedDecoder


def test_rewritten_steps_equal_the_reference_stateful_transform():
    fixture = torch.load(FIXTURE, weights_only=True)["fixtures"]["paper"]
    net = HSTasNet(**fixture["config"]).eval()
    net.load_state_dict(fixture["state_dict"], strict=True)
    got = _streamed(optimize_for_cpu(net), fixture["input"][:1])[0]
    assert (got - fixture["streamed"]).abs().max().item() <= 1e-4


def test_fast_paths_taken_only_for_one_frame_without_gradients():
    lstm = StepLSTM(8, 8, 2, batch_first=True)
    frame, frames = torch.randn(1, 1, 8), torch.randn(1, 3, 8)
    with torch.no_grad():
        assert _steppable(lstm, frame) and not _steppable(lstm, frames)
        assert not _steppable(lstm, frame.double())
    assert not _steppable(lstm, frame)  # gradients recorded
    lstm.train()
    lstm.dropout = 0.5
    with torch.no_grad():
        assert not _steppable(lstm, frame)
    # the plain path still trains: gradients reach the weights
    lstm.eval()
    lstm(frame)[0].sum().backward()
    assert lstm.weight_ih_l1.grad is not None and lstm.weight_ih_l1.grad.abs().sum() > 0


def test_windowed_decoder_weight_follows_new_weights():
    net = _random({"dim": 8, "num_basis": 8, "segment_len": 64, "overlap_len": 32, "n_fft": 64})
    fast = _optimized_copy(net)
    mix = torch.randn(1, 2, 32 * 6)
    first = _streamed(fast, mix)
    other = _random(net.init_args, seed=1)
    fast.load_state_dict(other.state_dict())  # copied in place: the kept windowed weight must be dropped
    assert (_streamed(fast, mix) - _streamed(other, mix)).abs().max().item() <= TOL * first.abs().max().item()
    with torch.no_grad():
        fast.conv_decode.weight.mul_(2)
        other.conv_decode.weight.mul_(2)
    assert (_streamed(fast, mix) - _streamed(other, mix)).abs().max().item() <= TOL * first.abs().max().item()
