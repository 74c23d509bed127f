"""The iterable datasets behind :class:`~stemsep.data.loaders.StemDataModule`.

Both yield ready batches (the DataLoader runs with ``batch_size=None``), so augmentations,
including :class:`~stemsep.data.augment.Remix` across songs, run in the data workers.

Work is split by *stream*: one per (rank, worker), ``stream = rank * workers + worker``, with
rank and world size given explicitly (Lightning does not set ``RANK`` in every launcher, so
webdataset's environment-based node splitting is not used).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from stemsep.data.augment import Augmentation, apply_augmentations, bind_augmentations, needed_length
from stemsep.data.augment.stembatch import StemBatch
from stemsep.data.loaders.allocator import keep_large_buffers
from stemsep.data.shards.manifest import Manifest, check_sample, decode_rows, decode_sources, output_names
from stemsep.data.shards.tarstream import iter_shard
from stemsep.errors import BadDataError, StemsepError
from stemsep.io.remote import Retry

MAX_CONSECUTIVE_FAILURES = 100


def _stream_id(rank: int, world_size: int) -> tuple[int, int, int]:
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    return rank * workers + worker, world_size * workers, worker


class TrainStream(IterableDataset):
    """Endless stream of augmented training batches ``(mix (B, C, T), stems (B, S, C, T))``.

    Each stream draws shards at random, with replacement, from its own share of the shards
    (round-robin by stream when there are at least as many shards as streams, else from all
    of them with its own seed). Songs pass a buffer of ``song_buffer`` encoded songs; a song
    taken out is decoded only where ``segments_per_song`` random segments fall (FLAC seeks),
    and the segments pass a shuffle buffer of ``shuffle`` segments before being batched.

    ``tune_malloc`` keeps large freed buffers in this process's heap for reuse
    (:func:`~stemsep.data.loaders.allocator.keep_large_buffers`), which saves the page faults of
    fresh ``mmap`` memory for every decoded span and batch.

    ``policy="warn"`` skips a corrupt shard or sample, or a remote shard whose reads keep
    failing after ``retry``'s retries, with a warning that counts the skips so far (songs of
    a shard failing midway that are still in the song buffer are dropped; songs already taken
    out were read whole); ``"raise"`` stops on it. ``epoch_batches`` (per rank) ends an epoch;
    ``None`` is endless (then bound epochs with the trainer's ``limit_train_batches``).

    The augmentations get the shards' sample rate (:meth:`~stemsep.data.augment.Augmentation.bind`):
    none of them states one.
    """

    def __init__(self, manifest: Manifest, shards: list[tuple[str, str]], mapping: dict[str, list[str]], *,
                 segment: int, batch_size: int, augmentations: Sequence[Augmentation] = (),
                 segments_per_song: int = 4, song_buffer: int = 4, shuffle: int = 64, seed: int = 0,
                 keep: set[str] | None = None, policy: str = "raise", verify_sha: bool = True,
                 epoch_batches: int | None = None, rank: int = 0, world_size: int = 1, tune_malloc: bool = True,
                 retry: Retry | None = None):
        if policy not in ("raise", "warn"):
            raise StemsepError(f"policy must be 'raise' or 'warn', got {policy!r}")
        if not shards:
            raise BadDataError(f"{manifest.url}: no training shards")
        self.manifest, self.shards, self.mapping = manifest, shards, mapping
        self.outputs = len(output_names(mapping))  # the hidden REST stem, if any, is last
        self.segment, self.batch_size = int(segment), int(batch_size)
        self.augmentations = list(augmentations)
        bind_augmentations(self.augmentations, manifest.samplerate)  # before any length: Shift counts seconds
        self.read_length = needed_length(self.augmentations, self.segment)
        self.segments_per_song, self.song_buffer, self.shuffle = segments_per_song, song_buffer, shuffle
        self.seed, self.keep, self.policy, self.verify_sha = seed, keep, policy, verify_sha
        self.epoch_batches, self.rank, self.world_size = epoch_batches, rank, world_size
        self.epoch = 0
        self.skipped = 0
        self.tune_malloc = tune_malloc
        self.retry = retry
        self._stems = sorted({s for stems in mapping.values() for s in stems})

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        stream, streams, worker = _stream_id(self.rank, self.world_size)
        workers = streams // self.world_size
        if self.tune_malloc:
            keep_large_buffers()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        self.epoch += 1
        limit = None
        if self.epoch_batches is not None:
            limit = self.epoch_batches // workers + (worker < self.epoch_batches % workers)
        shards = self.shards
        if self.keep is not None:  # only shards holding kept songs (else a stream could starve)
            useful = {s["shard"] for s in self.manifest.songs if s["name"] in self.keep}
            shards = [pair for pair in shards if pair[1] in useful]
            if not shards:
                raise BadDataError(f"{self.manifest.url}: the keep-list keeps no song of the training shards")
        own = shards[stream::streams] if len(shards) >= streams else shards
        batches = self._batches(self._segments(self._songs(own, rng), rng), rng, generator)
        for count, batch in enumerate(batches):
            if limit is not None and count >= limit:
                return
            yield batch

    def _failed(self, err: StemsepError, failures: int) -> None:
        if self.policy == "raise":
            raise err
        self.skipped += 1
        warnings.warn(f"stemsep data: skipped bad training data ({self.skipped} so far on rank {self.rank}, "
                      f"this worker): {err}", RuntimeWarning, stacklevel=3)
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise BadDataError(f"{self.manifest.url}: {failures} bad shards/samples in a row, giving up ({err})")

    def _songs(self, shards: list[tuple[str, str]], rng: np.random.Generator) -> Iterator[tuple[str, dict]]:
        """Endless ``(where, sample)`` from randomly drawn shards, through the song buffer."""
        buffer: list[tuple[str, dict]] = []
        failures = 0
        wanted = None if self.keep is None else self._wanted
        while True:
            url, name = shards[int(rng.integers(len(shards)))]
            entry = self.manifest.shards[name]
            added = []
            try:
                for key, sample in iter_shard(url, name, entry["sha256"] if self.verify_sha else None, wanted,
                                              entry.get("bytes"), self.retry):
                    added.append((f"shard {name}, sample {key}", sample))
                    buffer.append(added[-1])
                    if len(buffer) >= max(1, self.song_buffer):
                        yield buffer.pop(int(rng.integers(len(buffer))))
                failures = 0 if added else failures
            except StemsepError as err:
                # drop what is still buffered from the bad shard (its hash fails only at its end)
                buffer = [item for item in buffer if not any(item is a for a in added)]
                failures += 1
                self._failed(err, failures)

    def _wanted(self, key: str) -> bool:
        # keys are "<index>_<name>"; the keep-list holds names: look them up via the manifest.
        return key in self._keep_keys

    @property
    def _keep_keys(self) -> set[str]:
        if not hasattr(self, "_keep_keys_cache"):
            self._keep_keys_cache = {s["key"] for s in self.manifest.songs if s["name"] in self.keep}
        return self._keep_keys_cache

    def _segments(self, songs: Iterator[tuple[str, dict]],
                  rng: np.random.Generator) -> Iterator[list[torch.Tensor]]:
        """Random segments (lists of ``(C, read_length)`` stems) through the shuffle buffer.

        The ``segments_per_song`` segments of a song are decoded as the union of their spans,
        each overlapping stretch once, and cut as views (no copy until the batch is written).
        """
        buffer: list[list[torch.Tensor]] = []
        failures = 0
        for where, sample in songs:
            shard, key = where.split(", sample ")
            try:
                name, frames = check_sample(self.manifest, shard.removeprefix("shard "), key, sample, self._stems)
                starts = sorted(int(rng.integers(max(1, frames - self.read_length + 1)))
                                for _ in range(self.segments_per_song))
                cuts = []
                for first, last in _spans(starts, self.read_length):
                    rows = decode_rows(sample, self.mapping, f"{where} (song {name!r})", first, last - first)
                    for start in starts:
                        if first <= start < last:
                            cuts.append([_fit(r[:, start - first: start - first + self.read_length],
                                              self.read_length) for r in rows])
                failures = 0
            except StemsepError as err:
                failures += 1
                self._failed(err, failures)
                continue
            for wav in cuts:
                buffer.append(wav)
                if len(buffer) >= max(1, self.shuffle):
                    yield buffer.pop(int(rng.integers(len(buffer))))

    def _batches(self, segments: Iterator[list[torch.Tensor]], rng: np.random.Generator,
                 generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batch = []
        for rows in segments:
            batch.append(rows)
            if len(batch) == self.batch_size:
                mix, stems = apply_augmentations(self.augmentations, StemBatch.from_rows(batch), generator,
                                                 self.segment)
                yield mix, stems[:, :self.outputs]  # the mix has every stem; the targets are the sources
                batch = []


def _spans(starts: list[int], length: int) -> list[tuple[int, int]]:
    """Merged ``[first, last)`` spans covering ``[start, start + length)`` of sorted ``starts``."""
    spans: list[tuple[int, int]] = []
    for start in starts:
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], start + length))
        else:
            spans.append((start, start + length))
    return spans


def _fit(wav: torch.Tensor, length: int) -> torch.Tensor:
    return wav if wav.shape[-1] >= length else torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


class EvalStream(IterableDataset):
    """Whole songs, each exactly once over all streams: ``(mix (1,C,T), stems (1,S,C,T), [name])``.

    Songs (in manifest order, restricted to the given shards) are dealt round-robin to the
    streams, so counts differ by at most one whatever the numbers of songs, shards, ranks and
    workers. A stream reads only shards holding its songs and decodes only its songs. Any bad
    data, or a remote shard whose reads keep failing after ``retry``'s retries, is an error
    whatever the training ``policy`` (evaluation must not silently drop songs).
    """

    def __init__(self, manifest: Manifest, shards: list[tuple[str, str]], mapping: dict[str, list[str]], *,
                 verify_sha: bool = True, rank: int = 0, world_size: int = 1, retry: Retry | None = None):
        self.manifest, self.shards, self.mapping, self.retry = manifest, shards, mapping, retry
        self.verify_sha, self.rank, self.world_size = verify_sha, rank, world_size
        chosen = {name for _, name in shards}
        self.songs = [s for s in manifest.songs if s.get("shard") in chosen]
        self._stems = sorted({s for stems in mapping.values() for s in stems})

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        stream, streams, _ = _stream_id(self.rank, self.world_size)
        mine = self.songs[stream::streams]
        keys = {s["key"]: s for s in mine}
        seen = set()
        for url, name in self.shards:
            if not any(s["shard"] == name for s in mine):
                continue
            sha = self.manifest.shards[name]["sha256"] if self.verify_sha else None
            size = self.manifest.shards[name].get("bytes")
            for key, sample in iter_shard(url, name, sha, keys.__contains__, size, self.retry):
                song, _ = check_sample(self.manifest, name, key, sample, self._stems)
                stems = decode_sources(sample, self.mapping, f"shard {name}, sample {key} (song {song!r})")
                seen.add(key)
                yield stems.sum(0)[None], stems[None, :len(output_names(self.mapping))], [song]
        missing = [s for s in mine if s["key"] not in seen]
        if missing:
            raise BadDataError(f"shard {missing[0]['shard']}: song {missing[0]['name']!r} listed in the manifest "
                               f"{self.manifest.url} is not in the shard")
