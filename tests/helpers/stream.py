"""Driving a :class:`~stemsep.inference.stream.StreamingSeparator` the way a live loop does."""

from __future__ import annotations

import torch


def stream_blocks(separator, mix: torch.Tensor, sizes) -> torch.Tensor:
    """Push ``mix (channels, time)`` in blocks of ``sizes`` (until it is used up), then flush; checks that
    every push returns as many samples as it got and the flush ``latency`` more; returns them all joined."""
    outs, at = [], 0
    for size in sizes:
        outs.append(separator.push(mix[:, at:at + size]))
        assert outs[-1].shape == (len(separator.sources), mix.shape[0], min(size, mix.shape[-1] - at))
        at += size
        if at >= mix.shape[-1]:
            break
    assert at >= mix.shape[-1]
    tail = separator.flush()
    assert tail.shape == (len(separator.sources), mix.shape[0], separator.latency)
    return torch.cat(outs + [tail], -1)
