"""A TinyNet that sleeps in every forward call: keeps subprocess runs slow enough to be killed mid-way."""

from __future__ import annotations

import time

from helpers import TinyNet


class SlowNet(TinyNet):
    def __init__(self, sources: list[str] | None = None, audio_channels: int = 2, samplerate: int = 44100,
                 hidden: int = 8, delay: float = 0.05, segment: float | None = None):
        super().__init__(sources, audio_channels, samplerate, hidden)
        self.delay = delay
        self.init_args["delay"] = delay
        if segment is not None:  # a training segment: chunked, and long files separated window by window
            self.segment = segment
            self.init_args["segment"] = segment

    def forward(self, mix):
        time.sleep(self.delay)
        return super().forward(mix)
