"""STFT front end shared by the hybrid models.

The hybrid models need the spectrogram to have exactly ``ceil(length / hop)`` frames so
that the frequency branch lines up with the strided time branch. ``torch.stft`` with
``center=True`` gives ``length / hop + 1`` frames, so the signal is first reflect-padded by
``1.5 * hop`` on each side (plus up to a hop on the right) and the two outermost frames on
each side are dropped afterwards. The inverse undoes exactly this.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def pad_reflect_safe(x: torch.Tensor, left: int, right: int, mode: str = "reflect") -> torch.Tensor:
    """``F.pad`` along the last axis that also works for reflect padding of short inputs.

    Reflect padding needs the input to be longer than the padding; when it is not, the
    input is first zero-extended just enough (on the right, then on the left) so that the
    requested output length and the position of the original samples are unchanged.
    """
    length = x.shape[-1]
    if mode == "reflect":
        biggest = max(left, right)
        if length <= biggest:
            extra = biggest - length + 1
            extra_right = min(right, extra)
            extra_left = extra - extra_right
            x = F.pad(x, (extra_left, extra_right))
            left -= extra_left
            right -= extra_right
    return F.pad(x, (left, right), mode)


def _window(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(n_fft, device=like.device, dtype=like.dtype)


def stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Normalized, centered STFT of ``(*, T)`` -> complex ``(*, n_fft // 2 + 1, frames)``."""
    *batch, length = x.shape
    flat = x.reshape(-1, length)
    z = torch.stft(flat, n_fft, hop, window=_window(n_fft, flat), win_length=n_fft,
                   normalized=True, center=True, return_complex=True, pad_mode="reflect")
    return z.view(*batch, z.shape[-2], z.shape[-1])


def istft(z: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Inverse of :func:`stft` for complex ``(*, freqs, frames)``, cut to ``length``."""
    *batch, freqs, frames = z.shape
    n_fft = 2 * freqs - 2
    flat = z.reshape(-1, freqs, frames)
    x = torch.istft(flat, n_fft, hop, window=_window(n_fft, flat.real), win_length=n_fft,
                    normalized=True, length=length, center=True)
    return x.view(*batch, x.shape[-1])


def hybrid_spectrogram(x: torch.Tensor, n_fft: int, reflect: bool = True) -> torch.Tensor:
    """Spectrogram with ``ceil(T / hop)`` frames and ``n_fft // 2`` bins (Nyquist dropped).

    ``reflect=False`` zero-pads instead; a few old MDX checkpoints were trained that way.
    """
    hop = n_fft // 4
    frames = math.ceil(x.shape[-1] / hop)
    pad = hop // 2 * 3
    x = pad_reflect_safe(x, pad, pad + frames * hop - x.shape[-1], "reflect" if reflect else "constant")
    z = stft(x, n_fft, hop)[..., :-1, :]
    return z[..., 2:2 + frames]


def hybrid_inverse(z: torch.Tensor, length: int, reflect: bool = True) -> torch.Tensor:
    """Inverse of :func:`hybrid_spectrogram`: back to a waveform of ``length`` samples."""
    hop = (2 * z.shape[-2]) // 4
    z = F.pad(z, (2, 2, 0, 1))
    pad = hop // 2 * 3
    if reflect:
        total = hop * math.ceil(length / hop) + 2 * pad
        return istft(z, hop, total)[..., pad:pad + length]
    total = hop * math.ceil(length / hop)
    return istft(z, hop, total)[..., :length]


def plain_spectrogram(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Spectrogram of a frequency-only model (no alignment padding), Nyquist bin dropped."""
    return stft(x, n_fft, n_fft // 4)[..., :-1, :]


def plain_inverse(z: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`plain_spectrogram`."""
    hop = (2 * z.shape[-2]) // 4
    return istft(F.pad(z, (0, 0, 0, 1)), hop, length)


def complex_as_channels(z: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, C, F, T)`` -> real ``(B, 2C, F, T)``, channels ordered re0, im0, re1, ..."""
    b, c, f, t = z.shape
    return torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(b, 2 * c, f, t)


def channels_as_complex(m: torch.Tensor) -> torch.Tensor:
    """Real ``(B, S, 2C, F, T)`` -> complex ``(B, S, C, F, T)``; inverse of the above."""
    b, s, c2, f, t = m.shape
    m = m.view(b, s, c2 // 2, 2, f, t)
    return torch.complex(m[:, :, :, 0], m[:, :, :, 1])


@dataclass(frozen=True)
class FrontEnd:
    """What surrounds a hybrid model's real-valued core: STFT in, masking + ISTFT + sum out.

    ``hybrid``: frames aligned with the time branch (:func:`hybrid_spectrogram`; ``reflect``
    False for old zero-padded checkpoints) and a time-branch output to add; otherwise a
    spectrogram-only model (:func:`plain_spectrogram`). ``cac``: the core sees and returns
    the complex spectrogram as channels; otherwise it sees the magnitude and returns a mask
    applied with the mixture's phase. Shared by the models and by exported models, whose
    graphs hold only the core (:mod:`stemsep.inference.exported`).
    """

    nfft: int
    hybrid: bool = True
    reflect: bool = True
    cac: bool = True

    def spectrogram(self, mix: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> complex ``(B, C, nfft // 2, frames)``."""
        if self.hybrid:
            return hybrid_spectrogram(mix, self.nfft, reflect=self.reflect)
        return plain_spectrogram(mix, self.nfft)

    def channels(self, z: torch.Tensor) -> torch.Tensor:
        """The core's real spectral input: ``z`` as channels (CaC) or its magnitude."""
        return complex_as_channels(z) if self.cac else z.abs()

    def waveforms(self, z: torch.Tensor, spec_out: torch.Tensor, time_out: torch.Tensor | None,
                  length: int) -> torch.Tensor:
        """The core's outputs -> source waveforms ``(B, S, C, length)``.

        ``spec_out (B, S, C', F, frames)`` becomes complex spectrograms (CaC channels, or a
        magnitude mask times the mixture ``z / |z|``), is inverted, and ``time_out
        (B, S, C, length)`` (the time branch, if any) is added.
        """
        if self.cac:
            sources = channels_as_complex(spec_out)
        else:
            mixture = z[:, None]
            sources = mixture / (1e-8 + mixture.abs()) * spec_out
        if self.hybrid:
            out = hybrid_inverse(sources, length, reflect=self.reflect)
        else:
            out = plain_inverse(sources, length)
        return out if time_out is None else out + time_out

    # -- stemsep.contract.ExportFrontEnd: what runs around an exported hybrid core ---------------
    def config(self) -> dict[str, Any]:
        return asdict(self)

    def prepare(self, mix: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The core's inputs ``(mix, spectrogram as channels)``; the complex spectrogram is the state."""
        z = self.spectrogram(mix)
        return (mix, self.channels(z)), z

    def finish(self, outputs: tuple[torch.Tensor, ...], state: torch.Tensor, length: int) -> torch.Tensor:
        return self.waveforms(state, outputs[0], outputs[1] if len(outputs) > 1 else None, length)


class SpectralCore(nn.Module):
    """``spec -> (net.core(spec),)``: a spectral network's core as the module ``stemsep export``
    traces (the front end's STFT/ISTFT run outside the exported graph)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net.core(spec),)
