"""The base of the augmentations: :class:`Augmentation` (per-batch edits recorded on a lazy
:class:`~stemsep.data.augment.stembatch.StemBatch`), :class:`MixAugmentation` (edits of the rebuilt
mixture), the sample rate they take from the data (:func:`bind_augmentations`), and
:func:`apply_augmentations`, which runs a list and writes the batch once."""


from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch

from stemsep.data.augment.stembatch import StemBatch
from stemsep.errors import StemsepError


class Augmentation:
    """Base class: identity on length; subclasses implement ``transform`` on a lazy batch."""

    def bind(self, samplerate: int) -> None:
        """Take the sample rate of the data this augmentation runs on (the stream calls it before the
        first batch). Augmentations that work in seconds or hertz override it; the others ignore it."""

    def input_length(self, length: int) -> int:
        """Input samples needed for ``length`` output samples."""
        return length

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        """Record this augmentation's edits on a lazy batch (subclasses override this)."""
        raise NotImplementedError

    def __call__(self, stems: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch ``(B, S, C, T)`` of stems; returns a new tensor."""
        return self.transform(StemBatch.from_tensor(stems), generator).materialize()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def bind_augmentations(augmentations: Iterable, samplerate: int) -> None:
    """Give every augmentation of a list the data's sample rate (plain callables have no ``bind``)."""
    for aug in augmentations:
        bind = getattr(aug, "bind", None)
        if callable(bind):
            bind(int(samplerate))


def _note(message: str) -> None:
    """A one-line note on a config key that still works but should change (shown once per message)."""
    warnings.warn(message, FutureWarning, stacklevel=4)


class _TakesSampleRate(Augmentation):
    """An augmentation that needs the data's sample rate: :meth:`bind` gives it; ``samplerate`` given to
    the constructor (the old per-augmentation key) is checked against it."""

    samplerate: int | None = None  # the data's, once bound
    _stated: int | None = None
    _noted = False

    def _stated_samplerate(self, samplerate: int | None) -> None:
        self._stated = None if samplerate is None else int(samplerate)
        self.samplerate = self._stated  # until bound: the stated rate, if any
        self._noted = False

    def bind(self, samplerate: int) -> None:
        rate, name = int(samplerate), type(self).__name__
        if self._stated is not None and self._stated != rate:
            raise StemsepError(f"{name}: init_args.samplerate {self._stated} differs from the data's sample rate "
                               f"{rate} Hz: drop the key (every augmentation takes the data's rate)")
        if self._stated is not None and not self._noted:
            self._noted = True
            _note(f"{name}: init_args.samplerate {self._stated} is no longer needed (augmentations take the "
                  "data's sample rate): drop the key")
        self.samplerate = rate
        self._check_rate()

    def _check_rate(self) -> None:
        """Settings that depend on the rate, checked once it is known (subclasses)."""

    def _rate(self) -> int:
        if self.samplerate is None:
            raise StemsepError(f"{type(self).__name__}: the data's sample rate is unknown: call bind(samplerate) "
                               "first (StemDataModule and its training stream do)")
        return self.samplerate


class MixAugmentation(Augmentation):
    """An edit of the *mixture* after the stems are final: ``apply(mix, stems, generator)``.

    The mixture then no longer equals the sum of the stems (that is the point: the network
    must map a degraded mixture to clean stems). Such augmentations come after all stem
    augmentations in a list; :func:`apply_augmentations` runs them on ``(mix, stems)``.
    """

    def apply(self, mix: torch.Tensor, stems: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``mix (B, C, T)``, ``stems (B, S, C, T)`` -> edited ``(mix, stems)``."""
        raise NotImplementedError

    def __call__(self, stems: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise StemsepError(f"{type(self).__name__} edits the mixture: use apply_augmentations")


def needed_length(augmentations: Sequence[Augmentation], length: int) -> int:
    """Samples to read so that ``augmentations`` leave at least ``length``."""
    for aug in reversed(list(augmentations)):
        length = aug.input_length(length)
    return length


def apply_augmentations(augmentations: Sequence[Augmentation], stems: torch.Tensor | StemBatch,
                        generator: torch.Generator, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``augmentations`` on ``stems (B, S, C, T)`` (or a lazy batch), crop or pad to ``length``.

    Returns ``(mix, stems)``: ``mix`` is the sum of the stems, then edited by the
    :class:`MixAugmentation` s at the end of the list (codec, limiter) in order. Augmentations
    with a ``transform`` only record their edits, so the batch is written once; any other
    callable ``aug(tensor, generator)`` works too (the batch is materialised for it).
    """
    batch = StemBatch.from_tensor(stems) if isinstance(stems, torch.Tensor) else stems
    on_mix = [aug for aug in augmentations if isinstance(aug, MixAugmentation)]
    on_stems = [aug for aug in augmentations if not isinstance(aug, MixAugmentation)]
    if on_mix and list(augmentations)[-len(on_mix):] != on_mix:
        raise StemsepError(f"augmentations: {type(on_mix[0]).__name__} edits the mixture and must come after "
                           "every stem augmentation")
    for aug in on_stems:
        if getattr(type(aug), "transform", Augmentation.transform) is not Augmentation.transform:
            batch = aug.transform(batch, generator)
        else:
            batch = StemBatch.from_tensor(aug(batch.materialize(), generator))
    out = batch.materialize(length)
    mix = out.sum(1)
    for aug in on_mix:  # the mixture is carried separately from here on
        mix, out = aug.apply(mix, out, generator)
    return mix, out
