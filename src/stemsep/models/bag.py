"""A bag of separation networks whose per-source outputs are averaged with weights.

Demucs' best results come from bags: several models (often one fine-tuned per source) whose
estimates are mixed per source, e.g. ``weights=[[1, 0, 0, 0], [0, 1, 0, 0], ...]`` takes each
source from its specialist. ``stemsep.inference.apply_model`` applies each member with its own
segment length and shifts (as demucs does); ``forward`` is the plain one-shot version.
"""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import nn


class BagOfModels(nn.Module):
    """Networks with the same sources, sample rate and channels, mixed with ``weights[model][source]``."""

    def __init__(self, models: list[nn.Module], weights: list[list[float]] | None = None,
                 segment: float | Fraction | None = None):
        super().__init__()
        if not models:
            raise ValueError("a bag needs at least one model")
        first = models[0]
        for index, model in enumerate(models[1:], start=1):
            for attr in ("sources", "samplerate", "audio_channels"):
                if list_or_value(getattr(model, attr)) != list_or_value(getattr(first, attr)):
                    raise ValueError(f"model {index} has {attr}={getattr(model, attr)!r}, "
                                     f"model 0 has {getattr(first, attr)!r}")
        self.models = nn.ModuleList(models)
        self.sources = list(first.sources)
        self.samplerate = int(first.samplerate)
        self.audio_channels = int(first.audio_channels)
        if weights is None:
            weights = [[1.0] * len(self.sources) for _ in models]
        if len(weights) != len(models) or any(len(row) != len(self.sources) for row in weights):
            raise ValueError(f"weights must be {len(models)} models x {len(self.sources)} sources")
        if any(sum(row[s] for row in weights) <= 0 for s in range(len(self.sources))):
            raise ValueError("every source needs a positive total weight over the models")
        self.weights = [[float(w) for w in row] for row in weights]
        segments = [getattr(m, "segment", None) for m in models]
        # Segment of the bag as a whole: what every member can take (used by `forward` callers).
        self.segment = segment if segment is not None else (
            min(s for s in segments if s is not None) if any(s is not None for s in segments) else None)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, S, C, T)``: weighted per-source mean of every member's output."""
        weights = torch.tensor(self.weights, dtype=mix.dtype, device=mix.device)
        out = None
        for model, model_weights in zip(self.models, weights, strict=True):
            part = model(mix) * model_weights[:, None, None]
            out = part if out is None else out + part
        return out / weights.sum(0)[:, None, None]


def list_or_value(value):
    return list(value) if isinstance(value, (list, tuple)) else value
