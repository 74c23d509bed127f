"""The demucs augmentations of the stems themselves: :class:`Shift` (per-stem random crops),
:class:`FlipChannels`, :class:`FlipSign`, :class:`Scale` (gains) and :class:`Remix` (stems of
different songs recombined)."""

from __future__ import annotations

import torch

from stemsep.data.augment.base import Augmentation, _note, _TakesSampleRate, _uniform
from stemsep.data.augment.stembatch import StemBatch
from stemsep.errors import StemsepError


class Shift(_TakesSampleRate):
    """Random crop up to ``seconds`` shorter (default 1 s, demucs'), independently per stem unless ``same``.

    Stems of one example move against each other by up to ``seconds``, which makes new mixtures from
    the same song; the count of samples is ``round(seconds * samplerate)`` at the data's rate
    (:meth:`bind`). ``shift`` is the old key, in samples: still read as it was (exactly that many
    samples; no rate needed), with a one-line note giving the ``seconds`` to write instead; not
    together with ``seconds``.
    """

    def __init__(self, shift: int | None = None, same: bool = False, seconds: float | None = None):
        if shift is not None and seconds is not None:
            raise StemsepError(f"Shift: give seconds ({seconds}) or the old shift in samples ({shift}), not both")
        if (seconds is not None and float(seconds) < 0) or (shift is not None and int(shift) < 0):
            raise StemsepError(f"Shift: the shift must be >= 0, got {seconds if shift is None else shift}")
        self.seconds = 1.0 if seconds is None else float(seconds)
        self.same = bool(same)
        self._samples = None if shift is None else int(shift)  # the old key
        self._stated_samplerate(None)

    def _check_rate(self) -> None:
        if self._samples is not None and not self._noted:
            self._noted = True
            _note(f"Shift: init_args.shift {self._samples} counts samples (the old key): write seconds: "
                  f"{self._samples / self.samplerate:g} instead ({self._samples} samples at {self.samplerate} Hz)")

    @property
    def shift(self) -> int:
        """The largest shift in samples."""
        if self._samples is not None:
            return self._samples
        return round(self.seconds * self._rate())

    def input_length(self, length: int) -> int:
        return length + self.shift

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        shift = self.shift
        if shift <= 0 or batch.length - shift <= 0:
            return batch
        count = 1 if self.same else batch.sources
        batch.offsets += torch.randint(0, shift + 1, (batch.batch, count), generator=generator)
        batch.length -= shift
        return batch


class FlipChannels(Augmentation):
    """Swap left and right of each stem with probability 1/2 (stereo only)."""

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        if batch.channels == 2:
            batch.flips ^= _uniform((batch.batch, batch.sources), generator) < 0.5
        return batch


class FlipSign(Augmentation):
    """Multiply each stem by -1 with probability 1/2."""

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        batch.gains *= (_uniform((batch.batch, batch.sources), generator) < 0.5).float() * 2 - 1
        return batch


class Scale(Augmentation):
    """With probability ``proba`` (per batch), a random gain in [min, max] per stem."""

    def __init__(self, proba: float = 1.0, min: float = 0.25, max: float = 1.25):  # noqa: A002
        self.proba, self.min, self.max = float(proba), float(min), float(max)

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        apply = _uniform((1,), generator).item() < self.proba
        gains = self.min + (self.max - self.min) * _uniform((batch.batch, batch.sources), generator)
        if apply:
            batch.gains *= gains
        return batch


class Remix(Augmentation):
    """With probability ``proba`` (per batch), shuffle each source across songs of a group.

    The batch is cut into consecutive groups of ``group_size`` examples (the last one may be
    smaller); within a group, each source is permuted independently, so an example gets e.g.
    the drums of one song and the vocals of another.
    """

    def __init__(self, proba: float = 1.0, group_size: int = 4):
        self.proba, self.group_size = float(proba), int(group_size)

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        if _uniform((1,), generator).item() >= self.proba or self.group_size < 2:
            return batch
        index = torch.empty(batch.batch, batch.sources, dtype=torch.long)
        for start in range(0, batch.batch, self.group_size):
            size = min(self.group_size, batch.batch - start)
            for source in range(batch.sources):
                index[start:start + size, source] = start + torch.randperm(size, generator=generator)
        batch.reindex(index)
        return batch


