"""MUSDB18-style ``.stem.mp4`` files for tests: AAC streams written with PyAV so that they decode aligned."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np


def write_stem_mp4(path: Path, streams: list[np.ndarray], samplerate: int = 44100) -> Path:
    """Each ``(2, time)`` array as one AAC stream of an MP4 (MUSDB18: mixture, drums, bass, other,
    vocals), fed in 1024-sample frames with timestamps so that the muxer records the encoder's
    priming delay and FFmpeg decodes every stream aligned with its input, as MUSDB18's files decode."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        targets = [out.add_stream("aac", rate=samplerate, layout="stereo") for _ in streams]
        for stream, data in zip(targets, streams, strict=True):
            for start in range(0, data.shape[1], 1024):
                block = np.ascontiguousarray(data[:, start:start + 1024], dtype=np.float32)
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = samplerate, start
                frame.time_base = fractions.Fraction(1, samplerate)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return path
