"""``stemsep shard``: pack a multitrack dataset into WebDataset tar shards plus a manifest.

Each song is one tar sample with key ``NNNNNN_<name>`` (index and name, no dots) holding
``<key>.json`` (name, sample rate, channels, frames, sources) and ``<key>.<source>.flac`` per
source (24-bit FLAC: lossless for 24-bit input; float input is quantised to the 24-bit grid).
Shards ``OUT/<split>-000000.tar``, ... are filled in song order up to ``--max-shard-size``.
:func:`shard_dataset` is the command as a library function.

``OUT/<split>.json`` (the manifest) lists the shards (name, bytes, sha256, songs) and the songs
(key, shard, frames, seconds, per-stem activity profile in dB per 1 s frame), so data loaders
can verify shards, split songs exactly across ranks and filter silence without decoding.

Crash safety: every shard and the manifest are written to a hidden temporary file and renamed.
The manifest is rewritten (``"complete": false``) after each shard, so an interrupted run
resumes: shards recorded in it whose file still has the recorded sha256 and songs are kept.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stemsep.data.corpus.activity import activity_db
from stemsep.data.corpus.layouts import SongFiles, discover_songs, read_stem, resolve_layout_sources
from stemsep.data.shards.codec import encode_flac
from stemsep.errors import BadAudioError, BadDataError, StemsepError
from stemsep.io.files import atomic_path, ensure_writable_dir, file_sha256, remove_stale_temporaries

MANIFEST_FORMAT = "stemsep-shards"
MANIFEST_VERSION = 1
_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
DEFAULT_SPLITS = {"musdb": ["train", "valid", "test"], "moisesdb": ["train", "valid"], "folder": ["train"]}


def parse_size(text: str | int) -> int:
    """``"1GB"``, ``"500MB"``, ``"64MiB"`` or a byte count, as bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise StemsepError(f"--max-shard-size: cannot parse {text!r} (use e.g. 1GB, 500MB, 64MiB)")
    return max(1, int(float(match.group(1)) * _UNITS[unit]))


def sample_key(index: int, name: str) -> str:
    """Tar key of a song: WebDataset splits entry names at the first dot, so keys have none."""
    return f"{index:06d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', name).strip('_')[:80]}"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def encode_song(song: SongFiles, key: str, sources: list[str]) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Read, sum (moisesdb) and FLAC-encode one song; its tar entries and manifest record."""
    stems = []
    for source in sources:
        total = torch.zeros(song.channels, song.frames)
        for path in song.stems[source]:
            total += read_stem(song, path, source)
        stems.append(total)
    stems = torch.stack(stems)
    peak = float(stems.abs().max())
    meta = {"name": song.name, "key": key, "samplerate": song.samplerate, "channels": song.channels,
            "frames": song.frames, "sources": sources}
    entries = {f"{key}.json": json.dumps(meta).encode()}
    for source, wav in zip(sources, stems, strict=True):
        entries[f"{key}.{source}.flac"] = encode_flac(wav, song.samplerate)
    profile = activity_db(stems, song.samplerate)
    record = {"name": song.name, "key": key, "frames": song.frames,
              "seconds": round(song.frames / song.samplerate, 3),
              "clipped": peak > 1.0,
              "activity": {s: [round(float(v), 1) for v in profile[i]] for i, s in enumerate(sources)}}
    return entries, record


def _encode_job(args: tuple[SongFiles, str, list[str]]) -> tuple[dict[str, bytes], dict[str, Any]]:
    return encode_song(*args)


def _add_entry(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    tar.addfile(info, io.BytesIO(data))


def _write_shard(path: Path, samples: list[dict[str, bytes]]) -> tuple[str, int]:
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for entries in samples:
                for name, data in entries.items():
                    _add_entry(tar, name, data)
        _readable(tmp)
    return file_sha256(path), path.stat().st_size


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
        _readable(tmp)


def _readable(path: Path) -> None:
    """Temporary files are private (0600); shards are meant to be served, so use the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _resumable(out: Path, manifest_path: Path, settings: dict[str, Any], names: list[str]) -> tuple[list, list]:
    """Shards (and their song records) of a previous run that can be kept as they are."""
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return [], []
    if any(old.get(k) != v for k, v in settings.items()):
        return [], []
    kept_shards, kept_songs, position = [], [], 0
    records = {r["name"]: r for r in old.get("songs", [])}
    for shard in old.get("shards", []):
        songs = shard.get("songs", [])
        path = out / shard.get("name", "")
        if (songs != names[position:position + len(songs)] or not path.is_file()
                or path.stat().st_size != shard.get("bytes") or file_sha256(path) != shard.get("sha256")
                or any(s not in records for s in songs)):
            break
        kept_shards.append(shard)
        kept_songs += [records[s] for s in songs]
        position += len(songs)
    return kept_shards, kept_songs


def shard_split(songs: list[SongFiles], out: str | os.PathLike, split: str, sources: list[str], *,
                max_shard_size: int = 10**9, layout: str = "", workers: int = 1,
                progress: bool = False) -> dict[str, Any]:
    """Write the shards and the manifest of one split; returns the manifest."""
    out = ensure_writable_dir(out)
    if songs and len({s.samplerate for s in songs}) > 1:
        first = songs[0]
        other = next(s for s in songs if s.samplerate != first.samplerate)
        raise BadAudioError(f"song {other.name!r}: sample rate {other.samplerate} Hz differs from "
                            f"{first.samplerate} Hz of song {first.name!r} in split {split}")
    names = [s.name for s in songs]
    if len(set(names)) != len(names):
        raise BadDataError(f"split {split}: song names are not unique")
    samplerate = songs[0].samplerate if songs else 0
    channels = songs[0].channels if songs else 0
    settings = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "split": split, "sources": sources,
                "samplerate": samplerate, "channels": channels, "max_shard_size": max_shard_size}
    manifest_path = out / f"{split}.json"
    shards, records = _resumable(out, manifest_path, settings, names)
    manifest = {**settings, "layout": layout, "complete": False, "shards": shards, "songs": records}
    done = len(records)
    jobs = [(song, sample_key(i, song.name), sources) for i, song in enumerate(songs)][done:]
    bar = tqdm(total=len(songs), initial=done, desc=f"shard {split}", unit="song", disable=not progress)
    pending: list[dict[str, bytes]] = []
    pending_records: list[dict[str, Any]] = []
    pending_size = 0

    def flush() -> None:
        nonlocal pending, pending_records, pending_size
        name = shard_name(split, len(manifest["shards"]))
        sha, size = _write_shard(out / name, pending)
        for record in pending_records:
            record["shard"] = name
        manifest["shards"].append({"name": name, "bytes": size, "sha256": sha,
                                   "songs": [r["name"] for r in pending_records]})
        manifest["songs"] += pending_records
        _write_manifest(manifest_path, manifest)
        pending, pending_records, pending_size = [], [], 0

    pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.map(_encode_job, jobs, chunksize=1) if pool else map(_encode_job, jobs)
        for entries, record in results:
            size = sum(len(v) + 1024 for v in entries.values())  # + tar headers and padding
            if pending and pending_size + size > max_shard_size:
                flush()
            if record.pop("clipped"):
                tqdm.write(f"stemsep shard: warning: song {record['name']!r}: stems exceed [-1, 1], clipped")
            pending.append(entries)
            pending_records.append(record)
            pending_size += size
            bar.update()
        if pending:
            flush()
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        bar.close()
    manifest["complete"] = True
    manifest["total_seconds"] = round(sum(r["seconds"] for r in manifest["songs"]), 3)
    _write_manifest(manifest_path, manifest)
    keep = {s["name"] for s in manifest["shards"]}
    for stale in out.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        if stale.name not in keep:  # left by an earlier run with other settings
            stale.unlink()
    for name_glob in (f"{split}-*.tar", f"{split}.json"):  # half-written by a killed run
        remove_stale_temporaries(out, name_glob)
    return manifest


def shard_dataset(root: str | os.PathLike, out: str | os.PathLike, *, layout: str,
                  sources: Sequence[str] | None = None, splits: Sequence[str] | None = None,
                  valid_songs: Sequence[str] | None = None, max_shard_size: str | int = "1GB", workers: int = 1,
                  progress: bool = False) -> dict[str, dict[str, Any] | None]:
    """``stemsep shard``: write ``out/<split>-NNNNNN.tar`` and ``out/<split>.json`` for each split.

    ``layout``: ``musdb``, ``moisesdb`` or ``folder`` (:mod:`stemsep.data.corpus.layouts`); ``sources``
    default drums, bass, other, vocals; ``splits`` default :data:`DEFAULT_SPLITS` of the layout;
    ``max_shard_size``: bytes or text such as ``"1GB"``, ``"256MB"``, ``"64MiB"``. Returns the manifest
    of each split, ``None`` for a split without songs (nothing written for it).
    """
    sources = resolve_layout_sources(root, layout, list(sources) if sources else None)
    max_size = parse_size(max_shard_size)
    valid = list(valid_songs) if valid_songs is not None else None
    manifests: dict[str, dict[str, Any] | None] = {}
    for split in splits or DEFAULT_SPLITS.get(layout, ["train"]):  # an unknown layout: discover_songs says so
        songs = discover_songs(root, layout, split, sources=sources, valid_songs=valid)
        manifests[split] = shard_split(songs, out, split, sources, max_shard_size=max_size, layout=layout,
                                       workers=max(1, workers), progress=progress) if songs else None
    return manifests
