"""Stems of an input at another rate than the model's (the model runs at 44.1 kHz, the stems are
resampled back) have exactly the input's length in frames — files (`stemsep separate --keep-rate`,
whole and window by window, and `Separator.separate_file`) and tensors (`Separator.separate`) —
so `stemsep score` takes them against references of the input's length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers.recipes import save_tiny
from stemsep.cli import main
from stemsep.inference import Separator
from stemsep.inference.separate import separate_files

SOURCES = ["drums", "bass", "other", "vocals"]
CASES = [(48000, 48001), (48000, 96_007), (22050, 22_051), (32000, 12_345), (11025, 9_999)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("lengths") / "tiny.ckpt")


def _input(folder: Path, rate: int, frames: int) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(frames).uniform(-0.3, 0.3, (frames, 2)).astype(np.float32)
    path = folder / f"in{rate}_{frames}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype="FLOAT")
    return path, data


@pytest.mark.parametrize("rate, frames", CASES)
def test_cli_keep_rate_stems_are_as_long_as_the_input(ckpt, tmp_path, capsys, rate, frames):
    path, _ = _input(tmp_path, rate, frames)
    out = tmp_path / "kept"
    assert main(["separate", str(path), "--model", str(ckpt), "-o", str(out), "--keep-rate", "--device", "cpu"]) == 0
    for source in SOURCES:
        info = sf.info(out / path.stem / f"{source}.wav")
        assert (info.samplerate, info.frames) == (rate, frames), source
    # without --keep-rate: at the model's rate, the input's duration (soxr's length, rounded)
    assert main(["separate", str(path), "--model", str(ckpt), "-o", str(tmp_path / "model"), "--device", "cpu"]) == 0
    info = sf.info(tmp_path / "model" / path.stem / "drums.wav")
    assert (info.samplerate, info.frames) == (44100, round(frames * 44100 / rate))
    capsys.readouterr()


@pytest.mark.parametrize("rate, frames", [(48000, 96_007), (22050, 44_103)])
def test_windowed_keep_rate_stems_are_as_long_as_the_input(ckpt, tmp_path, rate, frames):
    path, _ = _input(tmp_path, rate, frames)
    for window, out in ((0.3, tmp_path / "windows"), (120.0, tmp_path / "whole")):
        separate_files(path, out, models=ckpt, keep_rate=True, device="cpu", window=window, shifts=0)
        assert sf.info(out / path.stem / "vocals.wav").frames == frames
    windowed, _ = sf.read(tmp_path / "windows" / path.stem / "vocals.wav")
    whole, _ = sf.read(tmp_path / "whole" / path.stem / "vocals.wav")
    assert np.array_equal(windowed, whole)


@pytest.mark.parametrize("rate, frames", CASES)
def test_separator_stems_are_as_long_as_the_input(ckpt, tmp_path, rate, frames):
    sep = Separator.from_checkpoint(ckpt, device="cpu", shifts=0)
    path, data = _input(tmp_path, rate, frames)
    assert all(s.shape == (frames, 2) for s in sep.separate(data, rate).values())
    assert all(s.shape == (2, frames) for s in sep.separate(data.T, rate).values())
    written = sep.separate_file(path, tmp_path / "api", keep_rate=True)
    assert {sf.info(p).frames for p in written.values()} == {frames}


def test_score_takes_keep_rate_stems_of_a_48k_track(ckpt, tmp_path, capsys):
    """The symptom users met: `stemsep score` refusing the stems of a 48 kHz track for their length."""
    rng = np.random.default_rng(5)
    refs = tmp_path / "refs" / "song"
    refs.mkdir(parents=True)
    stems = {s: rng.uniform(-0.2, 0.2, (48_001, 2)).astype(np.float32) for s in SOURCES}
    for source, data in stems.items():
        sf.write(refs / f"{source}.wav", data, 48000, subtype="FLOAT")
    sf.write(refs / "mixture.wav", sum(stems.values()), 48000, subtype="FLOAT")
    estimates = tmp_path / "estimates"
    assert main(["separate", str(refs / "mixture.wav"), "--model", str(ckpt), "-o", str(estimates),
                 "--keep-rate", "--device", "cpu"]) == 0
    assert sf.info(estimates / "song" / "drums.wav").frames == 48_001
    assert main(["score", "--references", str(refs.parent), "--estimates", str(estimates),
                 "-o", str(tmp_path / "scores"), "--metrics", "sdr"]) == 0, capsys.readouterr().err
    assert (tmp_path / "scores" / "song.json").is_file()
