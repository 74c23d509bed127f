"""Tiny networks that honour the separation contract, for fast tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """The smallest network honouring the separation contract (two 1-D convolutions)."""

    def __init__(self, sources: list[str] | None = None, audio_channels: int = 2, samplerate: int = 44100,
                 hidden: int = 8):
        super().__init__()
        self.sources = list(sources or ["drums", "bass", "other", "vocals"])
        self.audio_channels, self.samplerate = audio_channels, samplerate
        self.init_args = {"sources": self.sources, "audio_channels": audio_channels,
                          "samplerate": samplerate, "hidden": hidden}
        out = len(self.sources) * audio_channels
        self.body = nn.Sequential(nn.Conv1d(audio_channels, hidden, 9, padding=4), nn.Tanh(),
                                  nn.Conv1d(hidden, out, 9, padding=4))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        batch, channels, time = mix.shape
        return self.body(mix).view(batch, len(self.sources), channels, time)
