"""Normalised separation of whole mixes: in memory (:func:`separate_mixes`) or, for a file longer
than one window, window by window (:func:`separate_stream`: one window in memory, whatever the
duration).

Each mix is normalised by the mean and standard deviation of its channel average and the stems
scaled back, as demucs' command does; the statistics are summed the same way on both paths
(:class:`MixStats`), and windows are cut on the chunk grid :meth:`Chunking.window_plan
<stemsep.inference.chunked.Chunking.window_plan>` gives, so a file separated window by window
gives the same samples as separated whole.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from stemsep.errors import BadArgumentError
from stemsep.inference.chunked import Chunking, WindowPlan, apply_model_many
from stemsep.io.audio import iter_mix

WINDOW_SECONDS = 120.0  # output samples per streaming window (plus the context each side it needs)
_STATS_BLOCK = 1 << 16  # the mix statistics are summed in blocks of this many samples, in float64

def check_window(window: float) -> None:
    """Refuse a window length (seconds) that is not positive (one-line error)."""
    if not window > 0:
        raise BadArgumentError(f"window must be positive, got {window}")


class MixStats:
    """Mean and standard deviation (unbiased) of a mix's channel average, fed block by block.

    Sums run in float64 over fixed blocks of :data:`_STATS_BLOCK` samples, whatever sizes the
    blocks arrive in, so the whole-file and streaming paths get bit-identical statistics.
    """

    def __init__(self):
        self.carry = np.zeros(0, np.float32)
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, mix: np.ndarray) -> None:
        ref = np.concatenate([self.carry, mix.mean(0, dtype=np.float32)])
        full = ref.shape[0] - ref.shape[0] % _STATS_BLOCK
        for start in range(0, full, _STATS_BLOCK):
            self._sum(ref[start:start + _STATS_BLOCK])
        self.carry = ref[full:].copy()

    def _sum(self, block: np.ndarray) -> None:
        wide = block.astype(np.float64)
        self.count += wide.shape[0]
        self.total += float(wide.sum())
        self.squares += float(np.square(wide).sum())

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, scale)`` as float32 scalars; ``scale`` is the std, or 1 for a (near) silent mix."""
        if self.carry.shape[0]:
            self._sum(self.carry)
            self.carry = np.zeros(0, np.float32)
        n = max(self.count, 1)
        mean = self.total / n
        std = math.sqrt(max(self.squares - n * mean * mean, 0.0) / max(n - 1, 1))
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std if std > 1e-8 else 1.0, dtype=torch.float32)


def mix_stats(mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, scale)`` of a ``(channels, time)`` mix (see :class:`MixStats`)."""
    stats = MixStats()
    stats.add(mix.detach().cpu().numpy())
    return stats.result()


def separate_mixes(net: torch.nn.Module, mixes: list[torch.Tensor], chunking: Chunking) -> list[torch.Tensor]:
    """``(channels, time)`` each -> ``(sources, channels, time)`` each, chunks batched across them.

    With ``shifts``, every mix gets the shift offsets of the seed (its stems do not depend on the
    other mixes or their order). Each mix is normalised (in place) by the mean and standard
    deviation of its channel average (:func:`mix_stats`) and the stems scaled back.
    """
    stats, normalised = [], []
    for mix in mixes:
        mean, scale = mix_stats(mix)
        stats.append((mean, scale))
        normalised.append(mix.sub_(mean).div_(scale))  # in place: one copy of the audio, not two
    outs = apply_model_many(net, normalised, chunking, progress=sys.stderr.isatty())
    return [out.mul_(scale).add_(mean) for out, (mean, scale) in zip(outs, stats, strict=True)]


def separate_stream(net: torch.nn.Module, path: Path, sink: Callable[[torch.Tensor], None], scratch: Path,
                    plan: WindowPlan, chunking: Chunking,
                    progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Separate the file ``path`` window by window, handing ``sink`` the stems ``(sources, channels, n)``
    in order; returns ``(frames at the model's rate, frames of the input)``. ``progress(done, total)``
    (frames at the model's rate) is called once the file is decoded (``done`` 0) and after each window.

    Pass 1 decodes the mix block by block (resampled, channels converted) into the float32
    file ``scratch`` while summing its statistics; pass 2 separates windows of it with
    :func:`~stemsep.inference.chunked.apply_model_many`, whose chunks and cross-fade weights
    are those of the whole file. Memory: one window, whatever the file's duration. Output equals
    :func:`separate_mixes` on the whole mix with the same ``chunking`` (with ``shifts``, every
    window draws the offsets of its seed, as the whole file does).
    """
    channels, rate = int(net.audio_channels), int(net.samplerate)
    stats, total, info = MixStats(), 0, {}
    with open(scratch, "wb") as handle:
        for block in mix_blocks(path, rate, channels, info):
            stats.add(block)
            handle.write(np.ascontiguousarray(block.T).tobytes())
            total += block.shape[1]
    mean, scale = stats.result()
    emitted = 0
    if progress is not None:
        progress(0, total)
    with open(scratch, "rb") as handle:
        while emitted < total:
            start = max(0, emitted - plan.margin) // plan.align * plan.align
            stop = min(total, start + plan.length)
            end = stop if stop == total else stop - plan.margin
            handle.seek(start * channels * 4)
            window = np.fromfile(handle, np.float32, count=(stop - start) * channels).reshape(-1, channels)
            mix = torch.from_numpy(np.ascontiguousarray(window.T)).sub_(mean).div_(scale)
            out = apply_model_many(net, [mix], chunking)[0]  # the same shift offsets in every window
            del mix, window
            sink(out[..., emitted - start:end - start].mul_(scale).add_(mean))
            del out
            emitted = end
            if progress is not None:
                progress(emitted, total)
    scratch.unlink()
    return total, info.get("frames", total)


def mix_blocks(path: Path, rate: int, channels: int, info: dict):
    """:func:`~stemsep.io.audio.iter_mix`, printing its downmix note on stderr once, when met
    (``note: <file>: N channels downmixed to stereo``), as ``stemsep separate`` always has."""
    noted = False
    for block in iter_mix(path, rate, channels, info=info):
        if not noted and "note" in info:
            noted = True
            print(f"note: {info['note']}", file=sys.stderr)
        yield block
