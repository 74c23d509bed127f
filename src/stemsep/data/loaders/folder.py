"""``FolderDataModule``: multitrack songs straight from folders (MUSDB18-HQ, MoisesDB, plain).

Good for small datasets and quick experiments; thousands of songs belong in shards
(:class:`stemsep.data.loaders.StemDataModule`). Training draws random segments of random
songs (only the needed samples are decoded); validation and test use whole tracks.
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
from stemsep.data.corpus.layouts import SongFiles, discover_songs
from stemsep.data.corpus.synth import SyntheticCorpus
from stemsep.errors import BadDataError
from stemsep.io.audio import read_audio


def read_song(song: SongFiles, sources: list[str], start: int = 0, frames: int = -1) -> torch.Tensor:
    """Stems ``(sources, channels, time)`` of ``song`` from sample ``start`` (files of a source summed)."""
    length = song.frames - start if frames < 0 else frames
    out = torch.zeros(len(sources), song.channels, length)
    for i, source in enumerate(sources):
        for path in song.stems.get(source, []):
            wav, _ = read_audio(path, start=start, frames=length)
            out[i, :, : wav.shape[-1]] += wav
    return out


class SegmentDataset(Dataset):
    """``length`` random training segments of ``frames`` samples; returns ``stems (S, C, T)``.

    Songs are drawn in proportion to their duration; randomness comes from torch's RNG, which
    Lightning seeds per worker (``seed_everything``), so runs are reproducible.
    """

    def __init__(self, songs: list[SongFiles], sources: list[str], frames: int, length: int):
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

    The mixture file is used when the layout has one (as MUSDB evaluation does), else the sum.
    """

    def __init__(self, songs: list[SongFiles], sources: list[str]):
        self.songs, self.sources = songs, sources

    def __len__(self) -> int:
        return len(self.songs)

    def __getitem__(self, index: int):
        song = self.songs[index]
        stems = read_song(song, self.sources)
        mix = read_audio(song.mixture)[0] if song.mixture is not None else stems.sum(0)
        return mix, stems, song.name


class AugmentedCollate:
    """Stack segments, apply the batch augmentations in order, return ``(mix, stems)``.

    Randomness comes from a generator seeded from the worker's torch seed (set by Lightning's
    ``seed_everything(workers=True)``), so streams are reproducible.
    """

    def __init__(self, augment: list | None, frames: int):
        self.augment, self.frames = list(augment or []), frames
        self._generator: torch.Generator | None = None

    def __call__(self, items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(torch.initial_seed() % 2**63)
        return apply_augmentations(self.augment, torch.stack(items), self._generator, self.frames)


class FolderDataModule(L.LightningDataModule):
    """Songs from folders in one of the layouts of :mod:`stemsep.data.corpus.layouts`.

    Args:
        root: dataset root (``~`` and environment variables expanded).
        layout: ``musdb``, ``moisesdb`` or ``folder``.
        sources: stems to separate, in the network's order.
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

    def __init__(self, root: str, layout: str = "musdb", sources: list[str] | None = None,
                 segment: float = 6.0, batch_size: int = 4, epoch_size: int = 1000, num_workers: int = 0,
                 samplerate: int = 44100, augment: list[Augmentation] | None = None, valid_songs: list[str] | None = None,
                 synthetic: SyntheticCorpus | None = None, valid_split: str = "valid"):
        super().__init__()
        self.root = Path(os.path.expandvars(os.path.expanduser(root)))
        self.layout, self.sources = layout, list(sources or DEFAULT_SOURCES)
        self.segment, self.batch_size, self.epoch_size = segment, batch_size, epoch_size
        self.num_workers, self.samplerate, self.augment = num_workers, samplerate, augment
        self.valid_songs, self.synthetic, self.valid_split = valid_songs, synthetic, valid_split

    def prepare_data(self) -> None:
        if self.synthetic is not None and not self.root.exists():
            from stemsep.data.corpus.synth import generate_corpus

            generate_corpus(self.root, samplerate=self.samplerate, progress=True, **asdict(self.synthetic))

    def _songs(self, split: str) -> list[SongFiles]:
        return discover_songs(self.root, self.layout, split, sources=self.sources,
                              valid_songs=self.valid_songs, samplerate=self.samplerate)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.frames = int(round(self.segment * self.samplerate))
            bind_augmentations(self.augment or [], self.samplerate)  # Shift(seconds=...) etc. need the rate
            read_frames = needed_length(self.augment or [], self.frames)
            self.train_set = SegmentDataset(self._songs("train"), self.sources, read_frames, self.epoch_size)
        if stage in ("fit", "validate"):
            self.valid_set = TrackDataset(self._songs(self.valid_split), self.sources)
            if len(self.valid_set) == 0:
                raise BadDataError(f"{self.root}: no songs in the {self.valid_split!r} split to validate on")
        if stage in ("test", "predict"):
            self.test_set = TrackDataset(self._songs("test"), self.sources)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False, drop_last=True,
                          num_workers=self.num_workers, collate_fn=AugmentedCollate(self.augment, self.frames),
                          persistent_workers=self.num_workers > 0)

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
