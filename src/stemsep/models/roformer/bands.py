"""Band split and mask estimation of the band-split RoFormers, and the mel band layout.

The complex STFT ``(freq * channel, real/imag)`` of one frame is cut into bands of
consecutive values; each band gets its own RMSNorm + linear projection to a ``dim``-wide token
(:class:`BandSplit`), and per stem an MLP with a GLU output maps each band's final token back to
that band's complex mask values (:class:`MaskEstimator`). Parameter names follow bs-roformer
0.5.x: ``to_features.<band>.{0: norm, 1: linear}``, ``to_freqs.<band>.0.<layer>``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from stemsep.models.roformer.transformer import RMSNorm


class BandSplit(nn.Module):
    """``(B, T, sum(dim_inputs)) -> (B, T, bands, dim)``."""

    def __init__(self, dim: int, dim_inputs: Sequence[int]):
        super().__init__()
        self.dim_inputs = tuple(int(d) for d in dim_inputs)
        self.to_features = nn.ModuleList(nn.Sequential(RMSNorm(d), nn.Linear(d, dim)) for d in self.dim_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.split(self.dim_inputs, dim=-1)
        return torch.stack([project(band) for band, project in zip(bands, self.to_features, strict=True)], dim=-2)


def mlp(dim_in: int, dim_out: int, dim_hidden: int, hidden_layers: int) -> nn.Sequential:
    """``hidden_layers`` tanh layers of width ``dim_hidden`` then a linear output layer."""
    dims = (dim_in, *(dim_hidden,) * hidden_layers, dim_out)
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(size_in, size_out))
        if index < len(dims) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """``(B, T, bands, dim) -> (B, T, sum(dim_inputs))``: one MLP + GLU per band.

    ``hidden_layers`` hidden layers of width ``dim * mlp_expansion_factor`` (BS-RoFormer uses
    ``mask_estimator_depth - 1``, Mel-Band RoFormer ``mask_estimator_depth``, as their references).
    """

    def __init__(self, dim: int, dim_inputs: Sequence[int], hidden_layers: int, mlp_expansion_factor: int = 4):
        super().__init__()
        self.dim_inputs = tuple(int(d) for d in dim_inputs)
        hidden = dim * mlp_expansion_factor
        self.to_freqs = nn.ModuleList(nn.Sequential(mlp(dim, 2 * d, hidden, hidden_layers), nn.GLU(dim=-1))
                                      for d in self.dim_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.unbind(dim=-2)
        return torch.cat([estimate(band) for band, estimate in zip(bands, self.to_freqs, strict=True)], dim=-1)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def mel_band_layout(samplerate: int, n_fft: int, num_bands: int) -> torch.Tensor:
    """Which STFT bins each mel band covers: bool ``(num_bands, n_fft // 2 + 1)``.

    The support of ``num_bands`` triangular filters equally spaced on Slaney's mel scale from
    0 Hz to Nyquist (the filter bank of ``librosa.filters.mel`` with its defaults, which the
    reference uses), with the first bin forced into the first band and the last bin into the
    last one (as the reference does) so that every bin is covered. Neighbouring bands overlap.
    """
    bins = n_fft // 2 + 1
    fft_freqs = np.arange(bins) * (1.0 / (n_fft * (1.0 / samplerate)))
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(samplerate / 2.0), num_bands + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)  # librosa's float32 filters,
    weights = (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)  # area-normalised
    layout = torch.from_numpy(weights > 0)
    layout[0, 0] = True
    layout[-1, -1] = True
    return layout
