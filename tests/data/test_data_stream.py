"""StemDataModule on shards: batch contract, rank/worker splitting, seeding, bad shards, keep-lists."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from helpers.data import copy_shards
from stemsep.data.augment import FlipChannels, FlipSign, Remix, Repitch, Scale, Shift
from stemsep.data.loaders.datamodule import StemDataModule
from stemsep.errors import BadDataError


def _dm(shards: Path, **kw) -> StemDataModule:
    options = dict(train_manifest=str(shards / "train.json"), valid_manifest=str(shards / "test.json"),
                   segment=0.5, batch_size=4, num_workers=0, shuffle=4, song_buffer=2, epoch_batches=3)
    return StemDataModule(**{**options, **kw})


def _batches(dataset, count, workers=0):
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == count:
            break
    return out


def test_training_batches_follow_the_contract(shards):
    augs = [Repitch(proba=0.5), Shift(2205), FlipChannels(), FlipSign(), Scale(), Remix(group_size=2)]
    dm = _dm(shards, augmentations=augs, sources=["vocals", "drums"], full_mix=False)  # mix = sum of the sources
    assert dm.sources == ["vocals", "drums"] and dm.samplerate == 44100
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    for mix, stems in batches:
        assert mix.shape == (4, 2, 22050) and stems.shape == (4, 2, 2, 22050) and mix.dtype == torch.float32
        assert torch.equal(mix, stems.sum(1))
        assert stems.abs().amax(dim=(-1, -2)).min() > 0  # real audio, not padding


def test_source_mapping_sums_stems(shards):
    dm = _dm(shards, sources={"vocals": ["vocals"], "accompaniment": ["drums", "bass", "other"]})
    full = _dm(shards)
    mix, stems, name = next(iter(dm.eval_dataset("valid")))
    mix_all, stems_all, name_all = next(iter(full.eval_dataset("valid")))
    assert name == name_all and stems.shape[1] == 2
    assert torch.allclose(stems[0, 1], stems_all[0, :3].sum(0)) and torch.allclose(mix, mix_all, atol=1e-6)


@pytest.mark.parametrize("world_size", [2, 3])
def test_validation_covers_every_song_exactly_once(shards, world_size):
    dm = _dm(shards, valid_manifest=str(shards / "train.json"))  # 4 songs in 4 shards
    seen = Counter()
    for rank in range(world_size):
        for mix, stems, names in DataLoader(dm.eval_dataset("valid", rank, world_size), batch_size=None,
                                            num_workers=2):
            assert mix.shape[0] == 1 and stems.shape[:2] == (1, 4) and mix.shape[-1] == 3 * 44100
            assert torch.allclose(mix, stems.sum(1))
            seen.update(names)
    assert seen == Counter({f"song{i:04d}": 1 for i in range(4)})


def test_training_streams_by_rank_and_seed(shards):
    dm = _dm(shards)
    a0 = _batches(dm.train_dataset(0, 2), 2)
    a0_again = _batches(dm.train_dataset(0, 2), 2)
    a1 = _batches(dm.train_dataset(1, 2), 2)
    other_seed = _batches(_dm(shards, seed=1).train_dataset(0, 2), 2)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a0, a0_again, strict=True))
    assert not torch.equal(a0[0][1], a1[0][1]) and not torch.equal(a0[0][1], other_seed[0][1])
    # two workers of one rank differ too
    w = _batches(dm.train_dataset(0, 1), 2, workers=2)
    assert not torch.equal(w[0][1], w[1][1])


def test_keep_list_restricts_training_songs(shards, tmp_path):
    keep = tmp_path / "keep.json"
    keep.write_text(json.dumps({"keep": ["song0002"]}))
    dm = _dm(shards, keep_list=str(keep), segments_per_song=1)
    all_songs = _dm(shards, valid_manifest=str(shards / "train.json")).eval_dataset("valid")
    whole = next(b for b in all_songs if b[2] == ["song0002"])
    full = whole[1][0]  # (S, C, T) of song0002
    for _, stems in _batches(dm.train_dataset(), 2):
        for seg in stems:
            starts = (full[0, 0] == seg[0, 0, 0]).nonzero().flatten()
            assert any(torch.equal(full[..., s:s + seg.shape[-1]], seg) for s in starts.tolist())
    keep.write_text(json.dumps({"keep": []}))
    with pytest.raises(BadDataError, match="keeps no song"):
        _batches(_dm(shards, keep_list=str(keep)).train_dataset(), 1)


def _broken(shards: Path, tmp_path: Path) -> tuple[Path, str]:
    out = copy_shards(shards, tmp_path / "broken")
    name = json.loads((out / "test.json").read_text())["shards"][0]["name"]
    return out, name


def test_truncated_shard_is_named(shards, tmp_path):
    out, name = _broken(shards, tmp_path)
    data = (out / name).read_bytes()
    (out / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(BadDataError, match=f"shard {name}: truncated or corrupt tar"):
        list(_dm(out).eval_dataset("valid"))


def test_sha_mismatch_and_policy_warn(shards, tmp_path, monkeypatch):
    monkeypatch.setattr("stemsep.data.loaders.streams.MAX_CONSECUTIVE_FAILURES", 5)
    out, name = _broken(shards, tmp_path)
    data = bytearray((out / name).read_bytes())
    data[-2000] ^= 0xFF  # inside the tar's zero padding: tar still parses, content hash differs
    (out / name).write_bytes(bytes(data))
    with pytest.raises(BadDataError, match=f"shard {name}: sha256 mismatch"):
        list(_dm(out).eval_dataset("valid"))
    # training on a manifest whose every shard is bad: warn and count, then give up (never silent)
    train = json.loads((out / "train.json").read_text())
    for entry in train["shards"]:
        entry["sha256"] = "0" * 64
    (out / "train.json").write_text(json.dumps(train))
    dm = _dm(out, policy="warn", song_buffer=100)
    with pytest.warns(RuntimeWarning, match=r"skipped bad training data \(1 so far"):
        with pytest.raises(BadDataError, match="in a row"):
            _batches(dm.train_dataset(), 1)
    with pytest.raises(BadDataError, match="sha256 mismatch"):
        _batches(_dm(out, policy="raise", song_buffer=100).train_dataset(), 1)


def test_shard_missing_from_manifest_and_incomplete_manifest(shards, tmp_path):
    out, name = _broken(shards, tmp_path)
    shutil.copy(out / name, out / "extra-000000.tar")
    with pytest.raises(BadDataError, match="extra-000000.tar: shard is missing from the manifest"):
        _dm(out, valid_shards=str(out / "*.tar")).eval_dataset("valid")
    manifest = json.loads((out / "test.json").read_text())
    manifest["complete"] = False
    (out / "test.json").write_text(json.dumps(manifest))
    with pytest.raises(BadDataError, match="incomplete"):
        _dm(out).eval_dataset("valid")


def test_pipe_and_brace_urls(shards):
    dm = _dm(shards, valid_shards=[f"pipe:cat {shards}/test-{{000000..000001}}.tar"])
    names = [b[2][0] for b in dm.eval_dataset("valid")]
    assert sorted(names) == ["song0004", "song0005"]


def test_segments_of_a_song_share_decoded_spans():
    from stemsep.data.loaders.streams import _spans

    assert _spans([0, 50, 300], 100) == [(0, 150), (300, 400)]
    assert _spans([10, 10, 110], 100) == [(10, 210)]


def test_training_segments_equal_a_direct_decode(shards):
    """Segments cut from shared decoded spans equal the same samples decoded one by one."""
    from stemsep.data.shards.manifest import check_sample, decode_sources
    from stemsep.data.shards.tarstream import iter_shard

    dm = _dm(shards, segments_per_song=6, shuffle=1, song_buffer=1, segment=1.0)
    stream = dm.train_dataset()
    songs = {}
    for url, name in stream.shards:
        for key, sample in iter_shard(url, name, None):
            songs[check_sample(stream.manifest, name, key, sample, stream._stems)[0]] = sample
    import numpy as np

    segments = stream._segments(stream._songs(stream.shards, np.random.default_rng(0)), np.random.default_rng(1))
    checked = 0
    for rows in segments:
        wav = torch.stack(rows)
        key = wav.sum((0, 1))
        at = min(int(key.abs().argmax()), key.shape[-1] - 8)  # match where the audio is loudest
        for sample in songs.values():
            full = decode_sources(sample, stream.mapping, "t")
            hits = (full.sum((0, 1)).unfold(0, 8, 1) == key[at: at + 8]).all(1).nonzero().flatten() - at
            hits = [h for h in hits.tolist() if 0 <= h <= full.shape[-1] - wav.shape[-1]]
            if hits:
                assert any(torch.equal(full[..., h: h + wav.shape[-1]], wav) for h in hits)
                checked += 1
                break
        if checked == 6:
            break
    assert checked == 6


def test_prepare_generates_and_shards_once(tmp_path):
    from stemsep.data.corpus.synth import SyntheticCorpus
    from stemsep.data.shards.prepare import PrepareShards

    dm = StemDataModule(prepare=PrepareShards(root=str(tmp_path / "corpus"), valid="test"),
                        synthetic=SyntheticCorpus(songs=3, seconds=2.0, test_songs=1), segment=0.5,
                        batch_size=2, num_workers=0, shuffle=2, song_buffer=1, epoch_batches=2)
    dm.prepare_data()
    train, test = tmp_path / "corpus" / "shards" / "train.json", tmp_path / "corpus" / "shards" / "test.json"
    assert json.loads(train.read_text())["complete"] and len(json.loads(test.read_text())["songs"]) == 1
    stamp = train.stat().st_mtime_ns
    dm.prepare_data()  # already prepared: nothing rewritten
    assert train.stat().st_mtime_ns == stamp
    mix, stems = next(iter(dm.train_dataloader()))
    assert stems.shape == (2, 4, 2, 22050) and torch.equal(mix, stems.sum(1))
    assert len(list(dm.val_dataloader())) == 1


def test_prepare_without_synthetic_names_the_missing_root(tmp_path):
    from stemsep.data.shards.prepare import PrepareShards

    dm = StemDataModule(prepare=PrepareShards(root=str(tmp_path / "nowhere")))
    with pytest.raises(BadDataError, match="nowhere"):
        dm.prepare_data()


def test_allocator_tuning_changes_no_data(shards):
    """tune_malloc only changes where buffers live: the same seed gives the same batches."""
    import platform

    from stemsep.data.loaders.allocator import keep_large_buffers

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert keep_large_buffers() and keep_large_buffers()  # accepted by glibc, idempotent
    augs = [Repitch(proba=0.5), Shift(2000), FlipChannels(), FlipSign(), Scale(), Remix(group_size=2)]
    on = _batches(_dm(shards, augmentations=augs, tune_malloc=True).train_dataset(), 2)
    off = _batches(_dm(shards, augmentations=augs, tune_malloc=False).train_dataset(), 2)
    for (mix_a, stems_a), (mix_b, stems_b) in zip(on, off, strict=True):
        assert torch.equal(mix_a, mix_b) and torch.equal(stems_a, stems_b)


def test_local_shard_is_hashed_until_verified_then_rehashed_when_changed(shards, tmp_path):
    from stemsep.data import tarstream

    out, name = _broken(shards, tmp_path)
    sha = json.loads((out / "test.json").read_text())["shards"][0]["sha256"]
    first = list(tarstream.iter_shard(str(out / name), name, sha))
    identity = tarstream._local_identity(str(out / name), sha)
    assert identity in tarstream._verified
    assert [k for k, _ in tarstream.iter_shard(str(out / name), name, sha)] == [k for k, _ in first]
    data = bytearray((out / name).read_bytes())
    data[-2000] ^= 0xFF  # same size, new content and modification time: hashed again
    (out / name).write_bytes(bytes(data))
    with pytest.raises(BadDataError, match="sha256 mismatch"):
        list(tarstream.iter_shard(str(out / name), name, sha))
