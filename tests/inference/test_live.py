"""The Python side of ``stemsep stream`` (issue 25): ``Separator.stream`` and
:func:`stemsep.inference.live.stream_audio` with raw PCM streams, the raw codec, the meter."""

from __future__ import annotations

import io
import sys
import time

import numpy as np
import pytest
import torch

from helpers.live import (
    HOP,
    SR,
    checkpoint,
    tiny_windowed,
)
from helpers.stream import stream_blocks
from stemsep.errors import BadArgumentError
from stemsep.inference import Separator
from stemsep.inference.chunked import Chunking, apply_model
from stemsep.inference.devices import LiveAudioError, find_device, sounddevice
from stemsep.inference.live import Meter, RawCodec, reblock, stream_audio
from stemsep.inference.stream import _CausalEngine, _WindowedEngine


def test_separator_stream_picks_the_engine(causal_ckpt, windowed_ckpt):
    causal = Separator.from_checkpoint(causal_ckpt[1], "cpu")
    assert isinstance(causal.stream().engines[0], _CausalEngine)
    assert causal.stream().latency == 2 * HOP - 1
    assert isinstance(causal.stream(causal=False).engines[0], _WindowedEngine)  # its own segment (4 s)
    assert isinstance(causal.stream(overlap=0.5).engines[0], _WindowedEngine)
    windowed = Separator.from_checkpoint(windowed_ckpt[1], "cpu", overlap=0.5)  # shifts=1 by default: dropped
    streamer = windowed.stream()
    assert isinstance(streamer.engines[0], _WindowedEngine) and streamer.chunking.overlap == 0.5
    assert streamer.chunking.shifts == 0
    with pytest.raises(BadArgumentError, match="causal=True"):
        windowed.stream(causal=True)


def test_separator_stream_equals_offline(causal_ckpt, windowed_ckpt):
    mix = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 3001)).astype(np.float32))
    net, path = causal_ckpt
    streamer = Separator.from_checkpoint(path, "cpu").stream()
    out = stream_blocks(streamer, mix, [HOP * 3 + 1] * 200)
    with torch.no_grad():
        assert (out[..., streamer.latency:] - net(mix[None])[0]).abs().max() <= 1e-5
    net, path = windowed_ckpt
    streamer = Separator.from_checkpoint(path, "cpu").stream(overlap=0.5)
    out = stream_blocks(streamer, mix, [77] * 200)
    with torch.no_grad():
        offline = apply_model(net, mix[None], Chunking(overlap=0.5))[0]
    assert (out[..., streamer.latency:] - offline).abs().max() <= 1e-5


@pytest.mark.parametrize("dtype", ["float32", "int16", "int32"])
@pytest.mark.parametrize("align", [False, True])
def test_raw_stdin_to_raw_stdout(causal_ckpt, dtype, align):
    """Raw PCM in, raw PCM out (sources x channels per frame): the stems of the Python API, live or aligned."""
    net, path = causal_ckpt
    mix = np.random.default_rng(2).uniform(-0.5, 0.5, (2, 2500)).astype(np.float32)
    codec = RawCodec(dtype)
    sent = codec.decode(codec.encode(mix[None]), 2)  # what the integer types can carry
    out = io.BytesIO()
    report = stream_audio(["-"], models=path, out="-", rate=SR, channels=2, dtype=dtype, align=align,
                          stdin=io.BytesIO(codec.encode(mix[None])), stdout=out)
    streamer = Separator.from_checkpoint(path, "cpu").stream()
    expected = stream_blocks(streamer, torch.from_numpy(sent), [HOP] * 1000).numpy()
    if align:
        expected = expected[..., report.latency:]
    got = codec.decode(out.getvalue(), 4 * 2).reshape(4, 2, -1)  # frames of 4 sources x 2 channels
    assert got.shape == expected.shape
    if codec.scale:  # integers: clipped to their range, within one quantization step
        step = 1.0 / codec.scale
        assert np.abs(got - np.clip(expected, -1, 1 - step)).max() <= 1e-5 + step
    else:
        assert np.abs(got - expected).max() <= 1e-5
    assert report.latency == 2 * HOP - 1 and report.block == HOP and report.samples == 2500
    assert report.blocks == -(-2500 // HOP)


def test_raw_codec_layout():
    stems = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 100  # sources, channels, time
    data = np.frombuffer(RawCodec("float32").encode(stems), "<f4")
    assert data[:6].tolist() == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16, 0.2])  # frame 0: s0c0 s0c1 s0c2 s1c0..
    ints = np.frombuffer(RawCodec("int16").encode(np.array([[[1.0, -1.0, 0.5]]])), "<i2")
    assert ints.tolist() == [32767, -32768, 16384]
    with pytest.raises(BadArgumentError, match="--dtype float64"):
        RawCodec("float64")


def test_reblock_cuts_exact_blocks():
    chunks = [np.full((2, n), n, np.float32) for n in (5, 1, 9, 3)]
    blocks = list(reblock(chunks, 4))
    assert [b.shape[-1] for b in blocks] == [4, 4, 4, 4, 2]
    assert np.array_equal(np.concatenate(blocks, -1), np.concatenate(chunks, -1))


def test_meter_counts_late_blocks_and_restarts_its_clock():
    now = [0.0]
    meter = Meter(1000, realtime=True, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for compute in (0.005, 0.030, 0.005, 0.005):  # 10 ms blocks; the second takes three
        deadline = meter.arrive(10)
        now[0] += compute
        meter.done(10, compute, deadline)
    assert meter.underruns == 1
    # block 2 arrived at 20 ms, was done at 50 ms; block 3 is read at once (50 ms), block 4 on time (60 ms)
    assert now[0] == pytest.approx(0.065)
    report = meter.report(10, 5, "realtime")
    assert report.blocks == 4 and report.compute_ms[2] == pytest.approx(30.0)
    assert report.compute_share == pytest.approx((0.5, np.percentile([0.5, 3, 0.5, 0.5], 99), 3.0))
    assert report.realtime_factor == pytest.approx(0.045 / 0.04)


def test_slow_network_under_runs_are_reported_and_the_run_finishes(tmp_path):
    """A network slower than real time: every block misses its deadline; the stream still ends, whole."""
    path = checkpoint(tiny_windowed(delay=0.06), tmp_path / "slow.ckpt")  # a chunk every 300 samples = 37.5 ms
    mix = np.random.default_rng(3).uniform(-0.5, 0.5, (2, 1800)).astype(np.float32)
    out = io.BytesIO()
    start = time.perf_counter()
    report = stream_audio(["-"], models=path, out="-", rate=SR, channels=2, realtime=True, align=True,
                          stdin=io.BytesIO(RawCodec("float32").encode(mix[None])), stdout=out)
    assert report.block == 300 and report.blocks == 6 and report.paced == "realtime"
    assert report.underruns >= 3  # each push computes a 60 ms chunk against a 37.5 ms block
    assert report.compute_ms[2] >= 60.0 and report.realtime_factor > 1.0
    assert time.perf_counter() - start >= 1800 / SR  # paced: no faster than the audio
    assert len(out.getvalue()) == 1800 * 4 * 2 * 4  # every sample delivered, aligned
    assert "under-runs" in report.summary()


def test_live_audio_missing_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # the import fails as without the package
    with pytest.raises(LiveAudioError, match=r"--input-device 0: .*pip install 'stemsep\[live\]'"):
        find_device(0, "input")


def test_live_audio_on_this_machine_is_one_line():
    """Without PortAudio: the fix named; with it: an unknown device is refused in one line (naming the
    devices there are, or saying there are none)."""
    try:
        sounddevice()
    except LiveAudioError as err:
        assert "apt-get install libportaudio2" in str(err) and "\n" not in str(err)
        return
    with pytest.raises(LiveAudioError, match="--output-device no such card 42: (no such output device|PortAudio "
                                             "finds no audio devices)"):
        find_device("no such card 42", "output")
