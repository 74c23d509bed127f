"""`stemsep score` reads estimates and references in any format io.audio reads: MP3/FLAC/WAV estimates,
estimates at another rate, and MUSDB18 ``.stem.mp4`` references (made here with PyAV)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers.stem_mp4 import write_stem_mp4
from stemsep.cli import main
from stemsep.io.audio import STEM_MP4_STREAMS, read_stream, write_audio

SR = 44100
SOURCES = ["drums", "bass", "other", "vocals"]
FREQS = {"drums": 110.0, "bass": 55.0, "other": 440.0, "vocals": 880.0}


def _references(seconds: float = 2.0) -> dict[str, np.ndarray]:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    return {s: np.stack([0.15 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(t.shape),
                         0.1 * np.sin(2 * np.pi * f * t + 1) + 0.01 * rng.standard_normal(t.shape)]).astype(np.float32)
            for s, f in FREQS.items()}


def _write(path: Path, wav: np.ndarray, samplerate: int = SR) -> Path:
    """WAV/FLAC through stemsep's writer, MP3 through libsndfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp3":
        sf.write(str(path), wav.T, samplerate, format="MP3", subtype="MPEG_LAYER_III")
        return path
    return write_audio(path, wav, samplerate, bits=24)


def _sdr(out: Path, track: str) -> dict[str, float]:
    record = json.loads((out / f"{track}.json").read_text())
    return {t["name"]: float(np.nanmedian([f["metrics"]["SDR"] for f in t["frames"]])) for t in record["targets"]}


def _score(refs: Path, ests: Path, out: Path, capsys) -> None:
    assert main(["score", "--references", str(refs), "--estimates", str(ests), "-o", str(out),
                 "--metrics", "sdr"]) == 0
    capsys.readouterr()


def test_score_mp3_flac_and_resampled_estimates(tmp_path, capsys):
    refs = _references()
    for source, wav in refs.items():
        _write(tmp_path / "refs" / "song" / f"{source}.wav", wav)
    est = tmp_path / "est" / "song"
    _write(est / "drums.mp3", refs["drums"])
    _write(est / "bass.flac", refs["bass"])
    _write(est / "other.mp3", refs["other"])
    import soxr  # an estimate written at 22.05 kHz is resampled to the references' rate

    _write(est / "vocals.wav", soxr.resample(refs["vocals"].T, SR, 22050, quality="VHQ").T.copy(), 22050)
    _score(tmp_path / "refs", tmp_path / "est", tmp_path / "scores", capsys)
    sdr = _sdr(tmp_path / "scores", "song")
    assert sdr["bass"] > 60  # FLAC 24-bit: lossless but for the quantisation
    assert sdr["drums"] > 15 and sdr["other"] > 15 and sdr["vocals"] > 15  # MP3 and resampled: close
    # a swapped estimate scores low: the files are read as the sources they name
    (est / "drums.mp3").unlink()
    _write(est / "drums.mp3", refs["other"])
    _score(tmp_path / "refs", tmp_path / "est", tmp_path / "scores", capsys)
    assert _sdr(tmp_path / "scores", "song")["drums"] < 0


def test_score_against_stem_mp4_references(tmp_path, capsys):
    """References straight from MUSDB18 ``.stem.mp4`` files (stream k is source k); estimates in MP3."""
    pytest.importorskip("av")
    refs = _references()
    path = write_stem_mp4(tmp_path / "musdb18" / "test" / "Artist - Song.stem.mp4",
                          [sum(refs.values()), *(refs[s] for s in SOURCES)], SR)
    decoded = {s: read_stream(path, STEM_MP4_STREAMS[s])[0].numpy() for s in SOURCES}
    for source in SOURCES:  # estimates: the decoded references through MP3, and one swapped
        _write(tmp_path / "est" / "Artist - Song" / f"{source}.mp3", decoded["bass" if source == "drums" else source])
    _score(tmp_path / "musdb18", tmp_path / "est", tmp_path / "scores", capsys)
    sdr = _sdr(tmp_path / "scores", "Artist - Song")
    assert list(sdr) == SOURCES
    assert sdr["bass"] > 15 and sdr["other"] > 15 and sdr["vocals"] > 15
    assert sdr["drums"] < 0  # it holds the bass: the streams are read as the sources they are


def test_two_formats_of_one_stem_are_an_error(tmp_path, capsys):
    refs = _references(0.5)
    for source, wav in refs.items():
        _write(tmp_path / "refs" / "song" / f"{source}.wav", wav)
        _write(tmp_path / "est" / "song" / f"{source}.flac", wav)
    _write(tmp_path / "est" / "song" / "vocals.mp3", refs["vocals"])
    assert main(["score", "--references", str(tmp_path / "refs"), "--estimates", str(tmp_path / "est")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "2 files for stem 'vocals'" in err and "vocals.flac" in err and "vocals.mp3" in err
