"""The streaming engine, causal path (issue 25): a network declaring ``stream_step`` / ``stream_hop`` /
``stream_latency`` (HS-TasNet) is streamed hop by hop with carried state; blocks of any size give,
``latency`` samples late, the offline ``net(whole)``."""

from __future__ import annotations

import random

import pytest
import torch

from helpers import TinyNet
from helpers.stream import stream_blocks
from stemsep.contract import stream_step_of
from stemsep.errors import BadArgumentError
from stemsep.inference import StreamingSeparator
from stemsep.inference.bag import BagOfModels
from stemsep.inference.stream import _CausalEngine, _WindowedEngine
from stemsep.models import HSTasNet

TOL = 1e-5
HOP = 32


def _net(stereo: bool, seed: int = 0, **overrides) -> HSTasNet:
    """A tiny HS-TasNet with random weights everywhere (mask heads included, so the stems differ)."""
    torch.manual_seed(seed)
    config = dict(dim=16, num_basis=16, segment_len=2 * HOP, overlap_len=HOP, n_fft=2 * HOP, stereo=stereo)
    net = HSTasNet(**{**config, **overrides}).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.3)
    return net


def _sizes(seed, choices, count=10_000):
    rng = random.Random(seed)
    return [rng.choice(choices) for _ in range(count)]


def _offline(net, mix):
    with torch.no_grad():
        return net(mix[None])[0]


def _difference(net, mix, sizes) -> float:
    separator = StreamingSeparator(net)
    streamed = stream_blocks(separator, mix, sizes)
    assert streamed.shape[-1] == mix.shape[-1] + separator.latency
    assert not streamed[..., :separator.latency].any()
    return (streamed[..., separator.latency:] - _offline(net, mix)).abs().max().item()


def test_contract_read():
    net = _net(True)
    contract = stream_step_of(net)
    assert contract is not None and contract.hop == HOP and contract.latency == HOP
    assert stream_step_of(TinyNet()) is None
    # framing whose steps are not the offline forward: no contract, streamed windowed
    assert stream_step_of(HSTasNet(dim=8, num_basis=8, segment_len=96, overlap_len=32, n_fft=96)) is None
    separator = StreamingSeparator(net)
    assert isinstance(separator.engines[0], _CausalEngine)
    assert separator.latency == 2 * HOP - 1


@pytest.mark.parametrize("stereo", [False, True])
@pytest.mark.parametrize("choices", [[1], [1, 2, 3, 5, 7, 13, 31, 37, 101], [HOP], [5000]])
def test_streamed_equals_offline_shifted(stereo, choices):
    net = _net(stereo)
    mix = torch.randn(net.audio_channels, 1237)
    assert _offline(net, mix).abs().max().item() > 1e-2
    assert _difference(net, mix, _sizes(len(choices), choices)) <= TOL


@pytest.mark.parametrize("stereo", [False, True])
def test_long_blocks_and_lengths(stereo):
    net = _net(stereo, seed=1)
    for length in (1, HOP - 1, HOP, HOP + 1, 3 * HOP, 4000):
        mix = torch.randn(net.audio_channels, length)
        assert _difference(net, mix, [random.Random(length).randint(1, 40) for _ in range(length)]) <= TOL
    mix = torch.randn(net.audio_channels, 3001)  # one block of many hops, then a single sample
    assert _difference(net, mix, [3000, 1]) <= TOL


def test_comparison_can_fail():
    net = _net(True)
    mix = torch.randn(2, 600)
    separator = StreamingSeparator(net)
    streamed = stream_blocks(separator, mix, [7] * 100)
    offline = _offline(net, mix)
    off_by_one = (streamed[..., separator.latency - 1:-1] - offline).abs().max().item()
    assert off_by_one > 1e-2


def test_impulse_latency_is_declared():
    """A linear stand-in with the contract (each stem is the input, ``delay`` samples late per step)."""

    class Delay(TinyNet):
        stream_hop, stream_latency = 8, 5

        def forward(self, mix):
            return mix[:, None].repeat(1, len(self.sources), 1, 1)

        def stream_step(self, chunk, state=None):
            held = torch.cat((chunk.new_zeros(*chunk.shape[:2], 5) if state is None else state, chunk), -1)
            out = held[..., :chunk.shape[-1]]
            return out[:, None].repeat(1, len(self.sources), 1, 1), held[..., chunk.shape[-1]:]

    net = Delay()
    separator = StreamingSeparator(net)
    assert separator.latency == 5 + 8 - 1
    for at in (0, 3, 7, 8, 20):
        impulse = torch.zeros(net.audio_channels, 50)
        impulse[:, at] = 1
        streamed = stream_blocks(separator, impulse, [1, 2, 3, 5, 7] * 20)
        assert streamed[0, 0].nonzero().flatten().tolist() == [at + separator.latency]

    # HS-TasNet (its frame reads ahead, so its offline response starts before the impulse): the streamed
    # response is the offline one, exactly the declared latency later
    hs = _net(False)
    separator = StreamingSeparator(hs)
    silence = stream_blocks(separator, torch.zeros(1, 400), [13] * 40)
    impulse = torch.zeros(1, 400)
    impulse[0, 100] = 1
    response = stream_blocks(separator, impulse, [13] * 40) - silence
    first = (response.abs() > 1e-6).any(0).any(0).nonzero().flatten()[0].item()
    offline_response = _offline(hs, impulse) - _offline(hs, torch.zeros(1, 400))
    offline_first = (offline_response.abs() > 1e-6).any(0).any(0).nonzero().flatten()[0].item()
    assert first == offline_first + separator.latency
    assert (response[..., separator.latency:] - offline_response).abs().max().item() <= TOL


def test_flush_returns_tail_and_reset_restarts():
    net = _net(True)
    mix = torch.randn(2, 500)
    separator = StreamingSeparator(net)
    first = stream_blocks(separator, mix, [17] * 40)  # flush leaves it fresh
    second = stream_blocks(separator, mix, [17] * 40)
    assert torch.equal(first, second)
    # the tail is the stems of the last input samples
    assert (first[..., -separator.latency:] - _offline(net, mix)[..., -separator.latency:]).abs().max() <= TOL
    separator.push(torch.randn(2, 333))
    separator.reset()
    assert torch.equal(stream_blocks(separator, mix, [17] * 40), first)
    assert torch.equal(stream_blocks(StreamingSeparator(net), mix, [17] * 40), first)
    # flush with nothing pushed: zeros, latency long
    assert StreamingSeparator(net).flush().shape == (4, 2, separator.latency)


def test_windowed_when_asked_and_causal_errors():
    net = _net(True)
    assert isinstance(StreamingSeparator(net, overlap=0.25).engines[0], _WindowedEngine)
    assert isinstance(StreamingSeparator(net, causal=False).engines[0], _WindowedEngine)
    assert isinstance(StreamingSeparator(net, causal=True).engines[0], _CausalEngine)
    with pytest.raises(BadArgumentError, match="causal=True"):
        StreamingSeparator(net, causal=True, overlap=0.25)
    with pytest.raises(BadArgumentError, match="declares no stream_step"):
        StreamingSeparator(TinyNet(), causal=True)


def test_bag_of_causal_networks():
    nets = [_net(True, seed=0), _net(True, seed=1)]
    bag = BagOfModels(nets)
    separator = StreamingSeparator(bag)
    assert all(isinstance(engine, _CausalEngine) for engine in separator.engines)
    mix = torch.randn(2, 700)
    streamed = stream_blocks(separator, mix, _sizes(3, [1, 5, 64, 129]))
    with torch.no_grad():
        offline = (nets[0](mix[None])[0] + nets[1](mix[None])[0]) / 2
    assert (streamed[..., separator.latency:] - offline).abs().max().item() <= TOL
