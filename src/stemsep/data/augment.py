"""Training augmentations on batches of stems, in-process and seeded.

Kept as one module (over 400 lines): configs, recipes and the config.yaml of every run name each
augmentation ``stemsep.data.augment.<Class>``, and Repitch's pitch/tempo DSP is used by it alone.

Every augmentation is a small callable ``aug(stems, generator) -> stems`` on a **batch**
``(B, S, C, T)`` (batch level because :class:`Remix` recombines stems across songs), drawing
all its randomness from the given ``torch.Generator`` so a seeded stream is reproducible. The
mixture is *not* an input: callers rebuild it as ``stems.sum(1)`` afterwards, so it equals the
sum of the (augmented) stems -- except for the robustness augmentations that edit the mixture
itself (:class:`MixAugmentation`: :class:`Mp3Codec`, :class:`Limiter`), which run last on the
rebuilt ``(mix, stems)``; :class:`ParametricEQ` filters every stem alike and keeps the sum. Internally each one implements ``transform`` on a
lazy :class:`~stemsep.data.stembatch.StemBatch`, recording per-stem offsets, channel swaps,
gains and remix indices, so :func:`apply_augmentations` writes the batch once.

Some augmentations consume samples (:class:`Shift` crops, :class:`Repitch` may speed up):
``aug.input_length(n)`` says how many input samples give at least ``n`` output samples, and
:func:`apply_augmentations` crops the result to exactly ``n``. Constructor arguments are plain
numbers so they can be given in YAML (``class_path: stemsep.data.augment.Remix``,
``init_args: {group_size: 4}``); times are in seconds (``Shift(seconds=1.0)``, ``Limiter``'s
milliseconds).

**Sample rate.** No augmentation states a sample rate: the stream they run in gives them its own
(:meth:`Augmentation.bind`, called by :class:`~stemsep.data.streams.TrainStream` with the shards' rate
and by :class:`~stemsep.data.datamodule.StemDataModule` with the network's, and
:func:`bind_augmentations` for a list). The old per-augmentation ``samplerate`` key of
:class:`ParametricEQ`, :class:`Limiter` and :class:`Mp3Codec` is still read: equal to the data's, a
one-line note says to drop it; different, it is a one-line error.

Defaults follow the demucs recipe: Shift up to 1 s, channel swap, sign flip, gains in
[0.25, 1.25], remix in groups of 4, and repitch with probability 0.2 (pitch ±2 semitones,
tempo ±12 %), done here in-process (WSOLA as ``soundstretch`` does, or a phase-locked phase
vocoder, then band-limited resampling) instead of a ``soundstretch`` subprocess.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from fractions import Fraction

import torch
import torchaudio.functional as AF

from stemsep.data import degrade
from stemsep.data.stembatch import StemBatch
from stemsep.data.wsola import wsola
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


class Repitch(Augmentation):
    """With probability ``proba`` per example, change pitch and tempo of all its stems.

    Pitch moves by a whole number of semitones in [-max_pitch, max_pitch]; tempo by a
    Gaussian percentage (std ``tempo_std``) clipped to ±``max_tempo`` (as demucs). The same
    change applies to every stem of the example, so mixtures stay coherent. ``method``:
    ``wsola`` (default; one set of cuts for all stems and channels) or ``vocoder`` (see
    :func:`repitch`).
    """

    def __init__(self, proba: float = 0.2, max_pitch: int = 2, max_tempo: float = 12.0,
                 tempo_std: float = 5.0, method: str = "wsola", n_fft: int = 2048, hop: int = 512):
        if method not in ("wsola", "vocoder"):
            raise StemsepError(f"Repitch: method must be 'wsola' or 'vocoder', got {method!r}")
        self.proba, self.max_pitch = float(proba), int(max_pitch)
        self.max_tempo, self.tempo_std = float(max_tempo), float(tempo_std)
        self.method, self.n_fft, self.hop = method, int(n_fft), int(hop)

    def input_length(self, length: int) -> int:
        return int(math.ceil(length * (1 + self.max_tempo / 100))) + 1

    def transform(self, batch: StemBatch, generator: torch.Generator) -> StemBatch:
        sources, channels, time = batch.sources, batch.channels, batch.length
        out_length = int(time / (1 + self.max_tempo / 100))
        for b in range(batch.batch):
            if _uniform((1,), generator).item() >= self.proba:
                continue
            semitones = int(torch.randint(-self.max_pitch, self.max_pitch + 1, (1,), generator=generator))
            tempo = float(torch.randn((1,), generator=generator)) * self.tempo_std
            tempo = min(max(tempo, -self.max_tempo), self.max_tempo)
            changed = repitch(batch.example(b).reshape(sources * channels, time), semitones, 1 + tempo / 100,
                              method=self.method, n_fft=self.n_fft, hop=self.hop, length=out_length)
            batch.set_example(b, _fit(changed, out_length).reshape(sources, channels, out_length))
        batch.length = out_length
        return batch


def _fit(wav: torch.Tensor, length: int) -> torch.Tensor:
    if wav.shape[-1] >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


def repitch(wav: torch.Tensor, semitones: float, tempo: float, *, method: str = "wsola", n_fft: int = 2048,
            hop: int = 512, length: int | None = None) -> torch.Tensor:
    """Shift ``wav (..., T)`` by ``semitones`` and play it ``tempo`` times faster.

    A time stretch by ``tempo / f`` (``f = 2**(semitones/12)``) -- ``wsola``
    (:func:`stemsep.data.wsola.wsola`, one cut for all rows, cheap) or ``vocoder``
    (:func:`time_stretch`, per row) -- then band-limited resampling by ``f`` raises pitch and
    tempo together by ``f``. The output
    has about ``T / tempo`` samples; with ``length``, only the input needed for the first
    ``length`` output samples is processed (the output may then be shorter than ``T / tempo``).
    """
    factor = _pitch_fraction(semitones)
    rate = tempo / float(factor)
    shape = wav.shape
    flat = wav.reshape(-1, shape[-1]).float()
    if length is not None:  # the vocoder and resampler look ahead at most n_fft + the filter width
        flat = flat[:, : int(math.ceil(length * tempo)) + 2 * n_fft]
    if abs(rate - 1) > 1e-6:
        if method == "wsola":
            flat = wsola(flat, rate, frame=n_fft)
        elif method == "vocoder":
            flat = time_stretch(flat, rate, n_fft=n_fft, hop=hop)
        else:
            raise StemsepError(f"repitch method must be 'wsola' or 'vocoder', got {method!r}")
    if factor != 1:
        flat = AF.resample(flat, factor.numerator, factor.denominator)
    return flat.reshape(*shape[:-1], flat.shape[-1]).to(wav.dtype)


def _pitch_fraction(semitones: float, cents: float = 0.5) -> Fraction:
    """Smallest-denominator ratio within ``cents`` of ``2**(semitones/12)``.

    Resampling cost grows with the terms of the ratio (e.g. 55/49 for +2 semitones,
    71/67 for +1), so a 0.5-cent approximation keeps it cheap and inaudible.
    """
    exact = 2 ** (semitones / 12)
    for den in range(1, 1000):
        num = max(1, round(exact * den))
        if abs(1200 * math.log2(num / den / exact)) < cents:
            return Fraction(num, den)
    return Fraction(exact).limit_denominator(1000)


@functools.lru_cache(maxsize=8)
def _window(n_fft: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(n_fft, dtype=dtype)


def time_stretch(wav: torch.Tensor, rate: float, *, n_fft: int = 2048, hop: int = 512) -> torch.Tensor:
    """Play ``wav (N, T)`` ``rate`` times faster without changing pitch (phase-locked vocoder).

    Standard phase vocoder (magnitudes interpolated between analysis frames, phases advanced
    by each bin's measured instantaneous frequency) with identity phase locking (Laroche &
    Dolson): each bin keeps its analysed phase offset to the nearest spectral peak, which keeps
    partials coherent and transients sharper than a plain vocoder.
    """
    window = _window(n_fft, wav.dtype).to(wav.device)
    length = wav.shape[-1]
    spec = torch.stft(wav, n_fft, hop, window=window, return_complex=True, center=True)  # (N, F, M)
    frames = spec.shape[-1]
    steps = torch.arange(0, frames - 1, rate, dtype=torch.float64, device=wav.device)
    index = steps.floor().long()
    alpha = (steps - index).to(wav.dtype)[None, None]
    magnitudes, angles = spec.abs(), spec.angle()
    left, right = angles[..., index], angles[..., index + 1]
    magnitude = torch.lerp(magnitudes[..., index], magnitudes[..., index + 1], alpha)
    omega = torch.linspace(0, math.pi * hop, spec.shape[-2], dtype=wav.dtype, device=wav.device)[None, :, None]
    delta = right - left - omega
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi)) + omega
    phase = torch.cat([angles[..., :1], angles[..., :1] + delta[..., :-1].cumsum(-1)], dim=-1)
    # Identity phase locking: bins follow the vocoder phase of their region's peak.
    peak = _nearest_peak(magnitude)
    analysed = torch.where(alpha < 0.5, left, right)
    phase = phase.gather(1, peak) + analysed - analysed.gather(1, peak)
    stretched = torch.polar(magnitude, phase)
    out_length = int(round(length / rate))
    return torch.istft(stretched, n_fft, hop, window=window, center=True, length=out_length)


def _nearest_peak(magnitude: torch.Tensor) -> torch.Tensor:
    """For each bin, the index of the closest local magnitude maximum (``(N, F, M)`` longs)."""
    n, bins, frames = magnitude.shape
    rows = magnitude.transpose(1, 2).reshape(n * frames, 1, bins)  # bins last: fast scans
    is_peak = (rows >= torch.nn.functional.max_pool1d(rows, 5, 1, 2))[:, 0]
    position = torch.arange(bins, device=magnitude.device).expand_as(is_peak)
    big = bins * 4
    left = torch.where(is_peak, position, -big).cummax(1).values
    right = torch.where(is_peak, position, big).flip(1).cummin(1).values.flip(1)
    nearest = torch.where((position - left) <= (right - position), left, right).clamp(0, bins - 1)
    return nearest.reshape(n, frames, bins).transpose(1, 2)


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
