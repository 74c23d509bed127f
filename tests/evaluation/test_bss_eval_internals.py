"""BSS-eval internals that need no oracle (so they run without ffmpeg): lag correlations against
plain sums, thread independence, chunked frames, framing, the block-Toeplitz solver, aggregation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from stemsep.evaluation.bss_eval import bss_eval, frame_starts, track_correlations, window_correlations
from stemsep.evaluation.metrics import BSSEval, BSSEvalSDR, nanmedian
from stemsep.evaluation.solver import dense_block_toeplitz, solve_block_toeplitz


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
