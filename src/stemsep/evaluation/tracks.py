"""Finding and reading the tracks of a scoring: reference and estimate folders, their stems, checked.

Used by ``stemsep score`` (:mod:`stemsep.evaluation.score`), the listening pages of the report
(:mod:`stemsep.evaluation.track_pages`) and MUSHRA tests (:mod:`stemsep.evaluation.listening`).
Layouts: references ``ROOT/[<split>/]<track>/<source>.<ext>`` (any depth) or MUSDB18's
``<track>.stem.mp4``; estimates ``ROOT/<track>/<source>.<ext>``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stemsep.contract import DEFAULT_SOURCES
from stemsep.errors import BadAudioError, BadDataError
from stemsep.io.audio import (
    AUDIO_EXTENSIONS,
    MIX_EXTENSIONS,
    STEM_MP4_STREAMS,
    decode_audio,
    is_stem_mp4,
    read_audio,
    read_stream,
    resample,
)

# A lossy-codec estimate may decode this many samples longer than its reference (encoder padding:
# AAC pads its last 1024-sample frame); the excess is cut. Shorter estimates are an error.
CODEC_PADDING = 2048


def _is_stem_file(path: Path) -> bool:
    return (path.is_file() and not path.name.startswith(".") and path.suffix.lower() in MIX_EXTENSIONS
            and not is_stem_mp4(path))


def find_tracks(root: Path, sources: list[str] | None = None) -> dict[str, Path]:
    """Track name -> directory, for every directory under ``root`` holding stem files, or -> the
    file, for every MUSDB18 ``<track>.stem.mp4`` under ``root``."""
    if not root.is_dir():
        raise BadDataError(f"{root}: directory not found")
    wanted = set(sources) if sources else None
    tracks: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_stem_mp4(path) and not path.name.startswith("."):
            name, directory = path.name[: -len(".stem.mp4")], path
        elif (not _is_stem_file(path) or path.stem == "mixture"
              or (wanted is not None and path.stem not in wanted)):
            continue
        else:
            directory = path.parent
            name = directory.name if directory != root else root.name
        if name in tracks and tracks[name] != directory:
            raise BadDataError(f"{root}: track name {name!r} appears twice ({tracks[name]} and {directory}); "
                               "point at one split")
        tracks[name] = directory
    return tracks


def default_sources(track_dir: Path) -> list[str]:
    """The stems of one reference track, in the usual order (drums, bass, other, vocals first)."""
    if is_stem_mp4(track_dir):
        return list(DEFAULT_SOURCES)
    found = sorted({p.stem for p in track_dir.iterdir() if _is_stem_file(p) and p.stem != "mixture"})
    return [s for s in DEFAULT_SOURCES if s in found] + [s for s in found if s not in DEFAULT_SOURCES]


def find_stem(folder: Path, source: str) -> Path | None:
    """``folder/<source>.<ext>`` in any readable format; two formats of one stem are an error."""
    found = [p for p in sorted(folder.glob(f"{source}.*")) if _is_stem_file(p) and p.stem == source]
    if len(found) > 1:
        raise BadDataError(f"{folder}: {len(found)} files for stem {source!r} ({', '.join(p.name for p in found)}); "
                           "keep one")
    return found[0] if found else None


def _read_reference(track: str, ref: Path, source: str, samplerate: int | None) -> tuple[torch.Tensor, int, Path]:
    """One reference stem: a file in the track folder, or a stream of the track's ``.stem.mp4``."""
    if is_stem_mp4(ref):
        if source not in STEM_MP4_STREAMS or source == "mixture":
            raise BadDataError(f"{ref}: a MUSDB18 .stem.mp4 holds drums, bass, other and vocals; no {source!r} stream")
        wav, sr = read_stream(ref, STEM_MP4_STREAMS[source])
        path = ref
    else:
        path = find_stem(ref, source)
        if path is None:
            raise BadDataError(f"{ref}: reference track {track!r} has no {source!r} stem")
        wav, sr = _read_file(path, samplerate)
    if samplerate is not None and sr != samplerate:
        raise BadAudioError(f"{path}: sample rate is {sr} Hz, expected {samplerate} Hz (other stems of {track!r})")
    return wav, sr, path


def _read_file(path: Path, samplerate: int | None = None, channels: int | None = None) -> tuple[torch.Tensor, int]:
    """WAV/FLAC with :func:`read_audio` (rate and channels checked); other formats decoded by
    :func:`decode_audio`, their channel count checked."""
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        return read_audio(path, samplerate=samplerate, channels=channels)
    wav, sr = decode_audio(path)
    if channels is not None and wav.shape[0] != channels:
        raise BadAudioError(f"{path}: has {wav.shape[0]} channel(s), expected {channels}")
    return wav, sr


def _read_estimate(path: Path, samplerate: int, channels: int, frames: int) -> torch.Tensor:
    """One estimate at the references' rate (resampled if needed), its length checked against ``frames``."""
    wav, sr = _read_file(path, channels=channels)
    if sr != samplerate:
        wav = resample(wav, sr, samplerate)
    lossy = path.suffix.lower() not in AUDIO_EXTENSIONS or sr != samplerate
    if lossy and frames < wav.shape[-1] <= frames + CODEC_PADDING:
        wav = wav[..., :frames]  # encoder padding (or resampling rounding) at the end
    return wav


def load_pair(track: str, ref_dir: Path, est_dir: Path, sources: list[str], *,
              allow_silent: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """References and estimates ``(sources, channels, time)`` of one track, checked."""
    refs, ests, samplerate = [], [], None
    for source in sources:
        est_path = find_stem(est_dir, source)
        if not is_stem_mp4(ref_dir) and find_stem(ref_dir, source) is None:
            raise BadDataError(f"{ref_dir}: reference track {track!r} has no {source!r} stem")
        if est_path is None:
            raise BadDataError(f"{est_dir}: estimates of {track!r} have no {source!r} stem")
        ref, sr, ref_path = _read_reference(track, ref_dir, source, samplerate)
        samplerate = samplerate or sr
        channels = refs[0].shape[0] if refs else ref.shape[0]
        if ref.shape[0] != channels:
            raise BadAudioError(f"{ref_path}: has {ref.shape[0]} channel(s), other stems of {track!r} have {channels}")
        est = _read_estimate(est_path, samplerate, channels, ref.shape[-1])
        if refs and ref.shape[-1] != refs[0].shape[-1]:
            raise BadAudioError(f"{ref_path}: {ref.shape[-1]} samples, other stems of {track!r} have {refs[0].shape[-1]}")
        if est.shape[-1] != ref.shape[-1]:
            raise BadAudioError(f"{est_path}: {est.shape[-1]} samples, reference {ref_path.name} has {ref.shape[-1]} "
                                "(estimates must be as long as the references)")
        if not allow_silent:
            for path, wav in ((ref_path, ref), (est_path, est)):
                if not wav.any():
                    raise BadAudioError(f"{path}: audio is silent (all samples zero); "
                                        "use --allow-silent to score it anyway (NaN frames)")
        refs.append(ref)
        ests.append(est)
    return torch.stack(ests), torch.stack(refs), int(samplerate)


def load_mixture(track: str, ref_dir: Path, references: torch.Tensor, samplerate: int) -> torch.Tensor:
    """The track's mixture ``(channels, time)`` (for ``log_wmse``): ``mixture.<ext>`` or the
    ``.stem.mp4``'s mixture stream, else the sum of every reference stem of the track (scored or not)."""
    if is_stem_mp4(ref_dir):
        (mix, sr), path = read_stream(ref_dir, STEM_MP4_STREAMS["mixture"]), ref_dir
    elif (path := find_stem(ref_dir, "mixture")) is not None:
        mix, sr = _read_file(path, samplerate, channels=references.shape[-2])
    else:
        stems = [_read_reference(track, ref_dir, source, samplerate)[0] for source in default_sources(ref_dir)]
        return torch.stack(stems).sum(0) if stems else references.sum(0)
    if sr != samplerate:
        raise BadAudioError(f"{path}: mixture sample rate is {sr} Hz, the stems of {track!r} are at {samplerate} Hz")
    if mix.shape != references.shape[-2:]:
        raise BadAudioError(f"{path}: mixture is {tuple(mix.shape)} (channels, samples), the stems of {track!r} "
                            f"are {tuple(references.shape[-2:])}")
    return mix
