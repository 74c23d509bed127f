"""Activity profile of a signal: V(z) = 10·log10(AvgPool(z², 1 s)), in dB per 1-second frame.

Used by ``stemsep shard`` (stored per stem in the manifest, so silence filtering needs no
decoding) and by ``stemsep audit`` (to compare a model's outputs with the stems).
"""

from __future__ import annotations

import torch

FLOOR_DB = -120.0  # digital silence is reported as this, not -inf


def activity_db(wav: torch.Tensor, samplerate: int, frame_seconds: float = 1.0) -> torch.Tensor:
    """Mean power over channels in non-overlapping frames, in dB: ``(..., C, T) -> (..., F)``.

    A trailing partial frame is dropped (as AvgPool does); audio shorter than one frame gives
    a single frame over all of it.
    """
    frame = max(1, int(round(frame_seconds * samplerate)))
    power = wav.double().pow(2).mean(dim=-2)  # (..., T)
    count = power.shape[-1] // frame
    if count == 0:
        pooled = power.mean(dim=-1, keepdim=True)
    else:
        pooled = power[..., : count * frame].reshape(*power.shape[:-1], count, frame).mean(dim=-1)
    return (10 * torch.log10(pooled.clamp_min(10 ** (FLOOR_DB / 10)))).float()
