"""Pitch and tempo: :class:`Repitch` (demucs' repitch augmentation) and the DSP behind it,
:func:`repitch` and :func:`time_stretch` (WSOLA as ``soundstretch`` does, or a phase-locked phase
vocoder, then band-limited resampling)."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
import torchaudio.functional as AF

from stemsep.data.augment.base import Augmentation, _uniform
from stemsep.data.augment.stembatch import StemBatch
from stemsep.data.augment.wsola import wsola
from stemsep.errors import StemsepError


class Repitch(Augmentation):
    """With probability ``proba`` per example, change pitch and tempo of all its stems.

    Pitch moves by a whole number of semitones in [-max_pitch, max_pitch]; tempo by a
    Gaussian percentage (std ``tempo_std``) clipped to ±``max_tempo`` (as demucs). The same
    change applies to every stem of the example, so mixtures stay coherent. ``method``:
    ``wsola`` (default; one set of cuts for all stems and channels) or ``vocoder`` (see
    :func:`repitch`).
    """

    def __init__(self, proba: float = 0.2, max_pitch: int = 2, max_tempo: float = 12.0,
                 tempo_std: float = 5.0, method: str = "wsola", n_fft: int = 2048, hop: int = 512):
        if method not in ("wsola", "vocoder"):
            raise StemsepError(f"Repitch: method must be 'wsola' or 'vocoder', got {method!r}")
        self.proba, self.max_pitch = float(proba), int(max_pitch)
        self.max_tempo, self.tempo_std = float(max_tempo), float(tempo_std)
        self.method, self.n_fft, self.hop = method, int(n_fft), int(hop)

    def input_length(self, length: int) -> int:
        return int(math.ceil(length * (1 + self.max_tempo / 100))) + 1

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        sources, channels, time = batch.sources, batch.channels, batch.length
        out_length = int(time / (1 + self.max_tempo / 100))
        for b in range(batch.batch):
            if _uniform((1,), generator).item() >= self.proba:
                continue
            semitones = int(torch.randint(-self.max_pitch, self.max_pitch + 1, (1,), generator=generator))
            tempo = float(torch.randn((1,), generator=generator)) * self.tempo_std
            tempo = min(max(tempo, -self.max_tempo), self.max_tempo)
            changed = repitch(batch.example(b).reshape(sources * channels, time), semitones, 1 + tempo / 100,
                              method=self.method, n_fft=self.n_fft, hop=self.hop, length=out_length)
            batch.set_example(b, _fit(changed, out_length).reshape(sources, channels, out_length))
        batch.length = out_length
        return batch


def _fit(wav: torch.Tensor, length: int) -> torch.Tensor:
    if wav.shape[-1] >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


def repitch(wav: torch.Tensor, semitones: float, tempo: float, *, method: str = "wsola", n_fft: int = 2048,
            hop: int = 512, length: int | None = None) -> torch.Tensor:
    """Shift ``wav (..., T)`` by ``semitones`` and play it ``tempo`` times faster.

    A time stretch by ``tempo / f`` (``f = 2**(semitones/12)``) -- ``wsola``
    (:func:`stemsep.data.augment.wsola.wsola`, one cut for all rows, cheap) or ``vocoder``
    (:func:`time_stretch`, per row) -- then band-limited resampling by ``f`` raises pitch and
    tempo together by ``f``. The output
    has about ``T / tempo`` samples; with ``length``, only the input needed for the first
    ``length`` output samples is processed (the output may then be shorter than ``T / tempo``).
    """
    factor = _pitch_fraction(semitones)
    rate = tempo / float(factor)
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1]).float()
    if length is not None:  # the vocoder and resampler look ahead at most n_fft + the filter width
        flat = flat[:, : int(math.ceil(length * tempo)) + 2 * n_fft]
    if abs(rate - 1) > 1e-6:
        if method == "wsola":
            flat = wsola(flat, rate, frame=n_fft)
        elif method == "vocoder":
            flat = time_stretch(flat, rate, n_fft=n_fft, hop=hop)
        else:
            raise StemsepError(f"repitch method must be 'wsola' or 'vocoder', got {method!r}")
    if factor != 1:
        flat = AF.resample(flat, factor.numerator, factor.denominator)
    return flat.reshape(*shape[:-1], flat.shape[-1]).to(wav.dtype)


def _pitch_fraction(semitones: float, cents: float = 0.5) -> Fraction:
    """Smallest-denominator ratio within ``cents`` of ``2**(semitones/12)``.

    Resampling cost grows with the terms of the ratio (e.g. 55/49 for +2 semitones,
    71/67 for +1), so a 0.5-cent approximation keeps it cheap and inaudible.
    """
    exact = 2 ** (semitones / 12)
    for den in range(1, 1000):
        num = max(1, round(exact * den))
        if abs(1200 * math.log2(num / den / exact)) < cents:
            return Fraction(num, den)
    return Fraction(exact).limit_denominator(1000)


@functools.lru_cache(maxsize=8)
def _window(n_fft: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(n_fft, dtype=dtype)


def time_stretch(wav: torch.Tensor, rate: float, *, n_fft: int = 2048, hop: int = 512) -> torch.Tensor:
    """Play ``wav (N, T)`` ``rate`` times faster without changing pitch (phase-locked vocoder).

    Standard phase vocoder (magnitudes interpolated between analysis frames, phases advanced
    by each bin's measured instantaneous frequency) with identity phase locking (Laroche &
    Dolson): each bin keeps its analysed phase offset to the nearest spectral peak, which keeps
    partials coherent and transients sharper than a plain vocoder.
    """
    window = _window(n_fft, wav.dtype).to(wav.device)
    length = wav.shape[-1]
    spec = torch.stft(wav, n_fft, hop, window=window, return_complex=True, center=True)  # (N, F, M)
    frames = spec.shape[-1]
    steps = torch.arange(0, frames - 1, rate, dtype=torch.float64, device=wav.device)
    index = steps.floor().long()
    alpha = (steps - index).to(wav.dtype)[None, None]
    magnitudes, angles = spec.abs(), spec.angle()
    left, right = angles[..., index], angles[..., index + 1]
    magnitude = torch.lerp(magnitudes[..., index], magnitudes[..., index + 1], alpha)
    omega = torch.linspace(0, math.pi * hop, spec.shape[-2], dtype=wav.dtype, device=wav.device)[None, :, None]
    delta = right - left - omega
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi)) + omega
    phase = torch.cat([angles[..., :1], angles[..., :1] + delta[..., :-1].cumsum(-1)], dim=-1)
    # Identity phase locking: bins follow the vocoder phase of their region's peak.
    peak = _nearest_peak(magnitude)
    analysed = torch.where(alpha < 0.5, left, right)
    phase = phase.gather(1, peak) + analysed - analysed.gather(1, peak)
    stretched = torch.polar(magnitude, phase)
    out_length = int(round(length / rate))
    return torch.istft(stretched, n_fft, hop, window=window, center=True, length=out_length)


def _nearest_peak(magnitude: torch.Tensor) -> torch.Tensor:
    """For each bin, the index of the closest local magnitude maximum (``(N, F, M)`` longs)."""
    n, bins, frames = magnitude.shape
    rows = magnitude.transpose(1, 2).reshape(n * frames, 1, bins)  # bins last: fast scans
    is_peak = (rows >= torch.nn.functional.max_pool1d(rows, 5, 1, 2))[:, 0]
    position = torch.arange(bins, device=magnitude.device).expand_as(is_peak)
    big = bins * 4
    left = torch.where(is_peak, position, -big).cummax(1).values
    right = torch.where(is_peak, position, big).flip(1).cummin(1).values.flip(1)
    nearest = torch.where((position - left) <= (right - position), left, right).clamp(0, bins - 1)
    return nearest.reshape(n, frames, bins).transpose(1, 2)


