"""A TinyNet whose forward calls can be slowed down (``delay`` seconds each) and held at a gate.

Crash tests do not rely on the delay: a child process run with ``helpers.gate.Gate(...).env()``
in its environment holds inside its forward call number ``at`` (0-based) until the test kills it
(see :mod:`helpers.gate`), so it is killed at a known point however loaded the machine is.
Without that variable (in-process runs, other tests) the gate does nothing.
"""

from __future__ import annotations

import time

from helpers import TinyNet
from helpers.gate import checkpoint


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
        checkpoint()
        if self.delay:
            time.sleep(self.delay)
        return super().forward(mix)
