"""``FolderDataModule``: multitrack songs straight from folders (MUSDB18-HQ, MoisesDB, plain).

Good for small datasets and quick experiments; thousands of songs belong in shards
(:class:`stemsep.data.loaders.StemDataModule`). Training draws random segments of random
songs (only the needed samples are decoded); validation and test use whole tracks.

Sources mean what they mean for shards (:func:`stemsep.data.shards.manifest.resolve_stems`: stems,
``stem_groups``, ``instrumental``, ``no_<stem>``), and by default the mixture is the full mix: the
stored stems no source uses travel as a hidden last row (:data:`REST`) through the augmentations and
are dropped from the targets, as in :class:`~stemsep.data.loaders.streams.TrainStream`.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from stemsep.contract import DEFAULT_SOURCES
from stemsep.data.augment import Augmentation, apply_augmentations, bind_augmentations, needed_length
from stemsep.data.corpus.layouts import (
    ALL_STEMS,
    SongFiles,
    discover_songs,
    folder_song_dirs,
    layout_stems,
    read_stem,
)
from stemsep.data.corpus.synth import SyntheticCorpus
from stemsep.data.loaders.datamodule import source_names
from stemsep.data.shards.manifest import GROUP_REST, REST, output_names, resolve_stems
from stemsep.errors import BadDataError
from stemsep.io.audio import find_audio, read_audio


def read_song(song: SongFiles, sources: list[str] | dict[str, list[str]], start: int = 0,
              frames: int = -1) -> torch.Tensor:
    """Rows ``(outputs, channels, time)`` of ``song`` from sample ``start``.

    ``sources``: stem names (one row each), or a mapping output -> stored stems summed into its row
    (:func:`~stemsep.data.shards.manifest.resolve_stems`); every file of a stem is added.
    """
    mapping = sources if isinstance(sources, dict) else {s: [s] for s in sources}
    length = song.frames - start if frames < 0 else frames
    out = torch.zeros(len(mapping), song.channels, length)
    for i, stems in enumerate(mapping.values()):
        for stem in stems:
            for path in song.stems.get(stem, []):
                wav = _read_file(song, path, stem, start, length)
                out[i, :, : wav.shape[-1]] += wav
    return out


def _read_file(song: SongFiles, path: Path, stem: str, start: int, length: int) -> torch.Tensor:
    """``length`` samples from ``start`` of one file of ``stem`` (a ``.stem.mp4``: its stream, decoded whole)."""
    if song.streams is not None:
        return read_stem(song, path, stem)[:, start:start + length]
    return read_audio(path, start=start, frames=length)[0]


class SegmentDataset(Dataset):
    """``length`` random training segments of ``frames`` samples; returns rows ``(R, C, T)``.

    ``sources``: stem names, or a mapping output -> stored stems (the hidden :data:`REST` row last,
    which :class:`AugmentedCollate` drops from the targets after mixing). Songs are drawn in
    proportion to their duration; randomness comes from torch's RNG, which Lightning seeds per
    worker (``seed_everything``), so runs are reproducible.
    """

    def __init__(self, songs: list[SongFiles], sources: list[str] | dict[str, list[str]], frames: int,
                 length: int):
        usable = [s for s in songs if s.frames >= frames]
        if not usable:
            raise BadDataError(f"no training song is at least {frames} samples long (segment too long?)")
        self.songs, self.sources, self.frames, self.length = usable, sources, frames, length
        self.weights = torch.tensor([s.frames - frames + 1 for s in usable], dtype=torch.double)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        song = self.songs[int(torch.multinomial(self.weights, 1))]
        start = int(torch.randint(0, song.frames - self.frames + 1, ()))
        return read_song(song, self.sources, start, self.frames)


class TrackDataset(Dataset):
    """Whole tracks: ``(mix (C, T), stems (S, C, T), name)``.

    ``sources``: stem names, or a mapping output -> stored stems (a hidden :data:`REST` row is summed
    into the mix, not returned). The mix is the layout's mixture file where the song has one (as
    MUSDB evaluation does, and as before ``full_mix``), else the sum of the rows.
    """

    def __init__(self, songs: list[SongFiles], sources: list[str] | dict[str, list[str]]):
        self.songs, self.sources = songs, sources
        self.outputs = len(output_names(sources)) if isinstance(sources, dict) else len(sources)
        # with a mixture file, the hidden REST row is not needed: not read
        self.targets = {k: v for k, v in sources.items() if k != REST} if isinstance(sources, dict) else sources

    def __len__(self) -> int:
        return len(self.songs)

    def __getitem__(self, index: int):
        song = self.songs[index]
        if song.mixture is not None:
            mix = read_stem(song, song.mixture, "mixture") if song.streams is not None else read_audio(song.mixture)[0]
            return mix, read_song(song, self.targets), song.name
        rows = read_song(song, self.sources)
        return rows.sum(0), rows[:self.outputs], song.name


class AugmentedCollate:
    """Stack segments, apply the batch augmentations in order to every row, return ``(mix, stems)``.

    The mix is the sum of all rows (after the augmentations, so remix and gains act on the hidden
    :data:`REST` row too); the targets are the first ``outputs`` rows (default: all). Randomness
    comes from a generator seeded from the worker's torch seed (set by Lightning's
    ``seed_everything(workers=True)``), so streams are reproducible.
    """

    def __init__(self, augment: list | None, frames: int, outputs: int | None = None):
        self.augment, self.frames, self.outputs = list(augment or []), frames, outputs
        self._generator: torch.Generator | None = None

    def __call__(self, items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        mix, stems = apply_augmentations(self.augment, torch.stack(items), self._generator, self.frames)
        return mix, stems if self.outputs is None else stems[:, :self.outputs]


class FolderDataModule(L.LightningDataModule):
    """Songs from folders in one of the layouts of :mod:`stemsep.data.corpus.layouts`.

    Args:
        root: dataset root (``~`` and environment variables expanded).
        layout: ``musdb``, ``moisesdb`` or ``folder``.
        sources: sources to separate, in the network's order (``stemsep fit`` sets the network's):
            stored stems, ``stem_groups`` groups, derived targets (``instrumental`` = every stem but
            vocals, ``no_<stem>``), or a mapping ``{name: [stems...]}`` (``rest``: the stems no other
            source names); default drums, bass, other, vocals. ``[all]`` (moisesdb): every stem type.
        stem_groups: ``{group: [stored stems...]}`` summed at load time (as
            :class:`~stemsep.data.loaders.StemDataModule`). On moisesdb a source ``other`` that no
            group names is ``[rest]``: every stem type no other source takes (MoisesDB's own
            ``other`` type, guitar, piano, ...), as this layout always summed it.
        full_mix: the mixture is the sum of *all* the song's stored stems, also those no source uses
            (default; a one-stem vocal model learns from the whole song): musdb's drums, bass, other
            and vocals; moisesdb's every stem type under ``root``; for the ``folder`` layout, the
            ``<stem>.{wav,flac}`` every song has, ``mixture`` excluded. Validation and test use the
            layout's mixture file where there is one (as before). ``false``: the training mixture
            is the sum of the sources, and only their files are read.
        segment: training segment length in seconds.
        batch_size: training batch size (validation and test use whole tracks, one at a time).
        epoch_size: training segments per epoch.
        num_workers: data loader workers.
        samplerate: required sample rate of every file.
        augment: batch augmentations (e.g. ``stemsep.data.augment.FlipSign``), applied in order.
        valid_songs: songs held out of ``train`` for validation (musdb default: the standard 14).
        synthetic: if ``root`` does not exist, generate a synthetic corpus there first with these
            :class:`SyntheticCorpus` settings; without it a missing root is an error.
        valid_split: which split validates: ``valid`` or ``test`` (small corpora have no
            validation songs).
    """

    def __init__(self, root: str, layout: str = "musdb", sources: list[str] | dict[str, list[str]] | None = None,
                 segment: float = 6.0, batch_size: int = 4, epoch_size: int = 1000, num_workers: int = 0,
                 samplerate: int = 44100, augment: list[Augmentation] | None = None, valid_songs: list[str] | None = None,
                 synthetic: SyntheticCorpus | None = None, valid_split: str = "valid",
                 stem_groups: dict[str, list[str]] | None = None, full_mix: bool = True):
        super().__init__()
        self.root = Path(os.path.expandvars(os.path.expanduser(root)))
        self.layout = layout
        self.source_option = sources if sources is not None else list(DEFAULT_SOURCES)
        self.stem_groups, self.full_mix = stem_groups, bool(full_mix)
        self.segment, self.batch_size, self.epoch_size = segment, batch_size, epoch_size
        self.num_workers, self.samplerate, self.augment = num_workers, samplerate, augment
        self.valid_songs, self.synthetic, self.valid_split = valid_songs, synthetic, valid_split
        self._mapping: dict[str, list[str]] | None = None
        self._stored: list[str] = []  # the dataset's stored stems (layout_stems), read with the mapping

    @property
    def sources(self) -> list[str]:
        """The sources the network gets (a mapping's names; ``[all]``: the stem types, read from disk)."""
        if self._every_stem:
            return output_names(self.mapping)
        return source_names(self.source_option)

    @property
    def _every_stem(self) -> bool:
        return isinstance(self.source_option, list) and self.source_option == [ALL_STEMS]

    @property
    def mapping(self) -> dict[str, list[str]]:
        """Output source -> stored stems summed into it (:data:`REST` last with ``full_mix``)."""
        if self._mapping is None:
            stored = self._stored = layout_stems(self.root, self.layout)
            groups = dict(self.stem_groups or {})
            option = None if self._every_stem else self.source_option
            if self.layout == "moisesdb" and option is not None and "other" in source_names(option):
                groups.setdefault("other", [GROUP_REST])  # MoisesDB's `other`: every stem type left over
            if self.layout == "folder" and option is not None:
                self._check_folder_sources([n for n in source_names(option) if n not in stored and n not in groups])
            self._mapping = resolve_stems(stored, option, stem_groups=groups, full_mix=self.full_mix,
                                          where=str(self.root), holder="the songs")
        return self._mapping

    def _check_folder_sources(self, names: list[str]) -> None:
        """Sources of a plain folder dataset that not every song stores: a one-line error naming a song
        folder without it (as before stored stems were resolved), where some song has that file."""
        names = [n for n in names if n != "instrumental" and not n.startswith("no_")]
        for split in ("train", "valid", "test"):
            for name in names:
                if any(find_audio(song, name) for song in folder_song_dirs(self.root, split)):
                    discover_songs(self.root, "folder", split, sources=[name], check=False)

    def prepare_data(self) -> None:
        if self.synthetic is not None and not self.root.exists():
            from stemsep.data.corpus.synth import generate_corpus

            generate_corpus(self.root, samplerate=self.samplerate, progress=True, **asdict(self.synthetic))

    def _songs(self, split: str) -> list[SongFiles]:
        """The songs of ``split`` with the files of exactly the stems the mapping sums (no others)."""
        stems = [s for stems in self.mapping.values() for s in stems]
        # moisesdb: each stem type read as itself, the unused ones as nothing (not the catch-all `other`)
        identity = ({s: s if s in stems else "\0unused" for s in self._stored}
                    if self.layout == "moisesdb" else None)
        return discover_songs(self.root, self.layout, split, sources=stems, valid_songs=self.valid_songs,
                              samplerate=self.samplerate, source_map=identity)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.frames = int(round(self.segment * self.samplerate))
            bind_augmentations(self.augment or [], self.samplerate)  # Shift(seconds=...) etc. need the rate
            read_frames = needed_length(self.augment or [], self.frames)
            self.train_set = SegmentDataset(self._songs("train"), self.mapping, read_frames, self.epoch_size)
        if stage in ("fit", "validate"):
            self.valid_set = TrackDataset(self._songs(self.valid_split), self.mapping)
            if len(self.valid_set) == 0:
                raise BadDataError(f"{self.root}: no songs in the {self.valid_split!r} split to validate on")
        if stage in ("test", "predict"):
            self.test_set = TrackDataset(self._songs("test"), self.mapping)

    def train_dataloader(self) -> DataLoader:
        collate = AugmentedCollate(self.augment, self.frames, len(output_names(self.mapping)))
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, drop_last=True,
                          num_workers=self.num_workers, collate_fn=collate, persistent_workers=self.num_workers > 0)

    def _tracks(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=1, num_workers=self.num_workers, collate_fn=_collate_track)

    def val_dataloader(self) -> DataLoader:
        return self._tracks(self.valid_set)

    def test_dataloader(self) -> DataLoader:
        return self._tracks(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._tracks(self.test_set)


def _collate_track(items):
    mix, stems, name = items[0]
    return mix[None], stems[None], [name]
