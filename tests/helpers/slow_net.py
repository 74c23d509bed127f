"""A TinyNet that sleeps in every forward call: keeps subprocess runs slow enough to be killed mid-way."""

from __future__ import annotations

import time

from helpers import TinyNet


class SlowNet(TinyNet):
    def __init__(self, sources: list[str] | None = None, audio_channels: int = 2, samplerate: int = 44100,
                 hidden: int = 8, delay: float = 0.05):
        super().__init__(sources, audio_channels, samplerate, hidden)
        self.delay = delay
        self.init_args["delay"] = delay

    def forward(self, mix):
        time.sleep(self.delay)
        return super().forward(mix)
