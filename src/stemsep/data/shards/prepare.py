"""Shards made on first use: ``StemDataModule(prepare=...)`` shards a dataset folder (optionally
generating a synthetic corpus there first) when its manifests are absent.

Why: the quickstart (and any small experiment) should train on exactly the data path used at
scale -- shards streamed by :class:`~stemsep.data.loaders.StemDataModule` -- without a
separate ``stemsep synth`` + ``stemsep shard`` step. Bad input folders fail here, while
sharding, with the one-line errors of :mod:`stemsep.data.corpus.layouts` and
:mod:`stemsep.data.shards.shard` (naming the file).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from stemsep.contract import DEFAULT_SOURCES
from stemsep.data.corpus.layouts import LAYOUTS, discover_songs
from stemsep.data.corpus.synth import SyntheticCorpus
from stemsep.data.shards.shard import shard_split
from stemsep.errors import BadDataError, StemsepError

SPLIT_ROLES = ("train", "valid", "test")


@dataclass
class PrepareShards:
    """Where the dataset folder is, how to shard it, and which split feeds which role.

    Args:
        root: dataset folder (``~`` and environment variables expanded).
        layout: its layout (``musdb``, ``moisesdb``, ``folder``).
        out: shard folder; default ``<root>/shards``. Delete it to shard again.
        train / valid / test: the dataset split whose shards train / validate / test
            (``None``: no such role). Small corpora without validation songs use ``valid: test``.
        valid_songs: song names of the ``valid`` split (musdb default: the 14 standard ones).
        max_shard_size: bytes per shard (bound).
        samplerate: required sample rate of every file (and of a generated corpus).

    A synthetic corpus to generate at ``root`` when it is missing is the data module's own
    ``synthetic`` option (a flat key, so ``--data.init_args.synthetic null`` parses).
    """

    root: str
    layout: str = "musdb"
    out: str | None = None
    train: str | None = "train"
    valid: str | None = "valid"
    test: str | None = "test"
    valid_songs: list[str] | None = None
    max_shard_size: int = 10**9
    samplerate: int = 44100

    @property
    def root_path(self) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(self.root)))

    @property
    def out_path(self) -> Path:
        if self.out is None:
            return self.root_path / "shards"
        return Path(os.path.expandvars(os.path.expanduser(self.out)))

    def manifest(self, role: str) -> str | None:
        """Manifest path that serves ``role`` (``train``, ``valid``, ``test``), or ``None``."""
        split = getattr(self, role)
        return None if split is None else str(self.out_path / f"{split}.json")


def _complete(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def prepare_shards(prep: PrepareShards, stems: list[str] | None = None,
                   synthetic: SyntheticCorpus | None = None) -> None:
    """Shard the splits ``prep`` uses, unless already done; first generate ``synthetic`` at a
    missing root (without it, a missing root is an error naming it)."""
    if prep.layout not in LAYOUTS:
        raise StemsepError(f"data.prepare.layout: unknown layout {prep.layout!r} (one of {', '.join(LAYOUTS)})")
    splits = list(dict.fromkeys(s for s in (getattr(prep, role) for role in SPLIT_ROLES) if s is not None))
    todo = [s for s in splits if not _complete(prep.out_path / f"{s}.json")]
    if not todo:
        return
    if synthetic is not None and not prep.root_path.exists():
        from stemsep.data.corpus.synth import generate_corpus

        generate_corpus(prep.root_path, samplerate=prep.samplerate, progress=True, **asdict(synthetic))
    stems = list(stems or DEFAULT_SOURCES)
    for split in todo:
        songs = discover_songs(prep.root_path, prep.layout, split, sources=stems,
                               valid_songs=prep.valid_songs, samplerate=prep.samplerate)
        if not songs:
            raise BadDataError(f"{prep.root_path}: no songs in the {split!r} split to shard")
        shard_split(songs, prep.out_path, split, stems, max_shard_size=prep.max_shard_size,
                    layout=prep.layout, progress=True)
