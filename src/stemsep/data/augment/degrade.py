"""Signal processing behind the robustness augmentations: MP3 round trip, peaking EQ, limiter.

All in-process: the MP3 codec is libsndfile's (through ``soundfile``, libsndfile >= 1.1 encodes
with LAME and decodes with mpg123), so no ``ffmpeg`` binary is needed at training time.
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.signal import sosfilt

from stemsep.errors import StemsepError

MAX_CODEC_LAG = 4096  # samples searched when the decoder does not restore the exact length


def check_mp3_support() -> None:
    """One-line error when this libsndfile cannot encode and decode MP3."""
    if "MP3" not in sf.available_formats():
        raise StemsepError(f"Mp3Codec: libsndfile {sf.__libsndfile_version__} has no MP3 support (needs >= 1.1)")


def mp3_round_trip(wav: torch.Tensor, samplerate: int, compression: float) -> torch.Tensor:
    """Encode ``wav (C, T)`` as MP3 (constant bit rate) and decode it back to ``(C, T)``.

    ``compression`` is libsndfile's ``compression_level`` in [0, 1): 0 is 320 kbps, about 0.5
    160 kbps, 0.85 about 80 kbps. The decoded signal is realigned with the input (gapless
    metadata normally does it; at low bit rates LAME's delay is found by cross-correlation)
    and cut or zero-padded to ``T`` samples.
    """
    data = wav.detach().cpu().numpy().T.astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.clip(data, -1, 1), samplerate, format="MP3", subtype="MPEG_LAYER_III",
             bitrate_mode="CONSTANT", compression_level=float(compression))
    buf.seek(0)
    decoded, _ = sf.read(buf, dtype="float32", always_2d=True)
    out = torch.from_numpy(decoded.T.copy())
    length = wav.shape[-1]
    if out.shape[-1] != length:
        lag = codec_lag(out.sum(0), wav.detach().cpu().float().sum(0))
        out = out[:, lag:]
    out = out[:, :length]
    return F.pad(out, (0, length - out.shape[-1])).to(wav)


def codec_lag(decoded: torch.Tensor, reference: torch.Tensor, max_lag: int = MAX_CODEC_LAG) -> int:
    """Delay (>= 0 samples) of ``decoded`` behind ``reference``, by FFT cross-correlation."""
    n = min(reference.shape[-1], decoded.shape[-1], 1 << 16)
    size = 1 << math.ceil(math.log2(2 * n + max_lag))
    cross = torch.fft.irfft(torch.fft.rfft(decoded[:n + max_lag], size) * torch.fft.rfft(reference[:n], size).conj(),
                            size)
    return int(cross[:max_lag + 1].argmax())


def peaking_coefficients(freq: float, gain_db: float, q: float, samplerate: int) -> tuple[list[float], list[float]]:
    """Biquad ``(b, a)`` of a peaking EQ (RBJ cookbook): ``gain_db`` at ``freq``, bandwidth ``freq / q``."""
    amp = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * freq / samplerate
    alpha = math.sin(w0) / (2 * q)
    cos = math.cos(w0)
    b = [1 + alpha * amp, -2 * cos, 1 - alpha * amp]
    a = [1 + alpha / amp, -2 * cos, 1 - alpha / amp]
    return [x / a[0] for x in b], [x / a[0] for x in a]


def peaking_eq(wav: torch.Tensor, bands: list[tuple[float, float, float]], samplerate: int) -> torch.Tensor:
    """Apply peaking EQ ``bands`` (``(freq, gain_db, q)`` each) to every row of ``wav (..., T)``.

    A linear, time-invariant filter: the bands as one cascade of second-order sections, in
    float64, in one pass over the signal.
    """
    if not bands:
        return wav
    sos = np.array([[*b, *a] for b, a in (peaking_coefficients(f, g, q, samplerate) for f, g, q in bands)])
    out = sosfilt(sos, wav.detach().cpu().numpy().astype(np.float64), axis=-1)
    return torch.from_numpy(out).to(wav)


def limiter_gain(wav: torch.Tensor, threshold: float, lookahead: int, hold: int) -> torch.Tensor:
    """Gain curve ``(T,)`` in (0, 1] of a look-ahead brickwall limiter for ``wav (C, T)``.

    The gain needed at each sample (``threshold / peak`` over channels, at most 1) is turned
    into a smooth curve: a minimum over ``hold`` samples before to ``lookahead`` samples after
    each sample, then a moving average over ``lookahead`` samples. Every value averaged at ``t``
    covers ``t`` in its minimum, so ``|wav * gain| <= threshold`` everywhere: attack is a
    ``lookahead``-long ramp that ends where a peak starts, release a hold then a ramp.
    """
    peak = wav.abs().amax(0)
    need = torch.clamp(threshold / peak.clamp_min(1e-12), max=1.0)
    row = need[None, None]
    window = hold + lookahead
    # Minimum over [t - hold, t + lookahead - 1], then the mean over [t - lookahead + 1, t].
    held = -F.max_pool1d(F.pad(-row, (hold, lookahead - 1), value=-1.0), window, stride=1)
    smooth = F.avg_pool1d(F.pad(held, (lookahead - 1, 0), value=1.0), lookahead, stride=1)
    return torch.minimum(smooth[0, 0], need)  # guards the float rounding of the average
