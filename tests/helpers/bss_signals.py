"""Test signals for BSS-eval against museval, like the audio people evaluate, and museval itself.

Each ``signal(name)`` is ``(references, estimates)``, float64 ``(sources, channels, time)``, a few
seconds at 44.1 kHz, two stereo sources (four reference channels: the all-sources Gram matrix
is 2048 x 2048, museval takes 1-3 s). Estimates are what separators make: the source with a
gain, a copy delayed by a few samples (zeros shifted in, inside the 512-tap filters' reach),
leakage of the other source, and noise.

* ``lowpass_pcm16``: 1/f noise stems cut at 16 kHz (Butterworth, zero phase, as MP3/AAC
  encoders cut) and stored as 16-bit PCM (a decoded MUSDB18 track); broadband estimate noise.
* ``tonal``: harmonic stems with vibrato and tremolo, partials falling as 1/h^2 (little energy
  above a few kHz): the Gram matrix is nearly singular and the filters large.
* ``mono_as_stereo``: low-passed stems, one stored as two identical channels, the other with its
  right channel half the left: the Gram matrix is exactly singular.
* ``gated``: low-passed stems, one silent for a second, the other gated (NaN frames).
* ``aac_music``: :func:`aac_music`, rendered music through AAC as MUSDB18's stems.
* ``panned_aac``: the same stems panned mono (right = 0.7 x left) before AAC: the all-sources
  Gram matrix is then singular at its rounding (condition ~3e15), where a Levinson answer with
  an LU-sized backward error landed outside museval's spread (the dense LU is used there).
* ``panned_aac_probe``: bass and other panned mono, estimates through AAC at 128 kbit/s: Levinson
  passes the solver's own checks, but its SIR/SAR medians landed 0.045 dB from museval's (found by
  review); the metric-level probe of :func:`stemsep.evaluation.bss_eval.bss_eval` sends it to the LU.
* ``lowpass_exact``: the 16 kHz cut kept in float64: nothing at all near Nyquist, so with three
  or more channels the Gram matrix has eigenvalues at the level of its rounding, and museval's
  SIR and SAR are decided by that rounding (see docs/evaluation.md).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.signal import butter, correlate, fftconvolve, sosfiltfilt

SR = 44100
NAMES = ("lowpass_pcm16", "tonal", "mono_as_stereo", "gated", "aac_music", "panned_aac", "panned_aac_probe",
         "lowpass_exact")
_MUSIC_STEMS = ("bass", "vocals", "drums", "other")
SEEDS = {"mono_as_stereo": 1}  # the seed whose signal the old (relatively loaded, Levinson-only) solver failed worst


def museval_bss_eval(refs: np.ndarray, ests: np.ndarray, **kwargs) -> dict[str, np.ndarray]:
    """museval in the demucs / paper mode (1 s frames); inputs ``(sources, channels, time)`` like ours."""
    import museval

    kwargs.setdefault("window", SR)
    kwargs.setdefault("hop", SR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = museval.metrics.bss_eval(refs.transpose(0, 2, 1), ests.transpose(0, 2, 1),
                                       compute_permutation=False, framewise_filters=False,
                                       bsseval_sources_version=False, **kwargs)
    return dict(zip(("sdr", "isr", "sir", "sar"), out[:4], strict=True))


def lowpass(x: np.ndarray, cutoff: float = 16000.0, order: int = 8) -> np.ndarray:
    return sosfiltfilt(butter(order, cutoff, fs=SR, output="sos"), x, axis=-1)


def pink(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance noise with a 1/f power spectrum (the slope of music's long-term spectrum)."""
    n = shape[-1]
    freqs = np.fft.rfftfreq(n, 1 / SR)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(shape), axis=-1) / np.sqrt(freqs / 100), n=n, axis=-1)
    return noise / noise.std()


def separated(rng: np.random.Generator, refs: np.ndarray, noise: float = 0.02, gain: float = 0.9,
              delay: int = 3, leakage: float = 0.15) -> np.ndarray:
    """An estimate: gain, a delayed copy, leakage of the next source, broadband noise."""
    delayed = np.zeros_like(refs)
    delayed[..., delay:] = refs[..., :-delay]
    other = refs[np.roll(np.arange(refs.shape[0]), 1)]
    return gain * refs + 0.1 * delayed + leakage * other + noise * refs.std() * rng.standard_normal(refs.shape)


def signal(name: str, seed: int | None = None, seconds: float = 3.0, sources: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEEDS.get(name, 0) if seed is None else seed)
    n = int(seconds * SR) + 321
    t = np.arange(n) / SR
    if name == "lowpass_pcm16":
        refs = np.round(lowpass(pink(rng, (sources, 2, n))) * 0.2 * 32768) / 32768
        ests = separated(rng, refs)
    elif name == "tonal":
        f0 = (110 * 2 ** rng.uniform(0, 2, sources))[:, None, None]
        phase = 2 * np.pi * f0 * t + 2 * np.sin(2 * np.pi * 4 * t)
        refs = sum(np.sin(h * phase) / h ** 2 for h in range(1, 12)) * rng.uniform(0.3, 1, (sources, 2, 1))
        refs = refs * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6, (sources, 1, 1)))) * 0.2
        ests = separated(rng, refs, noise=0.01)
    elif name == "mono_as_stereo":
        refs = np.repeat(lowpass(pink(rng, (sources, 1, n))) * 0.2, 2, axis=1)
        refs[1:, 1] *= 0.5
        ests = separated(rng, refs, noise=0.0) + 0.02 * refs.std() * lowpass(rng.standard_normal(refs.shape))
    elif name == "gated":
        refs = lowpass(pink(rng, (sources, 2, n))) * 0.2
        refs[0, :, (t > 1.0) & (t < 2.0)] = 0
        refs[1] *= np.sin(2 * np.pi * 0.4 * t) > -0.3
        ests = separated(rng, refs, noise=0.0) + 0.02 * refs.std() * lowpass(rng.standard_normal(refs.shape))
    elif name == "aac_music":
        return aac_music(seconds + 321 / SR, seed=4 if seed is None else seed, stems=_MUSIC_STEMS[:sources])
    elif name == "panned_aac":
        return aac_music(seconds + 321 / SR, seed=7 if seed is None else seed, stems=_MUSIC_STEMS[:sources], pan=0.7)
    elif name == "panned_aac_probe":
        return aac_music(seconds + 321 / SR, seed=9 if seed is None else seed, stems=("bass", "other")[:sources],
                         estimate_kbps=128, pan=0.7)
    elif name == "lowpass_exact":
        refs = lowpass(pink(rng, (sources, 2, n))) * 0.2
        ests = separated(rng, refs, noise=0.0) + 0.02 * refs.std() * lowpass(rng.standard_normal(refs.shape))
    else:
        raise ValueError(f"unknown signal {name!r}")
    return np.ascontiguousarray(refs), np.ascontiguousarray(ests)


def aac_music(seconds: float, seed: int = 4, stems: tuple[str, ...] = ("drums", "bass", "other", "vocals"),
              reference_kbps: int = 256, estimate_kbps: int = 96, pan: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Music as people evaluate it: ``(references, estimates)``, float64 ``(sources, 2, time)``.

    References: the synthetic corpus' rendered stems (tonal bass and vocals, drum hits with exact
    silence between them, vocals silent in stretches), each channel given its own short room (a
    decaying-noise reverb, so the channels are not copies of a panned mono), then encoded as AAC at
    ``reference_kbps`` with FFmpeg's 16 kHz cut-off (MUSDB18's stems are such AAC streams) and
    decoded to float32. Estimates: what a separator leaks (0.9 of the source, a copy 3 samples late,
    0.1 of the next source) through AAC at ``estimate_kbps`` (codec artifacts, band-limited too).
    ``pan``: instead of the rooms, each stem panned mono (right channel = ``pan`` x left).
    """
    from stemsep.data.corpus.synth import render_song

    rng = np.random.default_rng(seed)
    song = render_song(seed, 0, seconds, SR)
    dry = np.stack([song[name] for name in stems]).astype(np.float64).transpose(0, 2, 1) / 2 ** 23
    taps = int(0.25 * SR)
    decay = np.exp(-np.arange(taps) / (0.06 * SR))
    refs = dry.copy()
    if pan is not None:
        refs[:, 1] = pan * dry[:, 0]
    for c in range(2 if pan is None else 0):
        room = rng.standard_normal(taps) * decay
        refs[:, c] += 0.35 * fftconvolve(dry[:, c], room[None] / np.linalg.norm(room))[:, :dry.shape[-1]]
    refs = aac_round_trip(refs, reference_kbps)
    other = refs[np.roll(np.arange(len(stems)), 1)]
    delayed = np.zeros_like(refs)
    delayed[..., 3:] = refs[..., :-3]
    ests = aac_round_trip(0.9 * refs + 0.1 * delayed + 0.1 * other, estimate_kbps)
    return refs, ests


def aac_round_trip(signals: np.ndarray, kbps: int, cutoff: int = 16000) -> np.ndarray:
    """Each ``(2, time)`` stereo row of ``signals (sources, 2, time)`` encoded as AAC (FFmpeg's
    encoder, through PyAV: :func:`helpers.audio.write_av`) and decoded as stemsep decodes it
    (:func:`stemsep.io.audio.decode_audio`, float32 values as float64), the encoder's delay removed."""
    import tempfile
    from pathlib import Path

    from helpers.audio import write_av
    from stemsep.io.audio import decode_audio

    out = np.zeros_like(signals)
    with tempfile.TemporaryDirectory() as folder:
        for j, stem in enumerate(signals):
            path = write_av(Path(folder) / f"{j}.m4a", [stem], SR, bit_rate=kbps * 1000,
                            options={"cutoff": str(cutoff)})
            decoded = decode_audio(path)[0].double().numpy()
            delay = container_delay(decoded, stem)
            kept = decoded[:, delay:delay + stem.shape[-1]]
            out[j, :, :kept.shape[-1]] = kept
    return out


def container_delay(decoded: np.ndarray, original: np.ndarray, search: int = 4096) -> int:
    """The encoder's delay: the lag (below ``search``) best aligning ``decoded`` with ``original``,
    both ``(channels, time)``, over the first second (all channels: one may be silent)."""
    search = max(1, min(search, decoded.shape[-1] - original.shape[-1] + 1))  # the decoded audio holds the delay
    span = max(1, min(original.shape[-1], decoded.shape[-1] - search, SR))
    scores = sum(np.abs(correlate(d[:span + search], o[:span], mode="valid", method="fft"))
                 for d, o in zip(decoded, original, strict=True))
    return int(np.argmax(scores))
