"""BSS-eval v4 in torch against museval (the oracle), block-Toeplitz solver, aggregation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from helpers import require_museval
from helpers.bss_signals import museval_bss_eval
from stemsep.evaluation.bss_eval import bss_eval, frame_starts, track_correlations, window_correlations
from stemsep.evaluation.metrics import BSSEval, BSSEvalSDR, nanmedian
from stemsep.evaluation.solver import dense_block_toeplitz, solve_block_toeplitz

SR = 44100
museval = require_museval()


def _signals(case: int) -> tuple[np.ndarray, np.ndarray]:
    """Five varied (references, estimates) pairs, 4 s at 44.1 kHz."""
    rng = np.random.default_rng(case)
    n = 4 * SR + 1234
    t = np.arange(n) / SR
    if case == 0:  # white noise sources, leakage and noise
        refs = rng.standard_normal((2, 2, n)) * 0.3
        ests = refs + 0.3 * refs[::-1] + 0.05 * rng.standard_normal(refs.shape)
    elif case == 1:  # coloured (integrated) noise, 3 sources: ill-conditioned Gram matrix
        refs = np.cumsum(rng.standard_normal((3, 2, n)), axis=-1) * 0.01
        refs -= refs.mean(axis=-1, keepdims=True)
        ests = 0.8 * refs + 0.1 * np.roll(refs, 1, axis=0) + 0.02 * rng.standard_normal(refs.shape)
    elif case == 2:  # harmonic tones with vibrato and a filtered estimate (spatial distortion)
        f0 = np.array([110.0, 440.0])[:, None, None]
        phase = 2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * 5 * t)
        refs = sum(np.sin(h * phase) / h for h in range(1, 6)) * np.array([[[1.0], [0.6]], [[0.5], [1.0]]])
        refs = refs + 0.01 * rng.standard_normal(refs.shape)
        ests = refs + 0.5 * np.roll(refs, 7, axis=-1) + 0.2 * refs[::-1]
    elif case == 3:  # mono stems stored as stereo (linearly dependent channels), gated
        mono = rng.standard_normal((2, 1, n)) * (np.sin(2 * np.pi * 1.3 * t) > -0.5)
        refs = np.repeat(mono, 2, axis=1) * 0.2
        ests = refs + 0.4 * refs[::-1] + 0.1 * rng.standard_normal(refs.shape)
    else:  # four sources, mono channel layout, decaying envelopes
        env = np.exp(-((t * np.array([1, 2, 3, 4])[:, None]) % 1.0) * 4)[:, None]
        refs = rng.standard_normal((4, 1, n)) * env * 0.3
        ests = refs + 0.2 * refs[[1, 2, 3, 0]] + 0.05 * rng.standard_normal(refs.shape)
    return refs, ests


@pytest.fixture(scope="module", params=range(5))
def case(request):
    refs, ests = _signals(request.param)
    expected = museval_bss_eval(refs, ests, window=SR, hop=SR)
    got = bss_eval(torch.from_numpy(ests), torch.from_numpy(refs), samplerate=SR)
    return expected, got


def test_medians_match_museval_within_001_db(case):
    expected, got = case
    for name in ("sdr", "isr", "sir", "sar"):
        theirs = np.nanmedian(expected[name], axis=1)
        ours = nanmedian(got[name], dim=-1).numpy()
        assert np.all(np.abs(theirs - ours) <= 0.01), (name, theirs, ours)
        # and frame by frame
        assert np.allclose(got[name].numpy(), expected[name], atol=0.01, equal_nan=True), name


def test_sdr_only_path_is_framewise_snr():
    refs, ests = (torch.from_numpy(x) for x in _signals(0))
    cheap = bss_eval(ests, refs, metrics=("sdr",))
    assert set(cheap) == {"sdr"}
    full = bss_eval(ests, refs, metrics=("sdr", "sar"))
    assert torch.equal(cheap["sdr"], full["sdr"])
    first = slice(0, SR)
    snr = 10 * torch.log10((refs[..., first] ** 2).sum((1, 2)) / ((ests - refs)[..., first] ** 2).sum((1, 2)))
    assert torch.allclose(cheap["sdr"][:, 0], snr)


def test_silent_frames_and_short_tracks_followmuseval_bss_eval():
    """NaN frames (a silent reference or estimate source), +inf for a perfect frame, one frame
    for a track shorter than the window. Small rate and filters keep museval fast here."""
    rng = np.random.default_rng(5)
    sr = 2000
    refs = rng.standard_normal((3, 2, int(5.5 * sr)))
    ests = refs + 0.5 * rng.standard_normal(refs.shape)
    refs[0, :, 2 * sr:3 * sr] = 0                 # silent reference in frame 2
    ests[1, 0, 3 * sr:4 * sr] = 1.0               # channel sum is zero in frame 3
    ests[1, 1, 3 * sr:4 * sr] = -1.0
    ests[2, :, 4 * sr:5 * sr] = refs[2, :, 4 * sr:5 * sr]  # perfect estimate in frame 4: SDR +inf
    expected = museval_bss_eval(refs, ests, window=sr, hop=sr, filters_len=32)
    got = bss_eval(torch.from_numpy(ests), torch.from_numpy(refs), samplerate=sr, filter_length=32)
    assert got["sdr"].shape == (3, 5)
    # A perfect frame: SDR is +inf here; museval's projections leave rounding noise (~360 dB).
    assert math.isinf(got["sdr"][2, 4].item()) and expected["sdr"][2, 4] > 300
    got["sdr"][2, 4] = expected["sdr"][2, 4] = 0
    for name in ("sdr", "isr", "sir", "sar"):
        assert np.array_equal(np.isnan(got[name].numpy()), np.isnan(expected[name])), name
        assert np.allclose(got[name].numpy(), expected[name], atol=0.01, equal_nan=True), name
    short = bss_eval(torch.from_numpy(ests[..., :sr // 2]), torch.from_numpy(refs[..., :sr // 2]),
                     samplerate=sr, filter_length=32)
    theirs = museval_bss_eval(refs[..., :sr // 2], ests[..., :sr // 2], window=sr, hop=sr, filters_len=32)
    assert short["sar"].shape == (3, 1)
    assert np.allclose(short["sar"].numpy(), theirs["sar"], atol=0.01)


def test_track_and_window_correlations_are_direct_sums():
    """Window lag correlations (blocks, cut at the window end) and the whole track's (windows
    plus the pairs straddling cuts) equal the plain sums, for tiling and overlapping frames."""
    torch.manual_seed(3)
    length, lags, window = 12000, 40, 5000  # windows of several FFT blocks
    refs, ests = torch.randn(4, length, dtype=torch.float64), torch.randn(4, length, dtype=torch.float64)
    signals = torch.cat([refs, ests])

    def direct(lo: int, hi: int) -> torch.Tensor:
        x, r = signals[:, lo:hi], refs[:, lo:hi]
        return torch.stack([x[:, m:] @ r[:, :hi - lo - m].T for m in range(lags)], dim=-1)

    track, frames = track_correlations(refs, ests, [0, 5000], window, lags)
    assert torch.allclose(track, direct(0, length), atol=1e-9)
    assert torch.allclose(frames, torch.stack([direct(0, 5000), direct(5000, 10000)]), atol=1e-9)
    short, _ = track_correlations(refs, ests, [0, 30, 60], 30, lags)  # windows shorter than the lags
    assert torch.allclose(short, direct(0, length), atol=1e-9)
    overlapping = [0, 2500, 5000, 7000]
    assert track_correlations(refs, ests, overlapping, window, lags)[1] is None  # computed by chunks
    expected = torch.stack([direct(s, s + window) for s in overlapping])
    assert torch.allclose(window_correlations(refs, ests, overlapping, window, lags), expected, atol=1e-9)



def test_window_correlations_of_float32_strided_rows_and_a_cut_window():
    """Rows that are strided views of float32 tensors (read in place, block by block) and a
    window running past the track's end (cut there) give the plain sums, in float64."""
    torch.manual_seed(5)
    both = torch.randn(3, 2, 9000)
    refs, ests = both[:, 0], both[:, 1]
    window, lags, starts = 4000, 30, [0, 3100, 7000]
    got = window_correlations(refs, ests, starts, window, lags)
    signals, r = torch.cat([refs, ests]).double(), refs.double()
    for i, s in enumerate(starts):
        size = min(9000, s + window) - s
        x, ref = signals[:, s:s + size], r[:, s:s + size]
        expected = torch.stack([x[:, m:] @ ref[:, :size - m].T for m in range(lags)], dim=-1)
        assert got.dtype == torch.float64 and torch.allclose(got[i], expected, atol=1e-9)


def test_values_do_not_depend_on_the_number_of_threads():
    """Windows shared among threads give bit-identical metrics to one thread (each window's
    work is the same whichever thread does it; an uneven split included)."""
    torch.manual_seed(6)
    refs = torch.randn(2, 2, 70 * 1000 + 321, dtype=torch.float64)
    ests = refs + 0.3 * refs.flip(0) + 0.1 * torch.randn_like(refs)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = bss_eval(ests, refs, samplerate=1000, filter_length=64)
        torch.set_num_threads(3)
        three = bss_eval(ests, refs, samplerate=1000, filter_length=64)
    finally:
        torch.set_num_threads(threads)
    assert one["sdr"].shape == (2, 70)
    for name in one:
        assert torch.equal(one[name], three[name]), name


def test_frames_computed_by_chunks_when_too_many_to_keep(monkeypatch):
    from stemsep.evaluation import bss_eval as bsseval

    torch.manual_seed(4)
    refs = torch.randn(2, 2, 5500, dtype=torch.float64)
    ests = refs + 0.3 * torch.randn_like(refs)
    kept = bss_eval(ests, refs, samplerate=1000, filter_length=16)
    monkeypatch.setattr(bsseval, "_KEPT_FRAMES_BYTES", 0)
    monkeypatch.setattr(bsseval, "_WINDOWS_PER_CHUNK", 2)
    chunked = bss_eval(ests, refs, samplerate=1000, filter_length=16)
    for name in ("isr", "sir", "sar"):
        assert chunked[name].shape == (2, 5)
        assert torch.allclose(chunked[name], kept[name], atol=1e-9), name


def test_overlapping_frames_followmuseval_bss_eval():
    rng = np.random.default_rng(2)
    sr = 1000
    refs = rng.standard_normal((2, 2, 4 * sr))
    ests = refs + 0.3 * refs[::-1] + 0.2 * rng.standard_normal(refs.shape)
    expected = museval_bss_eval(refs, ests, window=sr, hop=sr // 2, filters_len=24)
    got = bss_eval(torch.from_numpy(ests), torch.from_numpy(refs), samplerate=sr, hop=0.5, filter_length=24)
    for name in ("sdr", "isr", "sir", "sar"):
        assert got[name].shape == expected[name].shape == (2, 7)
        assert np.allclose(got[name].numpy(), expected[name], atol=0.01), name


def test_frame_starts_likemuseval_bss_eval():
    assert frame_starts(5 * 100 + 50, 100, 100) == ([0, 100, 200, 300, 400], 100)
    assert frame_starts(50, 100, 100) == ([0], 50)
    assert frame_starts(400, 200, 100) == ([0, 100, 200], 200)


@pytest.mark.parametrize(("k", "lags", "batch"), [(1, 40, ()), (3, 24, (2,))])
def test_block_levinson_matches_dense_solve(k, lags, batch):
    torch.manual_seed(k)
    signal = torch.randn(*batch, k, 2000, dtype=torch.float64).cumsum(-1)  # correlated
    blocks = torch.stack([signal[..., m:] @ signal[..., :2000 - m].transpose(-1, -2) for m in range(lags)],
                         dim=-3)
    rhs = torch.randn(*batch, lags, k, 2, dtype=torch.float64)
    ours = solve_block_toeplitz(blocks, rhs)
    dense = torch.linalg.solve(dense_block_toeplitz(blocks), rhs.reshape(*batch, lags * k, 2))
    assert torch.allclose(ours.reshape(dense.shape), dense, rtol=1e-7, atol=1e-9 * dense.abs().max())


def test_metric_aggregates_median_of_track_medians():
    torch.manual_seed(0)
    sr = 1000
    refs = torch.randn(3, 2, 2, 4 * sr)
    noise = torch.rand(3, 2, 1, 1) * torch.randn(3, 2, 2, 4 * sr)
    metric = BSSEvalSDR(num_sources=2, samplerate=sr)
    metric.update(refs[:2] + noise[:2], refs[:2])
    metric.update(refs[2] + noise[2], refs[2])  # one track without batch dim
    per_track = torch.stack([nanmedian(bss_eval(refs[i] + noise[i], refs[i], samplerate=sr)["sdr"])
                             for i in range(3)])
    assert torch.allclose(metric.compute().double(), per_track.median(dim=0).values, atol=1e-5)
    full = BSSEval(num_sources=2, samplerate=sr, metrics=("sdr", "sir"))
    full.update(refs[:2] + noise[:2], refs[:2])
    values = full.compute()
    assert set(values) == {"sdr", "sir"} and values["sir"].shape == (2,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics: compute before update
        assert torch.isnan(BSSEvalSDR(num_sources=2).compute()).all()


def test_nanmedian_like_numpy():
    x = torch.tensor([[1.0, float("nan"), 3.0, 10.0], [float("nan")] * 4, [4.0, 2.0, 1.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.nanmedian(x.numpy(), axis=1)
    assert np.allclose(nanmedian(x).numpy(), expected, equal_nan=True)


def test_bad_shapes():
    with pytest.raises(ValueError):
        bss_eval(torch.zeros(2, 2, 10), torch.zeros(2, 2, 11))
    with pytest.raises(ValueError):
        bss_eval(torch.zeros(2, 2, 10), torch.zeros(2, 2, 10), metrics=("snr",))
