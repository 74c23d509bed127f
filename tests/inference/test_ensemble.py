"""`combine` (every ensemble mode) against MSST's `ensemble.py` on music-like signals, and `stemsep ensemble`.

The fixture (tests/fixtures/msst_ensemble/ensemble.npz) holds MSST's own outputs for three tonal,
partly silent separations of one stem; tests/fixtures/make_msst_ensemble_fixture.py made it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import REPO
from stemsep.cli import main
from stemsep.errors import BadArgumentError
from stemsep.inference.ensemble import MODES, combine, ensemble_files

FIXTURE = np.load(REPO / "tests" / "fixtures" / "msst_ensemble" / "ensemble.npz")
STEMS, WEIGHTS = FIXTURE["stems"], list(FIXTURE["weights"])


def close(ours, expected) -> float:
    """max |ours - expected| relative to the expected signal's peak."""
    return float(np.abs(np.asarray(ours) - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_equals_msst(mode):
    weights = WEIGHTS if mode.startswith("avg_") else None
    ours = combine(STEMS, mode, weights)
    assert isinstance(ours, np.ndarray) and ours.shape == STEMS.shape[1:]
    assert close(ours, FIXTURE[mode]) <= 1e-4, mode


def test_equal_weights_and_even_medians():
    assert close(combine(STEMS, "avg_wave"), FIXTURE["avg_wave_equal"]) <= 1e-6
    # two models: numpy's median is the mean of both (torch.median would pick the lower one)
    assert close(combine(STEMS[:2], "median_wave"), FIXTURE["median_wave_even"]) <= 1e-6
    assert close(combine(STEMS[:2], "median_fft"), FIXTURE["median_fft_even"]) <= 1e-4


def test_silence_and_ties_follow_msst():
    # inside the silent gap every model gives exactly 0: every wave mode gives exactly 0 there
    gap = slice(int(0.3 * 16000) + 1, int(0.45 * 16000) - 1)
    for mode in ("avg_wave", "median_wave", "min_wave", "max_wave"):
        assert np.all(combine(STEMS, mode, WEIGHTS if mode == "avg_wave" else None)[:, gap] == 0.0)
    # min/max keep the sign of the chosen model's sample
    flipped = np.stack([STEMS[0], -2 * STEMS[0]])
    assert np.array_equal(combine(flipped, "max_wave"), -2 * STEMS[0])
    assert np.array_equal(combine(flipped, "min_wave"), STEMS[0])


def test_tensor_in_tensor_out_and_one_model_is_identity():
    stems = torch.from_numpy(STEMS)
    out = combine(stems, "avg_fft", WEIGHTS)
    assert isinstance(out, torch.Tensor) and out.dtype == stems.dtype
    assert close(out.numpy(), FIXTURE["avg_fft"]) <= 1e-4
    for mode in MODES:
        assert close(combine(STEMS[:1], mode), STEMS[0]) <= 1e-5, mode


@pytest.mark.parametrize("mode,weights,needle", [
    ("mean", None, "unknown ensemble mode 'mean'"),
    ("median_wave", [1, 2, 3], "--weights apply to avg_wave and avg_fft only"),
    ("avg_wave", [1, 2], "2 weight(s) for 3 input(s)"),
    ("avg_fft", [0, 0, 0], "positive sum"),
])
def test_bad_arguments_are_one_line(mode, weights, needle):
    with pytest.raises(BadArgumentError, match=None) as err:
        combine(STEMS, mode, weights)
    assert needle in str(err.value) and "\n" not in str(err.value)


def _write(path: Path, wav: np.ndarray, rate: int = 16000) -> Path:
    sf.write(path, wav.T, rate, subtype="FLOAT")
    return path


def test_cli_combines_files_as_msst(tmp_path, capsys):
    files = [str(_write(tmp_path / f"m{i}.wav", STEMS[i])) for i in range(3)]
    out = tmp_path / "out" / "vocals.wav"
    out.parent.mkdir()
    code = main(["ensemble", "--files", *files, "--type", "avg_fft", "--weights", *map(str, WEIGHTS), "-o", str(out)])
    assert code == 0
    wav, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 16000 and close(wav.T, FIXTURE["avg_fft"]) <= 1e-4
    assert [p.name for p in out.parent.iterdir()] == ["vocals.wav"]  # no temporary left


def test_files_at_another_rate_are_resampled(tmp_path):
    t = np.arange(16000) / 16000
    tone = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32) * 0.5
    t2 = np.arange(32000) / 32000
    tone2 = np.stack([np.sin(2 * np.pi * 440 * t2)] * 2).astype(np.float32) * 0.5
    out = ensemble_files([_write(tmp_path / "a.wav", tone), _write(tmp_path / "b.wav", tone2, 32000)],
                         tmp_path / "o.wav")
    wav, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 16000 and wav.shape == (16000, 2)
    inner = slice(1000, 15000)
    assert np.abs(wav.T[:, inner] - tone[:, inner]).max() < 1e-3


def test_cli_bad_files_are_one_line(tmp_path, capsys):
    a = _write(tmp_path / "a.wav", STEMS[0])
    short = _write(tmp_path / "short.wav", STEMS[1][:, :1000])
    cases = [([str(a), str(tmp_path / "missing.wav")], "missing.wav"),
             ([str(a), str(short)], "short.wav: 1000 samples")]
    for files, needle in cases:
        out = tmp_path / "o.wav"
        assert main(["ensemble", "--files", *files, "-o", str(out)]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("stemsep: error:") and needle in line, line
        assert not out.exists()


def test_a_resampled_file_a_sample_longer_is_fitted(tmp_path):
    """48006 samples at 48 kHz, separated at 44.1 kHz (44106) and resampled back: 48007 samples."""
    t = np.arange(48006) / 48000
    tone = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32) * 0.5
    t2 = np.arange(44106) / 44100
    tone2 = np.stack([np.sin(2 * np.pi * 440 * t2)] * 2).astype(np.float32) * 0.5
    out = ensemble_files([_write(tmp_path / "a.wav", tone, 48000), _write(tmp_path / "b.wav", tone2, 44100)],
                         tmp_path / "o.wav")
    wav, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == 48000 and wav.shape == (48006, 2)
