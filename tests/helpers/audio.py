"""Writing test audio in the formats `stemsep separate` reads: soundfile for libsndfile's formats,
PyAV (FFmpeg, bundled in its wheels) for AAC/M4A, MUSDB18-style ``.stem.mp4`` and odd codecs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, samplerate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """``(channels, time)`` float32: a different tone per channel plus a little noise, peak < 0.5."""
    t = np.arange(int(round(seconds * samplerate))) / samplerate
    rng = np.random.default_rng(seed)
    rows = [0.3 * np.sin(2 * np.pi * (220 + 55 * c) * t) + 0.02 * rng.standard_normal(t.shape) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def write_sf(path: Path, data: np.ndarray, samplerate: int, fmt: str, subtype: str) -> Path:
    """``(channels, time)`` through libsndfile (``fmt``/``subtype`` as soundfile names them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.T, samplerate, format=fmt, subtype=subtype)
    return path


def write_av(path: Path, streams: list[np.ndarray], samplerate: int, *, codec: str = "aac",
             container: str | None = None, bit_rate: int | None = None, options: dict | None = None) -> Path:
    """Each ``(channels, time)`` array as one audio stream encoded with ``codec`` (MUSDB18's
    ``.stem.mp4``: five AAC streams, mixture first); ``bit_rate`` (bit/s) and encoder ``options``
    (FFmpeg's, e.g. ``{"cutoff": "16000"}``) for every stream."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as out:
        layouts = {1: "mono", 2: "stereo"}
        targets = [out.add_stream(codec, rate=samplerate, layout=layouts[s.shape[0]]) for s in streams]
        for stream in targets:
            if bit_rate is not None:
                stream.bit_rate = bit_rate
            if options:
                stream.codec_context.options = dict(options)
        for stream, data in zip(targets, streams, strict=True):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T.reshape(1, -1), dtype=np.float32),
                                               format="flt", layout=layouts[data.shape[0]])
            frame.sample_rate = samplerate
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return path
