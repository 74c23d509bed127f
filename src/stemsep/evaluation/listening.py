"""A MUSHRA listening test (ITU-R BS.1534-3) of separated stems, written as a static web page.

    stemsep listen --mushra --references musdb18hq/test --systems A=sep_a/ B=sep_b/ -o mushra/

One trial per reference track and stem: a ``duration``-second excerpt (by default the loudest one
of that stem's reference, so that no trial is mostly silence) of the open reference, the hidden
reference, a 3.5 kHz low-pass anchor (the standard's low anchor) and every system's estimate.
Tracks and estimates are read as ``stemsep score`` reads them (:func:`stemsep.evaluation.tracks.load_pair`:
same layouts, formats, length checks; estimates resampled to the references' rate).

``DIR/index.html`` (:mod:`stemsep.evaluation.mushra_page`) plays ``DIR/audio/<trial>/<condition>.mp3``
beside it: one page, no network, from ``file://`` or any static server. The MP3 bitrate is the
highest whose total size fits ``max_size_mb``. ``DIR/mushra.json`` records the trials (the ratings
files name the same test id; :mod:`stemsep.evaluation.mushra_collect` aggregates them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from stemsep.errors import BadArgumentError, BadDataError
from stemsep.evaluation.mushra_collect import collect_ratings
from stemsep.evaluation.mushra_page import render_page
from stemsep.evaluation.report import slug
from stemsep.evaluation.tracks import default_sources, find_tracks, load_pair
from stemsep.io.audio import MP3_BITRATES, mp3_bitrate_range, open_writer
from stemsep.io.files import atomic_path, ensure_writable_dir

ANCHOR_CUTOFF_HZ = 3500.0  # BS.1534-3's low anchor: the reference low-passed at 3.5 kHz
LOWPASS_TAPS = 1025  # windowed-sinc FIR length: a ~240 Hz transition at 44.1 kHz, ~-74 dB stop band
MIN_BITRATE = 128  # kbit/s: below this the codec, not the systems, would be what listeners hear
FADE_SECONDS = 0.02  # raised-cosine fade at both ends of an excerpt (no click when it loops)
SILENT_DBFS = -60.0  # an excerpt of a reference this quiet is no trial (a song without that stem)
RESERVED = ("reference", "anchor")  # condition names the page uses itself
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
# An MP3 file's size over bitrate x duration (measured, libsndfile 1.2's LAME, 96-320 kbit/s): 0.6 %
# of frame headers, and about 66 ms of encoder delay and padding per file; a margin on both.
_SIZE_FACTOR, _PADDING_SECONDS = 1.01, 0.08


@dataclass
class Trial:
    """One page of the test: a stem of a track, its excerpt and its files (relative to the page)."""

    id: str
    track: str
    stem: str
    start: float
    duration: float
    reference: str
    conditions: dict[str, str] = field(default_factory=dict)  # name -> audio file, hidden reference included


@dataclass
class MushraTest:
    """What :func:`make_mushra` wrote: the page, the trials, and the bitrate and size of the audio."""

    page: Path
    test: str
    systems: list[str]
    trials: list[Trial]
    skipped: list[str]
    bitrate: int
    audio_bytes: int


def lowpass(wav: torch.Tensor, samplerate: int, cutoff: float = ANCHOR_CUTOFF_HZ,
            taps: int = LOWPASS_TAPS) -> torch.Tensor:
    """``wav`` ``(channels, time)`` through a zero-phase windowed-sinc FIR low-pass (Blackman window,
    ``taps`` long, centred so that nothing is delayed; the same length out), convolved by FFT."""
    if not 0 < cutoff < samplerate / 2:
        raise BadArgumentError(f"low-pass cutoff {cutoff} Hz must lie between 0 and {samplerate / 2} Hz")
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    kernel = 2 * cutoff / samplerate * torch.sinc(2 * cutoff / samplerate * n)
    kernel *= torch.blackman_window(taps, periodic=False, dtype=torch.float64)
    kernel /= kernel.sum()  # unit gain at DC
    length = wav.shape[-1]
    size = 1 << (length + taps - 2).bit_length()  # a power of two >= the full convolution's length
    spectrum = torch.fft.rfft(wav.to(torch.float64), size) * torch.fft.rfft(kernel, size)
    full = torch.fft.irfft(spectrum, size)  # the kernel is symmetric: convolution = correlation
    return full[..., taps // 2: taps // 2 + length].to(wav.dtype)


def loudest_start(wav: torch.Tensor, samplerate: int, duration: float, step: float = 0.5) -> float:
    """Start (s, on a ``step`` grid) of the ``duration``-second window of ``wav`` with the most energy."""
    length = round(duration * samplerate)
    if wav.shape[-1] <= length:
        return 0.0
    hop = max(1, round(step * samplerate))
    power = torch.cumsum(torch.nn.functional.pad(wav.to(torch.float64).pow(2).sum(0), (1, 0)), 0)
    starts = torch.arange(0, wav.shape[-1] - length + 1, hop)
    energy = power[starts + length] - power[starts]
    return float(starts[int(torch.argmax(energy))]) / samplerate


def _fade(wav: torch.Tensor, samplerate: int) -> torch.Tensor:
    n = min(round(FADE_SECONDS * samplerate), wav.shape[-1] // 2)
    if n == 0:
        return wav
    ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, n, dtype=wav.dtype))
    wav = wav.clone()
    wav[..., :n] *= ramp
    wav[..., -n:] *= ramp.flip(0)
    return wav


def parse_systems(specs: Sequence[str]) -> dict[str, Path]:
    """``["A=sep_a/", "B=sep_b/"]`` -> ``{"A": Path("sep_a"), ...}`` (the names are checked by
    :func:`make_mushra`; a name given twice here)."""
    systems: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not folder:
            raise BadArgumentError(f"--systems {spec!r}: expected NAME=FOLDER (for example A=separated/)")
        if name in systems:
            raise BadArgumentError(f"--systems: the name {name!r} is given twice")
        systems[name] = Path(folder)
    return systems


def _mp3_bytes(bitrate: int, durations: Sequence[float]) -> float:
    """The size the MP3 files of these durations (s) will have at ``bitrate`` kbit/s, a little over."""
    return sum(bitrate * 125 * (d + _PADDING_SECONDS) * _SIZE_FACTOR for d in durations)


def choose_bitrate(durations: Sequence[float], samplerate: int, max_size_mb: float, *,
                   minimum: int = MIN_BITRATE, option: str = "--max-size") -> int:
    """The highest MP3 bitrate (kbit/s, at least ``minimum``) at which files of these durations (s)
    fit ``max_size_mb``; else a one-line error naming ``option`` and the size they need."""
    low, high = mp3_bitrate_range(samplerate)
    fits = [b for b in MP3_BITRATES if low <= b <= high and b >= minimum
            and _mp3_bytes(b, durations) <= max_size_mb * 1e6]
    if not fits:
        least = max(minimum, low)
        seconds, need = sum(durations), _mp3_bytes(least, durations) / 1e6
        raise BadArgumentError(f"{option} {max_size_mb:g} MB: {seconds:.0f} s of audio need {need:.1f} MB at "
                               f"{least} kbit/s; raise {option}, shorten the audio or use fewer tracks")
    return max(fits)


def write_mp3(path: Path, wav: torch.Tensor, samplerate: int, bitrate: int) -> int:
    """Write ``wav`` ``(channels, time)`` as a constant-bitrate MP3 atomically; its size in bytes."""
    with atomic_path(path) as tmp:
        with open_writer(tmp, samplerate, wav.shape[0], fmt="mp3", mp3_bitrate=bitrate) as handle:
            handle.write(wav.T.contiguous().numpy().astype("float32"))
    return path.stat().st_size


def _load_excerpts(references: Path, systems: Mapping[str, Path], sources: Sequence[str] | None,
                   duration: float, start: float | None):
    """Per trial (track, stem): ``(start, samplerate, {condition: excerpt})``, silent stems apart."""
    tracks = find_tracks(references)
    if not tracks:
        raise BadDataError(f"{references}: no reference tracks found")
    estimates = {name: find_tracks(folder) for name, folder in systems.items()}
    for name, found in estimates.items():
        missing = sorted(set(tracks) - set(found))
        if missing:
            raise BadDataError(f"{systems[name]}: system {name!r} has no estimates of track {missing[0]!r}"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for track, ref_dir in tracks.items():
        stems = list(sources) if sources else default_sources(ref_dir)
        pairs = {name: load_pair(track, ref_dir, estimates[name][track], stems, allow_silent=True)
                 for name in systems}  # a silent stem is a skipped trial, not an error
        refs, samplerate = next(iter(pairs.values()))[1:]
        for index, stem in enumerate(stems):
            reference = refs[index]
            at = loudest_start(reference, samplerate, duration) if start is None else start
            first = round(at * samplerate)
            if first >= reference.shape[-1]:
                raise BadArgumentError(f"--start {start:g} s: track {track!r} is only "
                                       f"{reference.shape[-1] / samplerate:.1f} s long")
            cut = slice(first, first + round(duration * samplerate))
            conditions = {"reference": reference[..., cut]}
            conditions["anchor"] = lowpass(conditions["reference"], samplerate)
            conditions.update({name: pair[0][index][..., cut] for name, pair in pairs.items()})
            yield track, stem, first / samplerate, samplerate, {k: _fade(v, samplerate) for k, v in conditions.items()}


def _is_silent(wav: torch.Tensor) -> bool:
    rms = float(wav.to(torch.float64).pow(2).mean().sqrt())
    return rms == 0.0 or 20 * math.log10(rms) < SILENT_DBFS


def make_mushra(references: str | os.PathLike, systems: Mapping[str, str | os.PathLike], out: str | os.PathLike, *,
                sources: Sequence[str] | None = None, duration: float = 10.0, start: float | None = None,
                max_size_mb: float = 50.0, title: str = "MUSHRA listening test") -> MushraTest:
    """Write the test into ``out`` (``index.html``, ``mushra.json``, ``audio/``) and describe it.

    ``systems``: name -> estimates folder (``<track>/<stem>.<ext>``, as ``stemsep separate`` writes);
    ``start``: the excerpt's start in seconds for every trial (default: the loudest window of each
    reference stem); ``max_size_mb``: the budget of all the audio files together.
    """
    if not duration > 0:
        raise BadArgumentError(f"--duration {duration:g}: must be positive (seconds)")
    if start is not None and start < 0:
        raise BadArgumentError(f"--start {start:g}: must be 0 or more (seconds)")
    if not max_size_mb > 0:
        raise BadArgumentError(f"--max-size {max_size_mb:g}: must be positive (MB)")
    systems = {name: Path(folder) for name, folder in systems.items()}
    if not systems:
        raise BadArgumentError("--systems: name at least one system (NAME=FOLDER)")
    for name in systems:
        if not _NAME.match(name) or name.lower() in RESERVED:
            raise BadArgumentError(f"system name {name!r}: must be letters, digits, '_', '.' or '-' (at most 40), "
                                   f"not {' or '.join(RESERVED)}")
    excerpts, skipped = [], []
    for track, stem, at, samplerate, conditions in _load_excerpts(Path(references), systems, sources, duration, start):
        if _is_silent(conditions["reference"]):
            skipped.append(f"{track}/{stem}")
        else:
            excerpts.append((track, stem, at, samplerate, conditions))
    if not excerpts:
        raise BadDataError(f"{references}: every reference excerpt is silent; nothing to listen to")
    durations = [c["reference"].shape[-1] / sr for *_, sr, c in excerpts for _ in c]
    bitrate = min(choose_bitrate(durations, sr, max_size_mb) for *_, sr, _ in excerpts)
    out = ensure_writable_dir(out)
    trials, written = [], 0
    for index, (track, stem, at, samplerate, conditions) in enumerate(excerpts):
        folder = f"audio/{index:03d}-{slug(track)}-{slug(stem)}"
        files = {name: f"{folder}/{name}.mp3" for name in conditions}
        for name, wav in conditions.items():
            written += write_mp3(out / files[name], wav, samplerate, bitrate)
        trials.append(Trial(id=f"{track}/{stem}", track=track, stem=stem, start=at,
                            duration=conditions["reference"].shape[-1] / samplerate,
                            reference=files["reference"], conditions=files))
    if written > max_size_mb * 1e6:
        raise BadDataError(f"{out}: the audio came to {written / 1e6:.1f} MB, over --max-size {max_size_mb:g} MB")
    config = {"format": "stemsep-mushra", "version": 1, "title": title, "systems": list(systems),
              "trials": [asdict(t) for t in trials], "skipped": skipped, "bitrate_kbps": bitrate}
    config["test"] = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    with atomic_path(out / "mushra.json") as tmp:
        tmp.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    page = out / "index.html"
    with atomic_path(page) as tmp:
        tmp.write_text(render_page(config), encoding="utf-8")
    return MushraTest(page=page, test=config["test"], systems=list(systems), trials=trials, skipped=skipped,
                      bitrate=bitrate, audio_bytes=written)


def listen(*, collect: Sequence[str | os.PathLike] | None = None, references: str | os.PathLike | None = None,
           systems: Sequence[str] = (), out: str | os.PathLike | None = None, sources: Sequence[str] | None = None,
           duration: float = 10.0, start: float | None = None, max_size_mb: float = 50.0,
           title: str = "MUSHRA listening test") -> list[str]:
    """``stemsep listen``: aggregate the ratings files ``collect``, or else write the test of
    ``systems`` (``NAME=FOLDER`` each) against ``references`` into ``out``. Returns the lines to print."""
    if collect:
        results = collect_ratings(collect, out)
        return [results.table(), *(f"wrote {path}" for path in results.files)]
    if references is None or out is None or not systems:
        raise BadArgumentError("listen --mushra needs --references, --systems NAME=FOLDER ... and -o DIR")
    test = make_mushra(references, parse_systems(systems), out, sources=sources, duration=duration, start=start,
                       max_size_mb=max_size_mb, title=title)
    return [*(f"skipped {trial}: the reference excerpt is silent" for trial in test.skipped),
            f"{len(test.trials)} trials, systems {', '.join(test.systems)}, MP3 {test.bitrate} kbit/s, "
            f"{test.audio_bytes / 1e6:.1f} MB of audio", f"test: {test.page}"]
