"""Spectrogram pictures as RGB arrays with numpy alone (no plotting library).

:func:`spectrogram_grid` lays out one row per source, the reference on the left and the
estimate on the right, each a log-magnitude STFT (low frequencies at the bottom) on the same
dB scale, coloured with a small perceptual-ish colour map interpolated from fixed anchors.
"""

from __future__ import annotations

import numpy as np

# Dark blue -> purple -> orange -> pale yellow (anchor colours of a magma-like map).
_ANCHORS = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
                    dtype=np.float64)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to ``uint8`` RGB, shape ``values.shape + (3,)``."""
    position = np.clip(values, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (position - low)[..., None]
    return np.round(_ANCHORS[low] * (1 - frac) + _ANCHORS[low + 1] * frac).astype(np.uint8)


def log_magnitude(wav: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    """dB magnitude of the channel-mean of ``wav`` (``(channels, time)``), ``(freq, frames)``."""
    mono = np.asarray(wav, dtype=np.float64).reshape(-1, np.shape(wav)[-1]).mean(0)
    if mono.shape[0] < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.shape[0]))
    frames = 1 + (mono.shape[0] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(mono[index] * np.hanning(n_fft), axis=1)).T
    return 20 * np.log10(spectrum + 1e-8)


def spectrogram_grid(references: np.ndarray, estimates: np.ndarray, *, n_fft: int = 512, hop: int = 256,
                     dynamic_range: float = 80.0, gap: int = 4) -> np.ndarray:
    """``(sources, channels, time)`` twice -> ``uint8`` image ``(height, width, 3)``.

    Rows: sources in order; columns: reference, estimate. Every panel shares one dB scale
    (the loudest bin of the references at the top, ``dynamic_range`` dB below it at black).
    """
    panels = [[log_magnitude(ref, n_fft, hop), log_magnitude(est, n_fft, hop)]
              for ref, est in zip(references, estimates, strict=True)]
    top = max(row[0].max() for row in panels)
    rows = []
    for ref, est in panels:
        pair = [colorize((panel[::-1] - (top - dynamic_range)) / dynamic_range) for panel in (ref, est)]
        separator = np.full((pair[0].shape[0], gap, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([pair[0], separator, pair[1]], axis=1))
    spacer = np.full((gap, rows[0].shape[1], 3), 255, dtype=np.uint8)
    stacked = [part for row in rows for part in (row, spacer)][:-1]
    return np.ascontiguousarray(np.concatenate(stacked, axis=0))
