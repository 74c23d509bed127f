"""Training augmentations on batches of stems, in-process and seeded.

Configs, recipes and the config.yaml of every run name each augmentation
``stemsep.data.augment.<Class>``: that is their public path (the classes live in ``base``, ``stems``,
``pitch`` and ``robust``, and say ``stemsep.data.augment`` as their module, so printed configs keep
the short path).

Every augmentation is a small callable ``aug(stems, generator) -> stems`` on a **batch**
``(B, S, C, T)`` (batch level because :class:`Remix` recombines stems across songs), drawing
all its randomness from the given ``torch.Generator`` so a seeded stream is reproducible. The
mixture is *not* an input: callers rebuild it as ``stems.sum(1)`` afterwards, so it equals the
sum of the (augmented) stems -- except for the robustness augmentations that edit the mixture
itself (:class:`MixAugmentation`: :class:`Mp3Codec`, :class:`Limiter`), which run last on the
rebuilt ``(mix, stems)``; :class:`ParametricEQ` filters every stem alike and keeps the sum. Internally each one implements ``transform`` on a
lazy :class:`~stemsep.data.augment.stembatch.StemBatch`, recording per-stem offsets, channel swaps,
gains and remix indices, so :func:`apply_augmentations` writes the batch once.

Some augmentations consume samples (:class:`Shift` crops, :class:`Repitch` may speed up):
``aug.input_length(n)`` says how many input samples give at least ``n`` output samples, and
:func:`apply_augmentations` crops the result to exactly ``n``. Constructor arguments are plain
numbers so they can be given in YAML (``class_path: stemsep.data.augment.Remix``,
``init_args: {group_size: 4}``); times are in seconds (``Shift(seconds=1.0)``, ``Limiter``'s
milliseconds).

**Sample rate.** No augmentation states a sample rate: the stream they run in gives them its own
(:meth:`Augmentation.bind`, called by :class:`~stemsep.data.loaders.streams.TrainStream` with the shards' rate
and by :class:`~stemsep.data.loaders.StemDataModule` with the network's, and
:func:`bind_augmentations` for a list). The old per-augmentation ``samplerate`` key of
:class:`ParametricEQ`, :class:`Limiter` and :class:`Mp3Codec` is still read: equal to the data's, a
one-line note says to drop it; different, it is a one-line error.

Defaults follow the demucs recipe: Shift up to 1 s, channel swap, sign flip, gains in
[0.25, 1.25], remix in groups of 4, and repitch with probability 0.2 (pitch ±2 semitones,
tempo ±12 %), done here in-process (WSOLA as ``soundstretch`` does, or a phase-locked phase
vocoder, then band-limited resampling) instead of a ``soundstretch`` subprocess.
"""

from stemsep.data.augment.base import (
    Augmentation,
    MixAugmentation,
    apply_augmentations,
    bind_augmentations,
    needed_length,
)
from stemsep.data.augment.pitch import Repitch, repitch, time_stretch
from stemsep.data.augment.robust import Limiter, Mp3Codec, ParametricEQ
from stemsep.data.augment.stembatch import StemBatch
from stemsep.data.augment.stems import FlipChannels, FlipSign, Remix, Scale, Shift

__all__ = ["Augmentation", "FlipChannels", "FlipSign", "Limiter", "MixAugmentation", "Mp3Codec", "ParametricEQ", "Remix", "Repitch", "Scale", "Shift", "StemBatch", "apply_augmentations", "bind_augmentations", "needed_length", "repitch", "time_stretch"]

# The public path of the augmentations (what configs name): printed configs, reprs and pickles use it.
for _cls in (Augmentation, MixAugmentation, FlipChannels, FlipSign, Remix, Scale, Shift, Repitch, Limiter, Mp3Codec,
             ParametricEQ):
    _cls.__module__ = __name__
del _cls
