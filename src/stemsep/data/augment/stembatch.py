"""A batch of stems kept *lazy* while augmentations run, written out once at the end.

Most training augmentations only decide, per stem of each example, where to start reading
(shift), whether to swap channels, which gain to apply (sign, scale) and which song the stem
comes from (remix). Doing each of these as a tensor operation costs a full pass over the batch
(tens of MB) per augmentation; recording the decisions instead and applying them in one pass
when the batch is materialised makes augmentation nearly free next to decoding.

A :class:`StemBatch` holds, for every (example, source) row, a ``(C, T)`` audio view (not
necessarily contiguous, e.g. a transposed decoder buffer or a slice of a longer decoded
stretch) and the pending ``offset``, channel ``flip`` and ``gain``. All rows share the usable
``length``.
"""

from __future__ import annotations

import numpy as np
import torch


class StemBatch:
    """Rows ``wavs[b][s]`` of shape ``(C, >= offset + length)`` plus pending per-row edits."""

    def __init__(self, wavs: list[list[torch.Tensor]], length: int):
        self.wavs = wavs
        self.batch, self.sources = len(wavs), len(wavs[0]) if wavs else 0
        self.channels = wavs[0][0].shape[0] if wavs else 0
        self.length = int(length)
        self.offsets = torch.zeros(self.batch, self.sources, dtype=torch.long)
        self.flips = torch.zeros(self.batch, self.sources, dtype=torch.bool)
        self.gains = torch.ones(self.batch, self.sources)

    @classmethod
    def from_tensor(cls, stems: torch.Tensor) -> StemBatch:
        """Views into ``stems (B, S, C, T)`` (no copy)."""
        return cls([list(example) for example in stems], stems.shape[-1])

    @classmethod
    def from_rows(cls, rows: list[list[torch.Tensor]]) -> StemBatch:
        """Examples given as lists of ``(C, T)`` stems; the length is the shortest row."""
        return cls(rows, min(w.shape[-1] for example in rows for w in example))

    def reindex(self, index: torch.Tensor) -> None:
        """Row ``(b, s)`` becomes old row ``(index[b, s], s)`` (remixing across examples)."""
        rows = index.tolist()
        self.wavs = [[self.wavs[rows[b][s]][s] for s in range(self.sources)] for b in range(self.batch)]
        sources = torch.arange(self.sources)
        self.offsets = self.offsets[index, sources]
        self.flips = self.flips[index, sources]
        self.gains = self.gains[index, sources]

    def example(self, b: int) -> torch.Tensor:
        """Example ``b`` with its pending edits applied: ``(S, C, length)``."""
        out = torch.empty(self.sources, self.channels, self.length, dtype=self.wavs[b][0].dtype)
        self._write(b, out)
        return out

    def set_example(self, b: int, stems: torch.Tensor) -> None:
        """Replace example ``b`` by already edited audio ``(S, C, >= length)``."""
        self.wavs[b] = list(stems)
        self.offsets[b], self.flips[b], self.gains[b] = 0, False, 1.0

    def materialize(self, length: int | None = None) -> torch.Tensor:
        """The batch ``(B, S, C, length)`` (default: the usable length; longer is zero-padded)."""
        length = self.length if length is None else int(length)
        dtype = self.wavs[0][0].dtype if self.batch else torch.float32
        out = torch.empty(self.batch, self.sources, self.channels, length, dtype=dtype)
        for b in range(self.batch):
            self._write(b, out[b])
        return out

    def _write(self, b: int, out: torch.Tensor) -> None:
        # numpy's strided loops read the decoder's interleaved buffers about 2x faster than torch's
        length = out.shape[-1]
        offsets, flips, gains = self.offsets[b].tolist(), self.flips[b].tolist(), self.gains[b].tolist()
        target = out.numpy()
        for s, wav in enumerate(self.wavs[b]):
            src = wav[:, offsets[s]: offsets[s] + length].numpy()
            have = src.shape[-1]
            if have < length:
                target[s, :, have:] = 0
            if flips[s]:
                src = src[::-1]
            if gains[s] == 1.0:
                target[s, :, :have] = src
            else:
                np.multiply(src, gains[s], out=target[s, :, :have])
