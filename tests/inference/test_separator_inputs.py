"""``Separator.separate`` takes audio as Python users hold it: ``soundfile.read``'s ``(time, channels)``
as well as ``(channels, time)``, NumPy or torch, integer PCM, and gives stems back in that layout,
exactly as long as the input; it refuses an ambiguous layout or a bad sample rate in one line."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import TinyNet
from helpers.recipes import save_tiny
from stemsep.contract import network_config
from stemsep.errors import BadArgumentError, BadAudioError, StemsepError
from stemsep.inference import Separator
from stemsep.io.checkpoint import save_checkpoint

SR = 44100  # TinyNet's rate


@pytest.fixture(scope="module")
def sep(tmp_path_factory) -> Separator:
    return Separator.from_checkpoint(save_tiny(tmp_path_factory.mktemp("sep") / "tiny.ckpt"), device="cpu", shifts=0)


def _mix(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``(time, channels)`` float32, as ``soundfile.read(..., dtype="float32")`` returns it."""
    return np.random.default_rng(seed).uniform(-0.3, 0.3, (frames, channels)).astype(np.float32)


def test_time_channels_from_soundfile_is_read_as_stereo(sep, tmp_path, capsys):
    path = tmp_path / "song.wav"
    sf.write(path, _mix(30011), SR, subtype="FLOAT")
    data, rate = sf.read(path, dtype="float32")  # (30011, 2): what every Python audio user has
    stems = sep.separate(data, rate)
    assert "downmixed" not in capsys.readouterr().err  # was: "30011 channels downmixed to stereo"
    assert all(s.shape == (30011, 2) for s in stems.values())  # the input's layout back
    first = sep.separate(torch.from_numpy(np.ascontiguousarray(data.T)), rate)
    assert all(s.shape == (2, 30011) for s in first.values())
    for name in sep.sources:
        assert torch.equal(stems[name], first[name].T)  # the same separation, transposed
        assert stems[name].is_contiguous()
    sf.write(tmp_path / "vocals.wav", stems["vocals"], rate)  # soundfile takes them as they are
    assert sf.info(tmp_path / "vocals.wav").frames == 30011 and sf.info(tmp_path / "vocals.wav").channels == 2


def test_batches_mono_and_single_channel_layouts(sep):
    data = _mix(8000)
    reference = sep.separate(data.T, SR)["bass"]
    batch = sep.separate(np.stack([data, 0.5 * data]), SR)  # (batch, time, channels)
    assert batch["bass"].shape == (2, 8000, 2)
    assert torch.allclose(batch["bass"][0], reference.T, atol=1e-6)
    assert sep.separate(data[:, 0], SR)["bass"].shape == (2, 8000)  # (time,): (channels, time)
    assert sep.separate(data[:, :1], SR)["bass"].shape == (8000, 2)  # (time, 1): mono, channels last
    assert sep.separate(data[:, :1].T, SR)["bass"].shape == (2, 8000)  # (1, time)
    surround = np.random.default_rng(3).uniform(-0.3, 0.3, (8000, 6)).astype(np.float32)
    assert sep.separate(surround, SR)["bass"].shape == (8000, 2)  # 5.1 (time, channels), downmixed


def test_mono_network_decides_by_its_own_channel_count(tmp_path):
    torch.manual_seed(0)
    net = TinyNet(audio_channels=1)
    mono = Separator.from_checkpoint(save_checkpoint(tmp_path / "mono.ckpt", net, network_config(net)),
                                     device="cpu", shifts=0)
    data = _mix(5000, channels=1)
    assert mono.separate(data, SR)["drums"].shape == (5000, 1)
    assert mono.separate(data.T, SR)["drums"].shape == (1, 5000)
    assert mono.separate(_mix(5000), SR)["drums"].shape == (5000, 1)  # stereo averaged to mono


@pytest.mark.parametrize("dtype, scale, offset", [("int16", 32768, 0), ("int32", 2 ** 31, 0),
                                                  ("uint8", 128, 128), ("int8", 128, 0)])
def test_integer_pcm_is_scaled_to_floats(sep, dtype, scale, offset):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1)
    pcm = rng.integers(info.min // 3 + offset * 2 // 3, info.max // 3 + offset * 2 // 3, (6000, 2), dtype=np.int64)
    pcm = pcm.astype(dtype)
    floats = ((pcm.astype(np.float64) - offset) / scale).astype(np.float32)
    assert np.abs(floats).max() > 0.1
    for given in (pcm, torch.from_numpy(pcm)):
        stems = sep.separate(given, SR)
        expected = sep.separate(floats, SR)
        for name in sep.sources:
            assert stems[name].dtype == torch.float32
            assert torch.allclose(stems[name], expected[name], atol=1e-6), name
            assert stems[name].abs().max() < 10  # not at the integers' scale (±32767...)


def test_int16_from_soundfile(sep, tmp_path):
    path = tmp_path / "pcm16.wav"
    sf.write(path, _mix(7001), 48000, subtype="PCM_16")
    pcm, rate = sf.read(path, dtype="int16")
    floats, _ = sf.read(path, dtype="float32")
    stems, expected = sep.separate(pcm, rate), sep.separate(floats, rate)
    assert stems["other"].shape == (7001, 2)
    assert torch.allclose(stems["other"], expected["other"], atol=1e-6)


def test_mix_is_not_modified(sep):
    data = _mix(4000)
    before = data.copy()
    sep.separate(data, SR)
    sep.separate(data, 48000)
    assert np.array_equal(data, before)


@pytest.mark.parametrize("shape, expected", [
    ((2, 2), "ambiguous for a 2-channel model"),
    ((2, 5), "ambiguous"),
    ((3000, 16), "neither axis is a channel count"),
    ((16, 16), "neither axis"),
])
def test_unclear_layouts_are_one_line_errors(sep, shape, expected):
    with pytest.raises(BadAudioError) as info:
        sep.separate(np.zeros(shape, np.float32), SR)
    text = str(info.value)
    assert expected in text and str(shape) in text and "\n" not in text
    if "ambiguous" in text:
        assert "layout='channels_first'" in text and "layout='channels_last'" in text


def test_explicit_layout(sep):
    tiny = np.array([[0.1, -0.2], [0.3, 0.05]], np.float32)
    first = sep.separate(tiny, SR, layout="channels_first")
    last = sep.separate(tiny, SR, layout="channels_last")
    assert first["drums"].shape == last["drums"].shape == (2, 2)
    assert torch.allclose(last["drums"], sep.separate(tiny.T, SR, layout="channels_first")["drums"].T)
    with pytest.raises(BadArgumentError, match="layout 'time_first': choose channels_first or channels_last"):
        sep.separate(tiny, SR, layout="time_first")


def test_bad_dtypes_and_empty_mixes(sep):
    with pytest.raises(BadAudioError, match="mix of dtype int64: expected float samples"):
        sep.separate(np.zeros((1000, 2), np.int64), SR)
    with pytest.raises(BadAudioError, match="mix of dtype bool"):
        sep.separate(torch.zeros(2, 1000, dtype=torch.bool), SR)
    with pytest.raises(BadAudioError, match="no samples"):
        sep.separate(np.zeros((0, 2), np.float32), SR)


@pytest.mark.parametrize("rate", [0, -44100, 44100.5, "44100", None, float("nan"), True])
def test_samplerate_must_be_a_positive_integer(sep, rate):
    with pytest.raises(BadArgumentError) as info:
        sep.separate(_mix(1000), rate)
    text = str(info.value)
    assert text == f"samplerate {rate!r}: must be a positive whole number of Hz (e.g. 44100)"
    assert isinstance(info.value, StemsepError) and isinstance(info.value, ValueError)


def test_whole_float_samplerate_is_accepted(sep):
    assert sep.separate(_mix(1000), 48000.0)["vocals"].shape == (1000, 2)
    assert sep.separate(_mix(1000), np.int64(22050))["vocals"].shape == (1000, 2)
