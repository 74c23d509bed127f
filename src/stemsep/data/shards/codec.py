"""Lossless in-memory audio codec of the shards: 24-bit FLAC bytes <-> float32 tensors.

Shards hold stems as FLAC inside tar files, so they are encoded and decoded from bytes rather
than paths (``stemsep.io.audio`` works on files). Float audio is quantised to the 24-bit grid
(steps of 2**-23, clipped to [-1, 1]); decoding returns exactly those grid values, so a round
trip changes a float input by at most half a step (6e-8). Decoding can start anywhere
(FLAC frames are seekable), which lets the training stream read only the segments it uses.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch

from stemsep.errors import BadAudioError
from stemsep.io.audio import short_error

LSB = 2.0**-23


def quantize24(wav: np.ndarray) -> np.ndarray:
    """The 24-bit grid values FLAC will store for float audio ``wav`` (clipped to [-1, 1 - LSB])."""
    return np.clip(np.round(np.asarray(wav, dtype=np.float64) / LSB), -2**23, 2**23 - 1) * LSB


def encode_flac(wav: torch.Tensor | np.ndarray, samplerate: int) -> bytes:
    """``(channels, time)`` float audio as 24-bit FLAC bytes."""
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    data = np.ascontiguousarray(quantize24(data).T)
    buf = io.BytesIO()
    sf.write(buf, data, samplerate, subtype="PCM_24", format="FLAC")
    return buf.getvalue()


def flac_header(data: bytes, what: str) -> sf._SoundFileInfo:
    """Header (rate, channels, frames) of FLAC bytes; ``what`` names them in errors."""
    try:
        return sf.info(io.BytesIO(data))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise BadAudioError(f"{what}: not a readable FLAC stream ({short_error(err)})") from None


def decode_flac(data: bytes, what: str, start: int = 0, frames: int = -1,
                contiguous: bool = True) -> tuple[torch.Tensor, int]:
    """Decode ``frames`` samples from ``start`` of FLAC bytes to float32 ``(channels, frames)``.

    Reading past the end returns fewer samples (callers pad). ``what`` names the stream in
    one-line errors (e.g. ``shard train-000001.tar, song X, stem vocals``). With
    ``contiguous=False`` the result is a transposed view of the decoder's interleaved buffer
    (saves a copy when the caller copies anyway).
    """
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if start:
                f.seek(min(start, f.frames))
            out = f.read(frames, dtype="float32", always_2d=True)
            samplerate = f.samplerate
    except (RuntimeError, sf.LibsndfileError, ValueError) as err:
        raise BadAudioError(f"{what}: cannot decode FLAC ({short_error(err)})") from None
    wav = torch.from_numpy(out).T
    return (wav.contiguous() if contiguous else wav), samplerate
