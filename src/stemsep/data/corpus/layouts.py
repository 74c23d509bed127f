"""Finding and checking the songs of a multitrack dataset on disk, for three layouts.

- ``musdb``: MUSDB18-HQ, ``root/{train,test}/<song>/{mixture,<source>}.wav``, or the MUSDB18
  release, ``root/{train,test}/<song>.stem.mp4`` (AAC; audio streams mixture, drums, bass, other,
  vocals, decoded with PyAV). Split ``train`` is ``train/`` minus the validation songs, ``valid`` is
  those songs (default: the 14 standard MUSDB18 validation tracks, present only in the real
  dataset), ``test`` is ``test/``.
- ``moisesdb``: ``root/<song>/data.json`` plus one folder per stem type (``vocals/``,
  ``guitar/``, ...), each holding one or more audio files. Files are summed into the chosen
  ``sources``: a stem type named like a source goes to it, others through ``source_map``,
  else to ``other`` when ``other`` is a source (guitar, piano, percussion, ... -> ``other``),
  else they are dropped. A source without files is silence. ``sources=["all"]`` keeps every stem
  type found under ``root`` as its own source (:func:`moisesdb_stem_types`; a song without one has
  silence there), to be grouped at load time (``stem_groups``). MoisesDB has no official split:
  ``valid``/``test`` are the songs listed in ``valid_songs``, ``train`` the rest.
- ``folder``: ``root[/<split>]/<song>/<source>.{wav,flac}`` with user-given source names and an
  optional ``mixture.{wav,flac}``; ``root/<split>`` is used when it exists, else ``root``.

Only file headers are read (cheap), so a whole dataset is checked before anything is decoded:
each song's files must share one sample rate, channel count and length.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stemsep.contract import DEFAULT_SOURCES
from stemsep.errors import BadAudioError, BadDataError
from stemsep.io.audio import (
    AUDIO_EXTENSIONS,
    STEM_MP4_STREAMS,
    audio_info,
    find_audio,
    is_stem_mp4,
    probe_streams,
    read_audio,
    read_stream,
)

LAYOUTS = ("musdb", "moisesdb", "folder")

# The standard MUSDB18 validation split (taken out of train/), as used by musdb and demucs.
MUSDB_VALID_SONGS = [
    "Actions - One Minute Smile",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave",
    "Triviul - Angelsaint",
    "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants",
    "Leaf - Summerghost",
    "Skelpolu - Human Mistakes",
    "Young Griffo - Pennies",
    "ANiMAL - Rockshow",
    "James May - On The Line",
    "Meaxic - Take A Step",
    "Traffic Experiment - Sirens",
]

# MoisesDB stem types that go to a 4-source model's sources other than ``other``.
MOISESDB_DEFAULT_MAP = {"vocals": "vocals", "drums": "drums", "bass": "bass"}


@dataclass
class SongFiles:
    """One song: where its stems are and what their headers say.

    ``stems[source]`` lists the files summed into that source (one for musdb/folder, zero or
    more for moisesdb: zero means silence). ``mixture`` is the mixture file when the layout has
    one. ``samplerate``, ``channels`` and ``frames`` are common to all its files. ``streams``: for a
    multi-stream file (MUSDB18 ``.stem.mp4``), the audio stream of each source and of ``mixture``
    (all of them read from that one file, see :func:`read_stem`).
    """

    name: str
    stems: dict[str, list[Path]]
    mixture: Path | None = None
    samplerate: int = 0
    channels: int = 0
    frames: int = 0
    folder: Path | None = field(default=None, repr=False)
    streams: dict[str, int] | None = None

    @property
    def seconds(self) -> float:
        return self.frames / self.samplerate if self.samplerate else 0.0


def discover_songs(root: str | os.PathLike, layout: str = "musdb", split: str = "train", *,
                   sources: list[str] | None = None, valid_songs: list[str] | None = None,
                   source_map: dict[str, str] | None = None, samplerate: int | None = None,
                   channels: int | None = 2, check: bool = True) -> list[SongFiles]:
    """The songs of ``split`` under ``root``, sorted by name, with headers checked.

    ``sources`` (default drums, bass, other, vocals) picks and orders the stems.
    ``valid_songs`` overrides the validation list (musdb: default the standard 14).
    ``samplerate``/``channels``, when given, are required of every file (``channels=2``
    refuses mono). ``check=False`` skips reading headers (fields stay 0).
    Errors: :class:`BadDataError` for a missing root/split or a song missing a stem,
    :class:`BadAudioError` for an unreadable file or mismatched rate/length/channels.
    """
    sources = resolve_layout_sources(root, layout, sources)
    if len(set(sources)) != len(sources) or not sources:
        raise BadDataError(f"sources must be distinct and non-empty, got {sources}")
    root = Path(root)
    if not root.is_dir():
        raise BadDataError(f"{root}: dataset root not found (or not a directory)")
    if layout == "musdb":
        songs = _musdb(root, split, sources, valid_songs)
    elif layout == "moisesdb":
        songs = _moisesdb(root, split, sources, valid_songs, source_map)
    elif layout == "folder":
        songs = _folder(root, split, sources)
    else:
        raise BadDataError(f"unknown layout {layout!r} (choose one of {', '.join(LAYOUTS)})")
    if check:
        for song in songs:
            check_song(song, samplerate=samplerate, channels=channels)
    return songs


def check_song(song: SongFiles, *, samplerate: int | None = None, channels: int | None = 2) -> SongFiles:
    """Read every file header of ``song``; fill its rate/channels/frames or raise naming the file."""
    if song.streams is not None:
        return _check_stream_song(song, samplerate=samplerate, channels=channels)
    files = [p for paths in song.stems.values() for p in paths]
    if song.mixture is not None:
        files.append(song.mixture)
    if not files:
        raise BadDataError(f"song {song.name!r}: no stem files")
    first = None
    for path in files:
        info = audio_info(path)
        if samplerate is not None and info.samplerate != samplerate:
            raise BadAudioError(f"{path}: sample rate is {info.samplerate} Hz, expected {samplerate} Hz")
        if channels is not None and info.channels != channels:
            raise BadAudioError(f"{path}: has {info.channels} channel(s), expected {channels}")
        if info.frames == 0:
            raise BadAudioError(f"{path}: audio is empty (zero samples)")
        if first is None:
            first = (path, info)
            continue
        ref_path, ref = first
        if info.samplerate != ref.samplerate:
            raise BadAudioError(f"{path}: sample rate {info.samplerate} Hz differs from "
                                f"{ref.samplerate} Hz of {ref_path.name} in song {song.name!r}")
        if info.channels != ref.channels:
            raise BadAudioError(f"{path}: {info.channels} channel(s) differ from {ref.channels} "
                                f"of {ref_path.name} in song {song.name!r}")
        if info.frames != ref.frames:
            raise BadAudioError(f"{path}: length {info.frames} samples differs from {ref.frames} "
                                f"of {ref_path.name} in song {song.name!r}")
    song.samplerate, song.channels, song.frames = first[1].samplerate, first[1].channels, first[1].frames
    return song


def _check_stream_song(song: SongFiles, *, samplerate: int | None, channels: int | None) -> SongFiles:
    """:func:`check_song` for a multi-stream file: every stream used shares rate, channels and length.

    Lengths are those the container states; streams of lossy codecs may differ by a few
    frames (encoder padding), so the song's length is the shortest of them.
    """
    path = song.mixture if song.mixture is not None else next(p for ps in song.stems.values() for p in ps)
    infos = probe_streams(path)
    used = sorted(set(song.streams.values()))
    if used[-1] >= len(infos):
        raise BadAudioError(f"{path}: has {len(infos)} audio stream(s), a MUSDB18 .stem.mp4 has "
                            f"{len(STEM_MP4_STREAMS)} (mixture, drums, bass, other, vocals)")
    first = infos[used[0]]
    for index in used:
        info = infos[index]
        if samplerate is not None and info.samplerate != samplerate:
            raise BadAudioError(f"{path}: stream {index} sample rate is {info.samplerate} Hz, expected {samplerate} Hz")
        if channels is not None and info.channels != channels:
            raise BadAudioError(f"{path}: stream {index} has {info.channels} channel(s), expected {channels}")
        if (info.samplerate, info.channels) != (first.samplerate, first.channels):
            raise BadAudioError(f"{path}: stream {index} ({info.samplerate} Hz, {info.channels} ch) differs from "
                                f"stream {used[0]} ({first.samplerate} Hz, {first.channels} ch)")
    frames = min(infos[index].frames for index in used)
    if frames == 0:
        raise BadAudioError(f"{path}: states no length or an empty stream")
    song.samplerate, song.channels, song.frames = first.samplerate, first.channels, frames
    return song


def read_stem(song: SongFiles, path: Path, source: str) -> torch.Tensor:
    """One file of ``source`` in ``song`` as float32 ``(channels, song.frames)`` at the song's rate.

    A multi-stream song reads the source's stream (cut, or zero-padded by the few samples a lossy
    codec may miss, to the song's length); other songs read the file, which must have that length.
    """
    if song.streams is not None:
        wav, sr = read_stream(path, song.streams[source])
        if sr != song.samplerate or wav.shape[0] != song.channels:
            raise BadAudioError(f"{path}: stream {song.streams[source]} decodes as {sr} Hz, {wav.shape[0]} ch; "
                                f"its header said {song.samplerate} Hz, {song.channels} ch")
        wav = wav[:, :song.frames]
        return torch.nn.functional.pad(wav, (0, song.frames - wav.shape[-1]))
    wav, _ = read_audio(path, samplerate=song.samplerate, channels=song.channels)
    if wav.shape[-1] != song.frames:
        raise BadAudioError(f"{path}: decoded length {wav.shape[-1]} differs from header {song.frames}")
    return wav


def _song_dirs(folder: Path) -> list[Path]:
    """Visible sub-directories (hidden ones are leftovers of interrupted writers)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _stem_folder_song(folder: Path, sources: list[str], name: str | None = None) -> SongFiles:
    stems = {}
    for source in sources:
        path = find_audio(folder, source)
        if path is None:
            raise BadDataError(f"{folder}: song is missing stem {source!r} ({source}.wav or {source}.flac)")
        stems[source] = [path]
    return SongFiles(name or folder.name, stems, find_audio(folder, "mixture"), folder=folder)


def _musdb(root: Path, split: str, sources: list[str], valid_songs: list[str] | None) -> list[SongFiles]:
    valid = set(MUSDB_VALID_SONGS if valid_songs is None else valid_songs)
    if split == "test":
        folder, keep = root / "test", lambda name: True
    elif split == "train":
        folder, keep = root / "train", lambda name: name not in valid
    elif split == "valid":
        folder, keep = root / "train", lambda name: name in valid
    else:
        raise BadDataError(f"unknown musdb split {split!r} (choose train, valid or test)")
    if not folder.is_dir():
        raise BadDataError(f"{folder}: split folder not found (expected MUSDB18-HQ layout root/{{train,test}}/<song>/ "
                           "or MUSDB18 root/{train,test}/<song>.stem.mp4)")
    songs = [_stem_folder_song(d, sources) for d in _song_dirs(folder) if keep(d.name)]
    songs += [_stem_mp4_song(p, sources) for p in _stem_mp4_files(folder) if keep(_stem_mp4_name(p))]
    return sorted(songs, key=lambda song: song.name)


def _stem_mp4_name(path: Path) -> str:
    return path.name[: -len(".stem.mp4")]


def _stem_mp4_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_stem_mp4(p) and not p.name.startswith("."))


def _stem_mp4_song(path: Path, sources: list[str]) -> SongFiles:
    """A MUSDB18 ``<song>.stem.mp4``: every source and the mixture read from its own audio stream."""
    unknown = [s for s in sources if s not in STEM_MP4_STREAMS or s == "mixture"]
    if unknown:
        raise BadDataError(f"{path}: a MUSDB18 .stem.mp4 holds drums, bass, other and vocals; no stream for "
                           f"{', '.join(map(repr, unknown))}")
    streams = {source: STEM_MP4_STREAMS[source] for source in sources} | {"mixture": 0}
    return SongFiles(_stem_mp4_name(path), {s: [path] for s in sources}, path, folder=path.parent, streams=streams)


def _folder(root: Path, split: str | None, sources: list[str]) -> list[SongFiles]:
    return [_stem_folder_song(d, sources) for d in folder_song_dirs(root, split)]


def folder_song_dirs(root: str | os.PathLike, split: str | None) -> list[Path]:
    """The song folders of ``split`` in the plain ``folder`` layout (``root/split`` if it exists, else ``root``)."""
    root = Path(root)
    return _song_dirs(root / split if split and (root / split).is_dir() else root)


ALL_STEMS = "all"  # moisesdb: every stem type as its own source


def moisesdb_stem_types(root: str | os.PathLike) -> list[str]:
    """Every stem type (stem folder name) of the MoisesDB songs under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise BadDataError(f"{root}: dataset root not found (or not a directory)")
    types = {stem.name for song in _song_dirs(root) if (song / "data.json").is_file() for stem in _song_dirs(song)}
    if not types:
        raise BadDataError(f"{root}: no MoisesDB song folders with stem folders found")
    return sorted(types)


def layout_stems(root: str | os.PathLike, layout: str) -> list[str]:
    """The stems every song of a dataset stores (what a full mix sums), in a fixed order.

    ``musdb``: drums, bass, other, vocals (MUSDB18-HQ folders and ``.stem.mp4`` alike). ``moisesdb``:
    every stem type under ``root`` (:func:`moisesdb_stem_types`; a song without one has silence
    there). ``folder``: the stems *every* song folder of every split has (``<stem>.wav`` or
    ``.flac``, as :func:`~stemsep.io.audio.find_audio` finds them), ``mixture`` excluded, sorted:
    a stray file in some songs (a click track, a guide vocal) is not part of the mix, nor an error.
    """
    if layout == "musdb":
        return [s for s in STEM_MP4_STREAMS if s != "mixture"]
    if layout == "moisesdb":
        return moisesdb_stem_types(root)
    if layout != "folder":
        raise BadDataError(f"unknown layout {layout!r} (choose one of {', '.join(LAYOUTS)})")
    root = Path(root)
    if not root.is_dir():
        raise BadDataError(f"{root}: dataset root not found (or not a directory)")
    splits = [root / split for split in ("train", "valid", "test") if (root / split).is_dir()]
    songs = [song for folder in splits or [root] for song in _song_dirs(folder)]
    per_song = [{p.stem for p in song.iterdir()
                 if p.is_file() and p.suffix in AUDIO_EXTENSIONS and not p.name.startswith(".")} for song in songs]
    names = set.intersection(*per_song) if per_song else set()
    names.discard("mixture")
    if not names:
        raise BadDataError(f"{root}: no stem file (<song>/<stem>.wav or .flac) that every song folder has")
    return sorted(names)


def resolve_layout_sources(root: str | os.PathLike, layout: str, sources: list[str] | None) -> list[str]:
    """``sources`` of a dataset: as given (default drums, bass, other, vocals), or for moisesdb
    ``["all"]``: every stem type."""
    if sources is not None and list(sources) == [ALL_STEMS]:
        if layout != "moisesdb":
            raise BadDataError(f"--sources all keeps every stem type of a moisesdb layout, not {layout}: "
                               "name the sources")
        return moisesdb_stem_types(root)
    return list(sources or DEFAULT_SOURCES)


def _moisesdb(root: Path, split: str, sources: list[str], valid_songs: list[str] | None,
              source_map: dict[str, str] | None) -> list[SongFiles]:
    valid = set(valid_songs or [])
    if split not in ("train", "valid", "test"):
        raise BadDataError(f"unknown moisesdb split {split!r} (choose train, valid or test)")
    mapping = {**MOISESDB_DEFAULT_MAP, **(source_map or {})}
    songs = []
    for folder in _song_dirs(root):
        meta_path = folder / "data.json"
        if not meta_path.is_file():
            continue
        if (folder.name in valid) != (split != "train"):
            continue
        try:
            json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise BadDataError(f"{meta_path}: not a readable JSON file ({err})") from None
        stems: dict[str, list[Path]] = {source: [] for source in sources}
        for stem_dir in _song_dirs(folder):
            target = stem_dir.name if stem_dir.name in sources else mapping.get(stem_dir.name)
            if target is None and "other" in sources:
                target = "other"
            if target not in stems:
                continue
            stems[target] += sorted(p for p in stem_dir.iterdir()
                                    if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))
        songs.append(SongFiles(folder.name, stems, None, folder=folder))
    if not songs and split == "train":
        raise BadDataError(f"{root}: no MoisesDB song folders (with data.json) found")
    return songs
