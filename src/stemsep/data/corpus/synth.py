"""A synthetic multitrack corpus in the MUSDB18-HQ layout, deterministic by seed.

Each song has its own tempo, key, mode, chord progression and panning, and four stems:

- ``drums``: kick (pitch-swept sine), snare (filtered noise + tone) and hi-hats on a
  16-step pattern with per-song variations;
- ``bass``: a filtered sawtooth line following the chord roots;
- ``other``: detuned pad chords plus a plucked arpeggio;
- ``vocals``: a glottal-pulse voice with vibrato, shaped by vowel formants, singing phrases.

Stems are quantised to the 24-bit grid before mixing, so ``mixture.wav`` (24-bit PCM) is the
exact sum of the stems as read back. Usage: ``stemsep synth --out DIR --songs N --seconds S``.
"""

from __future__ import annotations

import functools
import os
import shutil
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter
from tqdm import tqdm

from stemsep.contract import DEFAULT_SOURCES
from stemsep.errors import StemsepError
from stemsep.io.files import ensure_writable_dir

SAMPLERATE = 44100
_LSB = 2.0**-23
_HOP = 32  # control-rate hop (samples) of the voice's pitch contour
_VOWELS = {  # formant frequencies (Hz) and bandwidths of a few vowels
    "a": ([800, 1150, 2900], [80, 90, 120]),
    "e": ([400, 1700, 2600], [60, 80, 100]),
    "i": ([300, 2200, 3000], [50, 90, 100]),
    "o": ([450, 800, 2830], [70, 80, 100]),
    "u": ([325, 700, 2530], [50, 60, 170]),
}
_MAJOR = [0, 2, 4, 5, 7, 9, 11]
_MINOR = [0, 2, 3, 5, 7, 8, 10]


def midi_to_hz(note: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=np.float64) - 69.0) / 12.0)


class SongPlan:
    """The musical decisions for one song, drawn from its own random generator."""

    def __init__(self, rng: np.random.Generator, seconds: float, samplerate: int):
        self.rng = rng
        self.sr = samplerate
        self.length = int(round(seconds * samplerate))
        self.bpm = float(rng.uniform(80, 160))
        self.step = int(round(samplerate * 60.0 / self.bpm / 4))  # one 16th note in samples
        self.root = int(rng.integers(36, 48))  # bass register MIDI note of the key
        self.scale = _MAJOR if rng.random() < 0.5 else _MINOR
        degrees = [0] + list(rng.choice([1, 2, 3, 4, 5], size=3))
        self.progression = [int(d) for d in degrees]  # scale degrees, one chord per bar
        self.pans = {name: float(rng.uniform(-0.6, 0.6)) for name in DEFAULT_SOURCES}
        self.pans["bass"] *= 0.3
        self.gains = {name: float(rng.uniform(0.5, 1.0)) for name in DEFAULT_SOURCES}

    def degree(self, bar: int) -> int:
        """Scale degree of this bar's chord."""
        return self.progression[bar % len(self.progression)]

    def triad(self, degree: int) -> list[int]:
        """MIDI notes of the triad on a degree, one octave above the bass root."""
        return [self.root + 12 + self.note_of(degree + k) for k in (0, 2, 4)]

    def note_of(self, degree: int) -> int:
        octave, idx = divmod(degree, 7)
        return 12 * octave + self.scale[idx]

    def onsets(self, every: int) -> np.ndarray:
        """Sample positions of every ``every``-th 16th step."""
        return np.arange(0, self.length, self.step * every)


def _place(out: np.ndarray, onset: int, sound: np.ndarray) -> None:
    end = min(len(out), onset + len(sound))
    if end > onset:
        out[onset:end] += sound[: end - onset]


def _decay(n: int, tau: float, sr: int) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau * sr))


def _cycles(freq: float, n: int, sr: int, phase: float = 0.0) -> np.ndarray:
    """Phase, in cycles, of ``n`` samples of a tone of constant frequency."""
    return phase + np.arange(n) * (freq / sr)


def _hop_cycles(increments: np.ndarray, n: int) -> np.ndarray:
    """Float32 phase, in cycles modulo 1 at each hop start, of a frequency constant over each ``_HOP``."""
    starts = np.cumsum(increments * _HOP) - increments * _HOP
    starts = (starts - np.floor(starts)).astype(np.float32)
    return (starts[:, None] + increments.astype(np.float32)[:, None] * np.arange(_HOP, dtype=np.float32)).ravel()[:n]


def _saw(cycles: np.ndarray) -> np.ndarray:
    """Sawtooth in [-1, 1) of a phase given in cycles."""
    return 2.0 * (cycles - np.floor(cycles)) - 1.0


def _lowpass(x: np.ndarray, cutoffs: float | tuple[float, ...], sr: float) -> np.ndarray:
    """One-pole lowpass, or a cascade of them (one per cutoff) run as a single filter."""
    poles = np.exp(-2 * np.pi * np.atleast_1d(cutoffs) / sr)
    return lfilter([np.prod(1 - poles)], np.poly(poles), x)


@functools.cache
def _formants(vowel: str, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """One filter summing a two-pole resonator per formant of ``vowel`` (the k-th weighted 1/k)."""
    b, a = np.zeros(1), np.ones(1)
    for k, (freq, bandwidth) in enumerate(zip(*_VOWELS[vowel])):
        r = np.exp(-np.pi * bandwidth / sr)
        pole = np.array([1, -2 * r * np.cos(2 * np.pi * freq / sr), r * r])
        b = np.polyadd(np.polymul(b, pole), a * (1 - r) / (k + 1))
        a = np.polymul(a, pole)
    return b, a


def drums(plan: SongPlan) -> np.ndarray:
    rng, sr, n = plan.rng, plan.sr, plan.length
    out = np.zeros(n, dtype=np.float32)
    kick_len = int(0.25 * sr)
    t = np.arange(kick_len) / sr
    kick = np.sin(2 * np.pi * (50 * t + 100 * 0.03 * (1 - np.exp(-t / 0.03)))) * _decay(kick_len, 0.08, sr)
    snare_len = int(0.18 * sr)
    snare = (_lowpass(rng.standard_normal(snare_len), 5000, sr) * 0.6
             + 0.4 * np.sin(2 * np.pi * 190 * np.arange(snare_len) / sr)) * _decay(snare_len, 0.05, sr)
    hat_len = int(0.05 * sr)
    hat_noise = rng.standard_normal(hat_len)
    hat = (hat_noise - _lowpass(hat_noise, 7000, sr)) * _decay(hat_len, 0.012, sr) * 0.5
    kick_steps = {0, 8} | ({10} if rng.random() < 0.5 else set()) | ({6} if rng.random() < 0.3 else set())
    snare_steps = {4, 12}
    hat_every = int(rng.choice([1, 2]))
    for i, onset in enumerate(plan.onsets(1)):
        step = i % 16
        if step in kick_steps:
            _place(out, onset, kick)
        if step in snare_steps:
            _place(out, onset, snare * rng.uniform(0.8, 1.0))
        if step % hat_every == 0:
            _place(out, onset, hat * rng.uniform(0.5, 1.0))
    return out


def bass(plan: SongPlan) -> np.ndarray:
    sr, n = plan.sr, plan.length
    out = np.zeros(n, dtype=np.float32)
    every = int(plan.rng.choice([2, 4]))
    note_len = plan.step * every
    env = np.minimum(1.0, np.arange(note_len) / (0.005 * sr)) * _decay(note_len, 0.25, sr)

    @functools.cache
    def note(pitch: int) -> np.ndarray:
        return _saw(_cycles(midi_to_hz(pitch), note_len, sr)) * env

    for i, onset in enumerate(plan.onsets(every)):
        pitch = plan.root + plan.note_of(plan.degree((i * every) // 16))
        if (i % 4 == 3) and plan.rng.random() < 0.4:
            pitch += 7  # passing fifth
        _place(out, onset, note(pitch))
    return _lowpass(out, (400, 800), sr)


def other(plan: SongPlan) -> np.ndarray:
    """Per bar a detuned saw pad on the chord and a plucked square-wave arpeggio in 8th notes."""
    sr, n = plan.sr, plan.length
    bar_len, pluck_len = plan.step * 16, plan.step * 2
    attack = np.minimum(1.0, np.arange(bar_len) / (0.15 * sr))
    release = np.minimum(1.0, (bar_len - np.arange(bar_len)) / (0.05 * sr))
    pluck_env = _decay(pluck_len, 0.08, sr)

    @functools.cache
    def pluck(pitch: int) -> np.ndarray:
        tone = np.sign(np.sin(2 * np.pi * _cycles(midi_to_hz(pitch), pluck_len, sr)))
        return 0.12 * _lowpass(tone, 3000, sr) * pluck_env

    @functools.cache
    def bar(degree: int) -> np.ndarray:  # the progression repeats: each chord is rendered once
        chord = plan.triad(degree)
        pad = sum(_saw(_cycles(midi_to_hz(note + detune), bar_len, sr, phase=plan.rng.random()))
                  for note in chord for detune in (-0.08, 0.08))
        sound = 0.15 * _lowpass(pad, 1500, sr) * attack * release
        for k in range(8):
            _place(sound, k * pluck_len, pluck(chord[k % 3] + 12))
        return sound

    out = np.zeros(n, dtype=np.float32)
    for i, onset in enumerate(plan.onsets(16)):
        _place(out, onset, bar(plan.degree(i)))
    return out


def vocals(plan: SongPlan) -> np.ndarray:
    """A sawtooth glottal source with portamento and vibrato, through vowel formants, in phrases."""
    rng, sr, n = plan.rng, plan.sr, plan.length
    # Melody: a pitch per 8th note from the scale, phrases of 2 bars separated by rests.
    note_len = plan.step * 2
    n_notes = n // note_len + 1
    degrees = np.cumsum(rng.integers(-2, 3, size=n_notes)).clip(-3, 9)
    pitches = np.array([plan.root + 24 + plan.note_of(int(d) + 7) - 12 for d in degrees], dtype=np.float64)
    # Pitch contour at control rate (one value per _HOP samples): notes, portamento, vibrato.
    ctrl_sr = sr / _HOP
    t = np.arange(0, n, _HOP)
    f0 = _lowpass(midi_to_hz(pitches)[t // note_len], 30, ctrl_sr)
    vib_rate, vib_depth = rng.uniform(4.5, 6.5), rng.uniform(0.2, 0.5)  # Hz, semitones
    f0 = f0 * 2.0 ** (vib_depth * np.sin(2 * np.pi * vib_rate * t / sr) / 12)
    source = _saw(_hop_cycles(f0 / sr, n)) + rng.standard_normal(n, dtype=np.float32) * np.float32(0.05)
    phrase = plan.step * 32
    sing = _lowpass((np.arange(2 * phrase) < phrase).astype(np.float32), 20, sr)  # a sung and a silent phrase
    voice = np.empty(n, dtype=np.float32)
    vowel_len = note_len * 4
    for start in range(0, n, vowel_len):  # one vowel per half bar
        seg = slice(start, start + vowel_len)
        voice[seg] = lfilter(*_formants(str(rng.choice(list(_VOWELS))), sr), source[seg])
    return voice * np.resize(sing, n)


_GENERATORS = {"drums": drums, "bass": bass, "other": other, "vocals": vocals}


def render_song(seed: int, index: int, seconds: float, samplerate: int = SAMPLERATE) -> dict[str, np.ndarray]:
    """All stems and the mixture of one song as 24-bit sample values, int32 ``(time, channels=2)``.

    Stems are quantised first and the mixture is their integer sum, so it is exact.
    """
    plan = SongPlan(np.random.default_rng([seed, index]), seconds, samplerate)
    monos, gains = {}, {}  # each stem as mono float32, and its gain per channel
    for name in DEFAULT_SOURCES:
        mono = _GENERATORS[name](plan).astype(np.float32, copy=False)
        pan = plan.pans[name]
        monos[name] = mono
        gains[name] = plan.gains[name] / (np.abs(mono).max() + 1e-9) * np.sqrt([(1 - pan) / 2, (1 + pan) / 2])
    mix_peak = max(np.abs(sum(monos[name] * np.float32(gains[name][c]) for name in DEFAULT_SOURCES)).max()
                   for c in range(2))
    peak = max(mix_peak, *(g.max() for g in gains.values()))  # no stem may clip either
    scale = 0.9 / max(peak, 1e-9) / _LSB
    stems = {name: _quantise(monos[name], gains[name] * scale) for name in DEFAULT_SOURCES}
    stems["mixture"] = sum(stems[name] for name in DEFAULT_SOURCES)
    return stems


def _quantise(mono: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``mono`` times each channel's gain, rounded to integers: int32 ``(time, channels)``."""
    out = np.empty((len(mono), len(gains)), dtype=np.int32)
    for c, gain in enumerate(gains):
        out[:, c] = np.rint(mono * np.float32(gain))
    return out


def _write_pcm24(path: Path, samples: np.ndarray, samplerate: int) -> None:
    """Write int32 ``(time, channels)`` 24-bit sample values exactly as a 24-bit PCM WAV file."""
    frames = np.empty((samples.size, 3), dtype=np.uint8)  # little-endian: low byte first
    for k in range(3):
        frames[:, k] = samples.reshape(-1) >> (8 * k)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(3)
        out.setframerate(samplerate)
        out.setnframes(len(samples))
        out.writeframesraw(frames)


def generate_corpus(root: str | Path, songs: int = 8, seconds: float = 10.0, seed: int = 0,
                    test_songs: int | None = None, samplerate: int = SAMPLERATE,
                    progress: bool = False, workers: int | None = None) -> Path:
    """Write ``songs`` training and ``test_songs`` (default ``max(1, songs // 4)``) test songs.

    Layout: ``root/{train,test}/<song>/{mixture,drums,bass,other,vocals}.wav``. Song folders are
    written complete under a temporary name and then renamed, so a killed run leaves no
    half-written song; an existing complete song is kept. Songs are rendered in ``workers``
    processes (default: all cores); each song's content depends only on ``(seed, index)``.
    Returns ``root``.
    """
    if not songs >= 0 or not seconds > 0:
        raise StemsepError("--songs must be >= 0 and --seconds > 0")
    root = ensure_writable_dir(root)
    test_songs = max(1, songs // 4) if test_songs is None else test_songs
    jobs = [(root / "train", seed, i, seconds, samplerate) for i in range(songs)]
    jobs += [(root / "test", seed, songs + i, seconds, samplerate) for i in range(test_songs)]
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    with tqdm(total=len(jobs), desc="synth", unit="song", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                _write_song(*job)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_write_song, *zip(*jobs)):
                    bar.update()
    return root


def _write_song(split_dir: Path, seed: int, index: int, seconds: float, samplerate: int) -> None:
    folder = split_dir / f"song{index:04d}"
    if folder.is_dir():
        return
    tmp = split_dir / f".song{index:04d}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name, wav in render_song(seed, index, seconds, samplerate).items():
            _write_pcm24(tmp / f"{name}.wav", wav, samplerate)
        tmp.rename(folder)
    except OSError as err:
        raise StemsepError(f"{folder}: cannot write the song ({err.strerror or err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed song leaves nothing behind


@dataclass
class SyntheticCorpus:
    """Arguments of :func:`generate_corpus` for a corpus made on first use."""

    songs: int = 16
    seconds: float = 12.0
    seed: int = 0
    test_songs: int | None = None
