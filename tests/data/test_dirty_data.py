"""Training on dirty data: a corrupt sample inside an otherwise valid shard is skipped with a
counted warning under ``policy="warn"`` (training goes on), and stops training under ``"raise"``."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from helpers.data import shard_corpus
from stemsep.data.loaders.datamodule import StemDataModule
from stemsep.errors import StemsepError


@pytest.fixture(scope="module")
def dirty(corpus_root, tmp_path_factory) -> tuple[Path, str]:
    """All 4 training songs in one shard; song0001's vocals FLAC overwritten with zeros (tar intact,
    manifest sha256 updated: the corruption happened before sharding, not in transit)."""
    out = shard_corpus(corpus_root, tmp_path_factory.mktemp("dirty"), splits=("train",), max_size="1GB")
    manifest = json.loads((out / "train.json").read_text())
    (shard,) = manifest["shards"]
    path = out / shard["name"]
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if "song0001" in m.name and m.name.endswith(".vocals.flac"))
    data = bytearray(path.read_bytes())
    data[member.offset_data:member.offset_data + member.size] = bytes(member.size)
    path.write_bytes(bytes(data))
    shard["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (out / "train.json").write_text(json.dumps(manifest))
    return out, member.name.split(".")[0]


def _dataset(out: Path, policy: str):
    dm = StemDataModule(train_manifest=str(out / "train.json"), segment=0.5, batch_size=2, num_workers=0,
                        shuffle=2, song_buffer=1, segments_per_song=1, epoch_batches=6, policy=policy)
    return dm.train_dataset()


def test_corrupt_sample_is_skipped_counted_and_training_goes_on(dirty):
    out, key = dirty
    dataset = _dataset(out, "warn")
    with pytest.warns(RuntimeWarning, match=rf"skipped bad training data \(1 so far on rank 0.*sample {key} "
                                            r"\(song 'song0001'\), stem vocals: not a readable FLAC stream \(Format not recognised"):
        batches = list(DataLoader(dataset, batch_size=None))
    assert len(batches) == 6  # the epoch is complete despite the bad song
    assert dataset.skipped >= 1
    for mix, stems in batches:
        assert stems.isfinite().all() and mix.shape == (2, 2, 22050)


def test_corrupt_sample_stops_training_under_raise(dirty):
    out, key = dirty
    with pytest.raises(StemsepError, match=rf"sample {key} \(song 'song0001'\), stem vocals"):
        list(DataLoader(_dataset(out, "raise"), batch_size=None))
