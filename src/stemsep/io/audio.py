"""Reading and writing audio with soundfile (torchaudio.load needs ffmpeg/torchcodec now)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from stemsep.errors import BadAudioError
from stemsep.io.files import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac")
_SUBTYPES = {("wav", 16): "PCM_16", ("wav", 24): "PCM_24", ("wav", 32): "FLOAT",
             ("flac", 16): "PCM_16", ("flac", 24): "PCM_24"}


def find_audio(folder: str | os.PathLike, stem: str) -> Path | None:
    """``folder/<stem>.wav`` or ``.flac``, whichever exists first, else None."""
    for ext in AUDIO_EXTENSIONS:
        path = Path(folder) / f"{stem}{ext}"
        if path.is_file():
            return path
    return None


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header of an audio file, or a one-line error naming it."""
    try:
        return sf.info(str(path))
    except FileNotFoundError:
        raise BadAudioError(f"{path}: file not found") from None
    except (RuntimeError, sf.LibsndfileError) as err:
        raise BadAudioError(f"{path}: not a readable audio file ({short_error(err)})") from None


def read_audio(path: str | os.PathLike, *, samplerate: int | None = None, channels: int | None = None,
               start: int = 0, frames: int = -1, check_finite: bool = True) -> tuple[torch.Tensor, int]:
    """Read ``frames`` samples from ``start`` as a float32 tensor ``(channels, time)``.

    ``samplerate`` and ``channels``, when given, are checked (not converted): a mismatch is a
    :class:`BadAudioError` naming the file. Mono files are refused where stereo is expected.
    """
    path = Path(path)
    try:
        data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise BadAudioError(f"{path}: file not found") from None
    except (RuntimeError, sf.LibsndfileError) as err:
        raise BadAudioError(f"{path}: not a readable audio file ({short_error(err)})") from None
    if samplerate is not None and sr != samplerate:
        raise BadAudioError(f"{path}: sample rate is {sr} Hz, expected {samplerate} Hz")
    if channels is not None and data.shape[1] != channels:
        raise BadAudioError(f"{path}: has {data.shape[1]} channel(s), expected {channels}")
    if data.shape[0] == 0 and frames != 0:
        raise BadAudioError(f"{path}: audio is empty (zero samples)")
    if check_finite and not np.isfinite(data).all():
        raise BadAudioError(f"{path}: contains NaN or Inf samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


def write_audio(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, samplerate: int, *,
                bits: int = 24, fmt: str | None = None) -> Path:
    """Write ``(channels, time)`` audio atomically as WAV or FLAC (format from the suffix).

    Integer formats clip to [-1, 1]; 32-bit WAV is stored as float.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    subtype = _SUBTYPES.get((fmt, bits))
    if subtype is None:
        raise BadAudioError(f"{path}: cannot write {bits}-bit {fmt!r} (choose wav 16/24/32 or flac 16/24)")
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    data = np.asarray(data, dtype=np.float32).T
    if subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, samplerate, subtype=subtype, format=fmt.upper())
    return path


def short_error(err: Exception) -> str:
    """The reason in a soundfile/libsndfile error's last line, without "Error opening <file>: "."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text.split(": ", 1)[-1] if "Error opening" in text else text
