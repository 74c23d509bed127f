"""Shared fixtures: a small synthetic corpus and a tiny separation network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from stemsep.data.synth import generate_corpus

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory) -> Path:
    """4 train + 2 test synthetic songs of 3 s (read-only: copy before modifying)."""
    return generate_corpus(tmp_path_factory.mktemp("corpus"), songs=4, seconds=3.0, seed=0, test_songs=2)


@pytest.fixture(scope="session")
def shards(corpus_root, tmp_path_factory) -> Path:
    """``corpus_root`` packed into 1 MB WebDataset shards (read-only: copy before modifying)."""
    from data_helpers import shard_corpus

    return shard_corpus(corpus_root, tmp_path_factory.mktemp("shards"))


@pytest.fixture
def corpus_copy(corpus_root, tmp_path) -> Path:
    """A private, modifiable copy of the synthetic corpus."""
    return Path(shutil.copytree(corpus_root, tmp_path / "corpus"))
