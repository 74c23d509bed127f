"""Robustness augmentations: :class:`ParametricEQ` (every stem alike), and on the rebuilt mixture
:class:`Mp3Codec` and :class:`Limiter` (:class:`~stemsep.data.augment.base.MixAugmentation`); the
signal processing is in :mod:`stemsep.data.augment.degrade`."""

from __future__ import annotations

import math

import torch

from stemsep.data.augment import degrade
from stemsep.data.augment.base import MixAugmentation, _TakesSampleRate, _uniform
from stemsep.data.augment.stembatch import StemBatch
from stemsep.errors import StemsepError


class ParametricEQ(_TakesSampleRate):
    """With probability ``proba`` per example, ``bands`` random peaking EQ bands on all its stems.

    Each band: centre log-uniform in [min_freq, max_freq] Hz, gain uniform in
    [-max_gain_db, max_gain_db] (or [min_gain_db, max_gain_db]), Q log-uniform in [min_q, max_q].
    The same linear filter is applied to every stem and channel of an example, so the mixture
    (the sum of the stems) is the equalised mixture: recordings and masters with other tonal
    balances. The sample rate is the data's (:meth:`bind`; ``samplerate``: the old key, see the module).
    """

    def __init__(self, proba: float = 0.5, bands: int = 2, min_freq: float = 60.0, max_freq: float = 12000.0,
                 max_gain_db: float = 6.0, min_gain_db: float | None = None, min_q: float = 0.5, max_q: float = 2.0,
                 samplerate: int | None = None):
        self.proba, self.bands = float(proba), int(bands)
        self.min_freq, self.max_freq = float(min_freq), float(max_freq)
        self.max_gain_db = float(max_gain_db)
        self.min_gain_db = -self.max_gain_db if min_gain_db is None else float(min_gain_db)
        self.min_q, self.max_q = float(min_q), float(max_q)
        if not 0 < self.min_freq <= self.max_freq:
            raise StemsepError(f"ParametricEQ: need 0 < min_freq <= max_freq, got {self.min_freq}, {self.max_freq}")
        self._stated_samplerate(samplerate)
        if self.samplerate is not None:
            self._check_rate()

    def _check_rate(self) -> None:
        if not self.max_freq < self.samplerate / 2:
            raise StemsepError(f"ParametricEQ: need max_freq < samplerate / 2, got {self.max_freq} at "
                               f"{self.samplerate} Hz")

    def _log_uniform(self, low: float, high: float, generator: torch.Generator) -> float:
        return math.exp(math.log(low) + (math.log(high) - math.log(low)) * _uniform((1,), generator).item())

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        for b in range(batch.batch):
            if _uniform((1,), generator).item() >= self.proba:
                continue
            bands = []
            for _ in range(self.bands):
                freq = self._log_uniform(self.min_freq, self.max_freq, generator)
                gain = self.min_gain_db + (self.max_gain_db - self.min_gain_db) * _uniform((1,), generator).item()
                bands.append((freq, gain, self._log_uniform(self.min_q, self.max_q, generator)))
            batch.set_example(b, degrade.peaking_eq(batch.example(b), bands, self._rate()))
        return batch


class Mp3Codec(MixAugmentation, _TakesSampleRate):
    """With probability ``proba`` per example, an MP3 encode/decode round trip of the mixture.

    The bit rate is constant, drawn through libsndfile's compression level, uniform in
    [min_compression, max_compression] (0: 320 kbps, 0.5: about 160, 0.85: about 80 kbps).
    Length, sample rate and alignment are kept; stems stay clean. In-process (soundfile /
    libsndfile >= 1.1), about 0.1 s of CPU per second of stereo audio. The sample rate is the data's
    (:meth:`bind`; ``samplerate``: the old key, see the module).
    """

    def __init__(self, proba: float = 0.5, min_compression: float = 0.3, max_compression: float = 0.9,
                 samplerate: int | None = None):
        self.proba = float(proba)
        self._stated_samplerate(samplerate)
        self.min_compression, self.max_compression = float(min_compression), float(max_compression)
        if not 0 <= self.min_compression <= self.max_compression < 1:
            raise StemsepError("Mp3Codec: need 0 <= min_compression <= max_compression < 1")
        degrade.check_mp3_support()  # at configuration time, not in a DataLoader worker

    def apply(self, mix, stems, generator):
        mix = mix.clone()
        span = self.max_compression - self.min_compression
        for b in range(mix.shape[0]):
            if _uniform((1,), generator).item() < self.proba:
                level = self.min_compression + span * _uniform((1,), generator).item()
                mix[b] = degrade.mp3_round_trip(mix[b], self._rate(), level)
        return mix, stems


class Limiter(MixAugmentation, _TakesSampleRate):
    """LimitAug-style brickwall limiting of the mixture (Chae et al., 2023), with probability ``proba``.

    Per example the mixture is driven ``drive`` dB (uniform in [min_drive_db, max_drive_db])
    above ``threshold`` (linear peak, e.g. 0.99) by a gain ``k = threshold * 10**(drive/20) /
    peak(mix)`` applied to the mixture **and** the stems, then the mixture alone goes through a
    look-ahead limiter with gain curve ``g(t)`` in (0, 1] (:func:`degrade.limiter_gain`,
    ``lookahead_ms`` attack, ``hold_ms`` before release). Results:

    - the mixture is ``g(t) * k * mix``, its peak is at most ``threshold``;
    - ``targets="linear"`` (default, as LimitAug): stems are ``k * stems``, so they sum to the
      *unlimited* scaled mixture ``k * mix``, i.e. ``limited mix = g(t) * sum(stems)``: the
      network learns to undo the limiting;
    - ``targets="limited"``: stems are ``g(t) * k * stems`` and sum exactly to the limited mix.

    The sample rate is the data's (:meth:`bind`; ``samplerate``: the old key, see the module).
    """

    def __init__(self, proba: float = 0.5, threshold: float = 0.99, min_drive_db: float = 0.0,
                 max_drive_db: float = 9.0, lookahead_ms: float = 5.0, hold_ms: float = 50.0,
                 targets: str = "linear", samplerate: int | None = None):
        if targets not in ("linear", "limited"):
            raise StemsepError(f"Limiter: targets must be 'linear' or 'limited', got {targets!r}")
        if not 0 < float(threshold) <= 1 or float(min_drive_db) > float(max_drive_db):
            raise StemsepError("Limiter: need 0 < threshold <= 1 and min_drive_db <= max_drive_db")
        self.proba, self.threshold = float(proba), float(threshold)
        self.min_drive_db, self.max_drive_db = float(min_drive_db), float(max_drive_db)
        self.lookahead_ms, self.hold_ms, self.targets = float(lookahead_ms), float(hold_ms), targets
        self._stated_samplerate(samplerate)

    def apply(self, mix, stems, generator):
        mix, stems = mix.clone(), stems.clone()
        rate = self._rate()
        lookahead = max(1, round(self.lookahead_ms * rate / 1000))
        hold = max(0, round(self.hold_ms * rate / 1000))
        for b in range(mix.shape[0]):
            if _uniform((1,), generator).item() >= self.proba:
                continue
            drive = self.min_drive_db + (self.max_drive_db - self.min_drive_db) * _uniform((1,), generator).item()
            peak = float(mix[b].abs().max())
            if peak <= 0:
                continue
            k = self.threshold * 10 ** (drive / 20) / peak
            gain = degrade.limiter_gain(mix[b] * k, self.threshold, lookahead, hold)
            mix[b] = (mix[b] * k * gain).clamp(-self.threshold, self.threshold)
            stems[b] *= (k * gain) if self.targets == "limited" else k
        return mix, stems


