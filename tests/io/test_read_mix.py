"""stemsep.io.audio.read_mix: mixtures in any supported format, rate and channel count; one-line errors."""

from __future__ import annotations

import re
import struct
import warnings

import numpy as np
import pytest
import torch

from helpers.audio import tone, write_av, write_sf
from stemsep.errors import BadAudioError
from stemsep.io.audio import MIX_EXTENSIONS, DownmixWarning, iter_mix, probe_mix, read_mix, resample

SR = 16000


def test_lossless_and_resampled_reads(tmp_path):
    t = np.arange(22050) / 22050
    data = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 3000 * t)]).astype(np.float32)
    path = write_sf(tmp_path / "a.wav", data, 22050, "WAV", "FLOAT")
    mix = read_mix(path, 22050)
    assert mix.dtype == torch.float32 and torch.equal(mix, torch.from_numpy(data))
    up = read_mix(path, 44100)
    assert up.shape == (2, 44100)
    # soxr "VHQ": up and back down again is within 1e-3 away from the edges
    back = resample(up, 44100, 22050)
    assert back.shape == (2, 22050)
    assert (back - torch.from_numpy(data))[:, 100:-100].abs().max() < 1e-3
    assert probe_mix(path).samplerate == 22050 and probe_mix(path).frames == 22050


def test_mono_is_duplicated_and_surround_downmixed_with_a_note(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mono is duplicated silently
        mono = read_mix(write_sf(tmp_path / "m.flac", tone(0.5, SR, 1), SR, "FLAC", "PCM_24"), SR)
    assert mono.shape == (2, SR // 2) and torch.equal(mono[0], mono[1])
    six = tone(0.5, SR, 6)
    path = write_sf(tmp_path / "s.wav", six, SR, "WAV", "FLOAT")
    with pytest.warns(DownmixWarning) as caught:
        stereo = read_mix(path, SR)
    assert [str(w.message) for w in caught] == [f"{path}: 6 channels downmixed to stereo"]
    assert caught[0].filename == __file__  # points at the caller, not at io
    with pytest.warns(DownmixWarning, match=f"^{re.escape(str(path))}: 6 channels averaged to mono$"):
        assert read_mix(path, SR, 1).shape == (1, SR // 2)
    assert capsys.readouterr() == ("", "")  # io prints nothing: the note is the caller's to show
    # ITU coefficients normalised: left = (L + .707 C + .707 BL) / 2.414; LFE dropped
    left = (six[0] + 0.7071 * six[2] + 0.7071 * six[4]) / (1 + 2 * 0.7071)
    assert np.allclose(stereo[0].numpy(), left, atol=1e-6)


@pytest.mark.parametrize("name,write,frames", [
    ("a.mp3", lambda p, x: write_sf(p, x, SR, "MP3", "MPEG_LAYER_III"), SR),
    ("a.ogg", lambda p, x: write_sf(p, x, SR, "OGG", "VORBIS"), SR),
    ("a.opus", lambda p, x: write_sf(p, x, 48000, "OGG", "OPUS"), 48000),
    ("a.aiff", lambda p, x: write_sf(p, x, SR, "AIFF", "PCM_16"), SR),
    ("a.m4a", lambda p, x: write_av(p, [x], SR), SR),
    ("a.webm", lambda p, x: write_av(p, [x], 48000, codec="libopus", container="webm"), 48000),
    ("alac.m4a", lambda p, x: write_av(p, [x], SR, codec="alac", container="ipod"), SR),
], ids=lambda v: v if isinstance(v, str) else "")
def test_formats(tmp_path, name, write, frames):
    data = tone(1.0, frames)
    path = write(tmp_path / name, data)
    assert path.suffix in MIX_EXTENSIONS
    mix = read_mix(path, SR)
    slack = 2048 if name == "a.m4a" else 1  # AAC priming and last-frame padding (no edit list written)
    assert mix.shape[0] == 2 and abs(mix.shape[1] - SR) <= slack
    # the decoded tone correlates with the original (a lossy codec, not noise)
    ref = torch.from_numpy(resample(torch.from_numpy(data), frames, SR).numpy())
    n = min(ref.shape[1], mix.shape[1]) - 2048
    corr = max(torch.nn.functional.cosine_similarity(mix[0, k:k + n], ref[0, :n], dim=0) for k in (0, 1024, 1792, 2048)
               if k + n <= mix.shape[1])
    assert corr > 0.9


def test_stem_mp4_reads_the_mixture_stream(tmp_path):
    streams = [tone(1.0, SR, seed=s) * (1.0 if s == 0 else 0.1) for s in range(5)]
    path = write_av(tmp_path / "track.stem.mp4", streams, SR, container="mp4")
    mix = read_mix(path, SR)
    assert mix.shape[0] == 2 and abs(mix.shape[1] - SR) <= 2048
    assert mix.abs().max() > 0.2  # the loud first stream, not a quiet stem


def _bad_files(tmp_path):
    full = write_sf(tmp_path / "full.wav", tone(2.0, SR), SR, "WAV", "PCM_16").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(full[:len(full) // 2])
    m4a = write_av(tmp_path / "full.m4a", [tone(2.0, SR)], SR).read_bytes()
    (tmp_path / "truncated.m4a").write_bytes(m4a[:len(m4a) // 2])
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "empty.m4a").write_bytes(b"")
    write_sf(tmp_path / "zero-frames.wav", tone(0.0, SR), SR, "WAV", "PCM_16")
    (tmp_path / "notes.mp3").write_text("not audio\n" * 50)
    codec = bytearray(full)
    codec[20:22] = struct.pack("<H", 0x1234)  # a WAVE format tag nobody decodes
    (tmp_path / "codec.wav").write_bytes(bytes(codec))
    return {
        "truncated.wav": "decoding stopped at 1.00 s of the 2.00 s",
        "truncated.m4a": "not a readable audio file",
        "empty.wav": "not a readable audio file",
        "empty.m4a": "not a readable audio file",
        "zero-frames.wav": "audio is empty",
        "notes.mp3": "not a readable audio file",
        "codec.wav": "unsupported audio codec",
    }


BAD = ["truncated.wav", "truncated.m4a", "empty.wav", "empty.m4a", "zero-frames.wav", "notes.mp3", "codec.wav"]


@pytest.mark.parametrize("name", BAD)
def test_bad_files_give_one_line_errors_naming_them(tmp_path, name):
    expected = _bad_files(tmp_path)[name]
    with pytest.raises(BadAudioError) as err:
        read_mix(tmp_path / name, SR)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / name}: ") and expected in message, message


def test_missing_file(tmp_path):
    with pytest.raises(BadAudioError, match="file not found"):
        read_mix(tmp_path / "nope.m4a", SR)


def test_iter_mix_records_the_note_for_its_caller_or_warns_once(tmp_path, capsys):
    """Streamed: the downmix note goes to ``info["note"]`` (the caller prints it), once per file; without
    ``info`` it is one DownmixWarning, not one per block."""
    path = write_sf(tmp_path / "s.flac", tone(1.0, SR, 6), SR, "FLAC", "PCM_24")
    info: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # recorded, not warned
        blocks = list(iter_mix(path, SR, 2, block=3000, info=info))
    assert len(blocks) > 1 and info["note"] == f"{path}: 6 channels downmixed to stereo"
    assert info["frames"] == SR and info["samplerate"] == SR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = list(iter_mix(path, SR, 2, block=3000))
    assert [str(w.message) for w in caught if w.category is DownmixWarning] == [info["note"]]
    assert all(np.array_equal(a, b) for a, b in zip(blocks, again, strict=True))
    stereo = write_sf(tmp_path / "two.wav", tone(0.5, SR), SR, "WAV", "FLOAT")
    plain: dict = {}
    list(iter_mix(stereo, SR, 2, info=plain))
    assert "note" not in plain
    assert capsys.readouterr() == ("", "")
