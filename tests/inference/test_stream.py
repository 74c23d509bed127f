"""The streaming engine (issue 25, windowed geometry): blocks of any size give, ``latency`` samples
late, exactly the offline :func:`apply_model` separation with the same :class:`Chunking`."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch

from helpers import TinyNet
from helpers.stream import stream_blocks
from helpers.tools import small_network
from stemsep.errors import BadArgumentError
from stemsep.inference import StreamingSeparator
from stemsep.inference.bag import BagOfModels
from stemsep.inference.chunked import Chunking, apply_model


class Padded(TinyNet):
    """Wants 100 samples of context each side (``valid_length``), quarter-second segments at 1 kHz."""

    segment = Fraction(1, 4)

    def valid_length(self, length: int) -> int:
        return length + 200


class Echo(Padded):
    """Each source is the mix times a gain (a linear network: an impulse stays an impulse)."""

    def forward(self, mix):
        gains = torch.arange(1, len(self.sources) + 1, dtype=mix.dtype)[:, None, None]
        return mix[:, None] * gains


def _sizes(seed, choices, count=10_000):
    rng = random.Random(seed)
    return [rng.choice(choices) for _ in range(count)]


def _check_equal(net, mix, chunking, sizes):
    separator = StreamingSeparator(net, chunking)
    streamed = stream_blocks(separator, mix, sizes)
    offline = apply_model(net, mix[None], chunking)[0]
    assert streamed.shape[-1] == mix.shape[-1] + separator.latency
    assert torch.equal(streamed[..., :separator.latency], torch.zeros_like(streamed[..., :separator.latency]))
    difference = (streamed[..., separator.latency:] - offline).abs().max().item()
    assert difference <= 1e-6, difference
    return separator, streamed


SIZES = {"ones": [1], "sevens": [7], "primes": [7, 331], "longer than the window": [1000],
         "mixed": [1, 2, 7, 64, 331, 500, 1000]}


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_valid_length_network_streams_as_offline(name, overlap):
    torch.manual_seed(0)
    net, mix = Padded(samplerate=1000).eval(), torch.randn(2, 1733)
    separator, _ = _check_equal(net, mix, Chunking(overlap=overlap), _sizes(len(name), SIZES[name]))
    assert separator.latency == 250 + 100 - 1  # a chunk and its context after, less the sample itself


def test_short_inputs_and_other_options():
    torch.manual_seed(1)
    net = Padded(samplerate=1000).eval()
    for length in (1, 100, 249, 250, 349, 350, 351):  # shorter than a window: everything in flush
        _check_equal(net, torch.randn(2, length), Chunking(), [7] * 100)
    _check_equal(net, torch.randn(2, 900), Chunking(segment=0.1, overlap=0.0, batch_size=3,
                                                   transition_power=2.0), _sizes(3, [1, 13, 400]))


def test_latency_measured_with_an_impulse():
    net = Echo(samplerate=1000)
    separator = StreamingSeparator(net, overlap=0.25)
    at = 3 * 187  # a chunk start: its first sample waits longest
    impulse = torch.zeros(2, 1500)
    impulse[:, at] = 1.0
    out = torch.cat([separator.push(impulse[:, n:n + 1]) for n in range(1500)] + [separator.flush()], -1)
    peaks = out.abs().amax(dim=(0, 1)).nonzero().flatten().tolist()
    assert peaks == [at + separator.latency]
    torch.testing.assert_close(out[:, 0, at + separator.latency], torch.arange(1.0, 5.0))
    # And the declared latency is the least possible: the engine lags the input by exactly that much.
    engine = StreamingSeparator(net, overlap=0.25).engines[0]
    lags, final = [], 0
    for n in range(1500):
        final += engine.push(impulse[:, n:n + 1]).shape[-1]
        lags.append(n + 1 - final)
    assert max(lags) == separator.latency


def test_work_and_memory_follow_the_block():
    net = Padded(samplerate=1000).eval()
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    separator = StreamingSeparator(net, overlap=0.25)
    engine = separator.engines[0]
    for _ in range(5000):
        separator.push(torch.randn(2, 3))
        assert len(engine.mix) <= engine.keep + 250 + 100 + 3
        assert len(engine.sums) <= 250 and len(separator.final[0]) <= separator.latency
    separator.flush()
    assert sum(calls) == len(Chunking(overlap=0.25).plan(net, [15000]))  # every chunk once


def test_flush_returns_the_tail_and_reset_restarts_exactly():
    torch.manual_seed(2)
    net, mix = Padded(samplerate=1000).eval(), torch.randn(2, 1200)
    separator = StreamingSeparator(net)
    sizes = _sizes(4, [1, 7, 331])
    first = stream_blocks(separator, mix, sizes)  # flush leaves it fresh
    assert torch.equal(stream_blocks(separator, mix, sizes), first)
    separator.push(torch.randn(2, 777))
    separator.reset()
    assert torch.equal(stream_blocks(separator, mix, sizes), first)
    assert torch.equal(stream_blocks(StreamingSeparator(net), mix, sizes), first)
    offline = apply_model(net, mix[None], Chunking())[0]
    assert (first[..., -separator.latency:] - offline[..., -separator.latency:]).abs().max() <= 1e-6
    assert StreamingSeparator(net).flush().shape == (4, 2, separator.latency)  # nothing pushed: zeros


def test_bag_of_two_segments_streams_as_offline():
    torch.manual_seed(3)
    a, b = Padded(samplerate=1000).eval(), Padded(samplerate=1000).eval()
    b.segment = Fraction(3, 10)
    bag = BagOfModels([a, b], weights=[[1.0, 2.0, 1.0, 1.0], [1.0, 1.0, 3.0, 1.0]])
    separator, _ = _check_equal(bag, torch.randn(2, 1500), Chunking(overlap=0.5), _sizes(5, [1, 7, 331, 1000]))
    assert separator.latency == max(StreamingSeparator(a, overlap=0.5).latency,
                                    StreamingSeparator(b, overlap=0.5).latency) == 300 + 100 - 1


def test_htdemucs_small_streams_as_offline():
    torch.manual_seed(4)
    net, _ = small_network("htdemucs_small", depth=2, channels=8, t_layers=1, segment=0.25)
    mix = 0.3 * torch.randn(2, int(1.3 * net.samplerate))
    separator, _ = _check_equal(net, mix, Chunking(overlap=0.25), _sizes(6, [1, 331, 4410, 20000], 200))
    assert separator.latency == int(0.25 * net.samplerate) - 1  # pads to its segment: no context added


@pytest.mark.parametrize("net,options,word", [
    (Padded(samplerate=1000), dict(shifts=1), "--shifts"),
    (TinyNet(samplerate=1000), {}, "segment"),
    (Padded(samplerate=1000), dict(split=False), "segment"),
])
def test_one_line_errors(net, options, word):
    with pytest.raises(BadArgumentError, match=word) as error:
        StreamingSeparator(net, **options)
    assert "\n" not in str(error.value)


def test_block_shape_and_channels_checked():
    separator = StreamingSeparator(Padded(samplerate=1000))
    with pytest.raises(BadArgumentError, match="channels, samples"):
        separator.push(torch.zeros(2, 3, 4))
    separator.push(torch.zeros(2, 10))
    with pytest.raises(BadArgumentError, match="2 channels"):
        separator.push(torch.zeros(1, 10))
    assert StreamingSeparator(TinyNet(samplerate=1000), segment=0.1).latency == 99


def test_chunking_answers_the_stream_geometry():
    net = Padded(samplerate=1000)
    chunking = Chunking(overlap=0.25)
    assert chunking.context(net, 250) == (100, 100) and chunking.context(net, 39) == (100, 100)
    assert chunking.history(net) == 250 + 200 + 1 and Chunking().history(TinyNet()) is None
    net.use_train_segment = True  # pads to its segment (HT Demucs): a short chunk is centred in one segment
    assert chunking.context(net, 250) == (0, 0) and chunking.context(net, 101) == (74, 75)
