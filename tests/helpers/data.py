"""Helpers shared by the tests/test_data_*.py files: shard a corpus once, read back songs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stemsep.data.shards.shard import shard_dataset
from stemsep.io.audio import read_audio, write_audio
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


def moisesdb_corpus(corpus_root: Path, root: Path) -> Path:
    """Two MoisesDB-layout songs (``uuid-0``, ``uuid-1``) from the synthetic corpus's first two train songs:
    drums, bass, vocals as they are, ``other`` split into piano (0.5), wind (0.25) and guitar (0.25);
    song 1 has no guitar at all. Files are 32-bit float WAV, so sums are exact to rounding."""
    for index in range(2):
        src = corpus_root / "train" / f"song{index:04d}"
        stems = {name: read_audio(src / f"{name}.wav")[0] for name in ("drums", "bass", "other", "vocals")}
        parts = {"drums/a.wav": stems["drums"], "bass/b.wav": stems["bass"], "vocals/c.wav": stems["vocals"],
                 "piano/e.wav": stems["other"] * 0.5, "wind/w.wav": stems["other"] * 0.25}
        if index == 0:
            parts["guitar/d.wav"] = stems["other"] * 0.25
        for rel, wav in parts.items():
            (root / f"uuid-{index}" / rel).parent.mkdir(parents=True, exist_ok=True)
            write_audio(root / f"uuid-{index}" / rel, wav, 44100, bits=32)
        (root / f"uuid-{index}" / "data.json").write_text(json.dumps({"song": f"s{index}", "stems": []}))
    return root
