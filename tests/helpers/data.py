"""Helpers shared by the tests/test_data_*.py files: shard a corpus once, read back songs."""

from __future__ import annotations

import shutil
from pathlib import Path

from stemsep.data.shards.shard import shard_dataset
from stemsep.io.files import TEMP_MARK


def shard_corpus(root: Path, out: Path, *, layout: str = "musdb", splits=("train", "test"),
                 max_size: str = "1MB", sources=None, valid_songs=None) -> Path:
    shard_dataset(root, out, layout=layout, sources=sources, splits=list(splits), valid_songs=valid_songs,
                  max_shard_size=max_size)
    return out


def copy_shards(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def leftovers(root: Path) -> list[Path]:
    """Hidden temporaries under ``root``: atomic-write files, ``.part``/``.old`` track folders."""
    return [p for p in root.rglob(".*") if TEMP_MARK in p.name or p.name.endswith((".part", ".old"))]
