"""Ensembles of separations: one function, :func:`combine`, that every ensemble path uses.

    combine(stems, "avg_wave", weights=[2, 1])   # stems: (models, channels, time) -> (channels, time)

The eight modes are those of Music-Source-Separation-Training's ``ensemble.py`` (MSST, the
community's ensembling tool), with its definitions (a fact we follow; the code is ours):

* ``avg_wave``: the weighted mean of the waveforms, ``sum(w_i x_i) / sum(w)``;
* ``median_wave``: the median over models, sample by sample (an even count of models gives the mean
  of the two middle values, as ``numpy.median``);
* ``min_wave`` / ``max_wave``: sample by sample, the value of the model with the smallest / largest
  magnitude (its sign kept; ties go to the first model);
* ``avg_fft`` / ``median_fft`` / ``min_fft`` / ``max_fft``: the same on the complex STFT of each channel
  (2048-point periodic Hann window, hop 1024, centred with zero padding, as ``librosa.stft``), then
  the inverse STFT at the input's length. ``median_fft`` orders complex values as numpy does (by real
  part, then imaginary part) -- so it is not the median of magnitudes; we keep MSST's result.

Weights apply to the two ``avg_*`` modes only; MSST ignores them elsewhere, we refuse them there with
a one-line error rather than ignore what the user asked for.

:func:`ensemble_files` is MSST's workflow on files already separated (``stemsep ensemble``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stemsep.errors import BadArgumentError, BadAudioError
from stemsep.io.audio import decode_audio, resample, write_audio

WAVE_MODES = ("avg_wave", "median_wave", "min_wave", "max_wave")
FFT_MODES = ("avg_fft", "median_fft", "min_fft", "max_fft")
MODES = WAVE_MODES + FFT_MODES
N_FFT, HOP = 2048, 1024  # MSST's STFT for the *_fft modes


def check_mode(mode: str, weights: Sequence[float] | None = None, count: int | None = None) -> None:
    """One-line errors for an unknown mode, weights with a mode that has none, or a wrong count."""
    if mode not in MODES:
        raise BadArgumentError(f"unknown ensemble mode {mode!r}: choose one of {', '.join(MODES)}")
    if weights is None:
        return
    if not mode.startswith("avg_"):
        raise BadArgumentError(f"--weights apply to avg_wave and avg_fft only, not to {mode}")
    if count is not None and len(weights) != count:
        raise BadArgumentError(f"{len(weights)} weight(s) for {count} input(s): give one weight per input")
    if any(not np.isfinite(w) or w < 0 for w in weights) or not sum(weights) > 0:
        raise BadArgumentError(f"ensemble weights must be >= 0 with a positive sum, got {list(weights)}")


def combine(stems: torch.Tensor | np.ndarray, mode: str = "avg_wave",
            weights: Sequence[float] | None = None) -> torch.Tensor | np.ndarray:
    """``stems (models, channels, time)`` -> ``(channels, time)`` by ``mode`` (module docstring).

    A numpy array gives a numpy array, a tensor a tensor on its device and dtype.
    """
    as_numpy = isinstance(stems, np.ndarray)
    x = torch.from_numpy(np.asarray(stems)) if as_numpy else stems
    if x.dim() != 3:
        raise BadArgumentError(f"combine takes (models, channels, time) stems, got shape {tuple(x.shape)}")
    check_mode(mode, weights, x.shape[0])
    if mode in WAVE_MODES:
        out = _reduce(x, mode[:-5], weights)
    else:
        out = _istft(_reduce(_stft(x), mode[:-4], weights), x.shape[-1]).to(x.dtype)
    return out.numpy() if as_numpy else out


def _reduce(x: torch.Tensor, how: str, weights: Sequence[float] | None) -> torch.Tensor:
    """Reduce the models axis (0) of real or complex ``x``."""
    if how == "avg":
        w = torch.as_tensor(weights if weights is not None else [1.0] * x.shape[0], dtype=x.real.dtype,
                            device=x.device).reshape(-1, *[1] * (x.dim() - 1))
        return (x * w).sum(0) / w.sum()
    if how in ("min", "max"):
        magnitude = x.abs()
        pick = magnitude.argmin(0) if how == "min" else magnitude.argmax(0)  # first of equals, as numpy
        return x.gather(0, pick[None])[0]
    return _median(x)


def _median(x: torch.Tensor) -> torch.Tensor:
    """numpy's median over axis 0: the middle value, or the mean of the two middle ones; complex
    values ordered by real part, then imaginary part (two stable sorts give that order)."""
    if x.is_complex():
        order = torch.sort(x.imag, dim=0, stable=True).indices
        order = order.gather(0, torch.sort(x.real.gather(0, order), dim=0, stable=True).indices)
        ordered = x.gather(0, order)
    else:
        ordered = torch.sort(x, dim=0).values
    count = x.shape[0]
    middle = ordered[count // 2]
    return middle if count % 2 else (ordered[count // 2 - 1] + middle) / 2


def _window(x: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, dtype=x.real.dtype, device=x.device)


def _stft(x: torch.Tensor) -> torch.Tensor:
    """``(..., time)`` -> complex ``(..., bins, frames)``, as ``librosa.stft(n_fft=2048, hop_length=1024)``."""
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, N_FFT, HOP, window=_window(x), center=True, pad_mode="constant", return_complex=True)
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:])


def _istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    flat = spec.reshape(-1, *spec.shape[-2:])
    wav = torch.istft(flat, N_FFT, HOP, window=_window(spec), center=True, length=length)
    return wav.reshape(*spec.shape[:-2], length)


# ---------------------------------------------------------------------------- files
def ensemble_files(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, mode: str = "avg_wave",
                   weights: Sequence[float] | None = None, *, bits: int = 32) -> Path:
    """Combine separated files of one stem (one per model) into ``out`` (WAV/FLAC), as MSST's
    ``ensemble.py --files … --type … --weights …``.

    The files are read at their own rates; any at another rate than the first is resampled to it.
    Channel counts and lengths (after resampling) must agree, else a one-line error names the file.
    ``out`` is written atomically (32-bit float WAV by default, as MSST writes).
    """
    if len(inputs) < 1:
        raise BadArgumentError("ensemble needs at least one input file")
    check_mode(mode, weights, len(inputs))
    first, rate = decode_audio(inputs[0])
    waves = [first]
    for path in inputs[1:]:
        wav, sr = decode_audio(path)
        wav = resample(wav, sr, rate)
        if wav.shape[0] != first.shape[0]:
            raise BadAudioError(f"{path}: {wav.shape[0]} channel(s), but {inputs[0]} has {first.shape[0]}")
        if abs(wav.shape[-1] - first.shape[-1]) > 0:
            raise BadAudioError(f"{path}: {wav.shape[-1]} samples at {rate} Hz, but {inputs[0]} has "
                                f"{first.shape[-1]}: separations of the same input must have its length")
        waves.append(wav)
    return write_audio(out, combine(torch.stack(waves), mode, weights), rate, bits=bits)
