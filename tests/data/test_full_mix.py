"""Targets from the full mix (issue 26): the mixture is every stored stem of the song, the targets the
network's sources; derived targets (instrumental, no_<stem>); stem groups over MoisesDB's stem types.

Checked in training batches and in exactly-once evaluation, on local shards and over HTTP, against
the same shards read with all four stems as sources (the reference: mixture = their sum).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from helpers.data import moisesdb_corpus, shard_corpus
from helpers.remote import ShardServer
from stemsep.data.loaders.datamodule import StemDataModule
from stemsep.data.shards.manifest import REST, Manifest, resolve_sources
from stemsep.errors import BadDataError
from stemsep.io.audio import read_audio

ALL = ["drums", "bass", "other", "vocals"]


def _dm(base: str, **kw) -> StemDataModule:
    options = dict(train_manifest=f"{base}/train.json", valid_manifest=f"{base}/test.json", segment=0.5,
                   batch_size=2, num_workers=0, shuffle=2, song_buffer=2, epoch_batches=2, seed=3)
    return StemDataModule(**{**options, **kw})


def _first_batches(dm: StemDataModule, count: int = 2):
    return [b for b, _ in zip(DataLoader(dm.train_dataset(), batch_size=None), range(count))]


def _songs(dm: StemDataModule) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name[0]: (mix, stems) for mix, stems, name in dm.eval_dataset("valid")}


@pytest.mark.parametrize("where", ["local", "http"])
def test_one_stem_targets_from_the_full_mix(shards, where):
    with ShardServer(shards) as server:
        base = server.url if where == "http" else str(shards)
        vocal = _dm(base, sources=["vocals"])
        assert vocal.sources == ["vocals"]
        reference = _dm(str(shards))  # the same shards, all four stems as sources
        for (mix, stems), (mix_all, stems_all) in zip(_first_batches(vocal), _first_batches(reference), strict=True):
            assert stems.shape == (2, 1, 2, 22050)
            assert torch.allclose(mix, stems_all.sum(1), atol=1e-6) and torch.allclose(mix, mix_all, atol=1e-6)
            assert torch.equal(stems[:, 0], stems_all[:, 3])
            assert (mix - stems[:, 0]).abs().max() > 0.01
        songs, songs_all = _songs(vocal), _songs(reference)
        assert sorted(songs) == sorted(songs_all) == ["song0004", "song0005"]  # every song exactly once
        for name, (mix, stems) in songs.items():
            assert stems.shape[1] == 1 and torch.allclose(mix, songs_all[name][1].sum(1), atol=1e-6)
            assert torch.equal(stems[0, 0], songs_all[name][1][0, 3])


def test_instrumental_and_no_stem_are_derived(shards):
    two = _dm(str(shards), sources=["vocals", "instrumental"])
    reference = _songs(_dm(str(shards)))
    for name, (mix, stems) in _songs(two).items():
        _, all_stems = reference[name]
        assert torch.allclose(stems[0, 1], all_stems[0, :3].sum(0), atol=1e-6)  # mix - vocals
        assert torch.allclose(mix, all_stems.sum(1), atol=1e-6)
    drums, = _first_batches(_dm(str(shards), sources=["no_drums", "drums"]), 1)
    (mix_all, stems_all), = _first_batches(_dm(str(shards)), 1)
    assert torch.allclose(drums[1][:, 0], stems_all[:, 1:].sum(1), atol=1e-6)
    assert torch.allclose(drums[0], mix_all, atol=1e-6)


def test_full_mix_off_keeps_the_old_contract(shards):
    (mix, stems), = _first_batches(_dm(str(shards), sources=["vocals"], full_mix=False), 1)
    assert torch.equal(mix, stems.sum(1))


def _manifest(sources: list[str]) -> Manifest:
    return Manifest("m.json", 44100, 2, sources, {}, [])


def test_resolving_sources():
    stored = ["bass", "drums", "guitar", "piano", "vocals", "wind"]
    groups = {"piano": ["piano"], "guitar": ["guitar"], "vocals": ["vocals"], "other": ["rest"]}
    mapping = resolve_sources(_manifest(stored), ["vocals", "piano", "guitar", "other"], stem_groups=groups)
    assert mapping == {"vocals": ["vocals"], "piano": ["piano"], "guitar": ["guitar"],
                       "other": ["bass", "drums", "wind"]}  # every stem used: no hidden rest
    mapping = resolve_sources(_manifest(stored), ["vocals", "piano"], stem_groups=groups)
    assert mapping == {"vocals": ["vocals"], "piano": ["piano"], REST: ["bass", "drums", "guitar", "wind"]}
    assert REST not in resolve_sources(_manifest(stored), ["vocals", "piano"], stem_groups=groups, full_mix=False)
    assert resolve_sources(_manifest(stored), ["no_vocals"])["no_vocals"] == ["bass", "drums", "guitar", "piano",
                                                                              "wind"]
    assert resolve_sources(_manifest(stored), ["instrumental", "vocals"]) == {
        "instrumental": ["bass", "drums", "guitar", "piano", "wind"], "vocals": ["vocals"]}
    # "rest" is every stored stem no other *chosen* source names (a stem or a group)
    del groups["vocals"]
    assert resolve_sources(_manifest(stored), ["vocals", "drums", "bass", "piano", "guitar", "other"],
                           stem_groups=groups)["other"] == ["wind"]
    assert resolve_sources(_manifest(stored), ["vocals", "other"], stem_groups=groups) == {
        "vocals": ["vocals"], "other": ["bass", "drums", "guitar", "piano", "wind"]}
    for sources, kw, needle in [(["vocals", "piano", "guitar", "bass", "drums", "wind", "other"],
                                 {"stem_groups": groups}, "source 'other' has no stored stems"),
                                (["cello"], {}, "'cello' is not a stem of the shards"),
                                (["drums", "no_vocals"], {}, "stem 'drums' is in both"),
                                ({"x": ["cello"]}, {}, "source 'x' needs stem 'cello'")]:
        with pytest.raises(BadDataError, match=needle):
            resolve_sources(_manifest(stored), sources, **kw)


def test_stem_groups_on_every_moisesdb_stem_type(corpus_root, tmp_path):
    root = tmp_path / "moises"
    moisesdb_corpus(corpus_root, root)
    out = shard_corpus(root, tmp_path / "shards", layout="moisesdb", splits=["train", "valid"], sources=["all"],
                       valid_songs=["uuid-1"])
    manifest = json.loads((out / "train.json").read_text())
    assert manifest["sources"] == ["bass", "drums", "guitar", "piano", "vocals", "wind"]
    groups = {"piano": ["piano"], "guitar": ["guitar"], "vocals": ["vocals"], "drums": ["drums"], "bass": ["bass"],
              "other": ["rest"]}
    six = StemDataModule(train_manifest=str(out / "train.json"), valid_manifest=str(out / "valid.json"),
                         stem_groups=groups, sources=["drums", "bass", "other", "vocals", "piano", "guitar"],
                         segment=0.5, batch_size=1, num_workers=0)
    (mix, stems, name), = list(six.eval_dataset("valid"))
    src = {n: read_audio(corpus_root / "train" / "song0001" / f"{n}.wav")[0] for n in ALL}
    assert name == ["uuid-1"] and stems.shape[1] == 6
    tol = 1e-4  # 16-bit FLAC in the shards
    assert (stems[0, 2] - 0.25 * src["other"]).abs().max() < tol  # other = rest = wind
    assert (stems[0, 4] - 0.5 * src["other"]).abs().max() < tol  # piano
    assert stems[0, 5].abs().max() == 0  # no guitar in this song: silence
    assert (mix[0] - (src["drums"] + src["bass"] + src["vocals"] + 0.75 * src["other"])).abs().max() < 4 * tol
    four = StemDataModule(train_manifest=str(out / "train.json"), valid_manifest=str(out / "valid.json"),
                          sources={"drums": ["drums"], "bass": ["bass"], "other": ["rest"], "vocals": ["vocals"]},
                          segment=0.5, batch_size=1, num_workers=0)
    (_, stems4, _), = list(four.eval_dataset("valid"))
    assert (stems4[0, 2] - 0.75 * src["other"]).abs().max() < 3 * tol  # piano + wind (+ no guitar)


# ---------------------------------------------------------------------------- fits
def _fit(shards: Path, out: Path, *extra: str) -> None:
    from helpers import REPO
    from helpers.recipes import tiny_overrides
    from stemsep.cli import main

    assert main(["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), *tiny_overrides(shards, out),
                 "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.max_epochs", "1",
                 "--data.init_args.epoch_batches", "2", *extra]) == 0
    assert list(out.rglob("*.ckpt"))


def test_a_one_stem_fit_runs(shards, tmp_path, capsys):
    _fit(shards, tmp_path / "run", "--model.net.init_args.sources", '["vocals"]')
    assert "valid nSDR (dB)" in capsys.readouterr().out


def test_a_six_stem_fit_runs_on_moisesdb_groups(corpus_root, tmp_path, capsys):
    root = tmp_path / "moises"
    moisesdb_corpus(corpus_root, root)
    out = shard_corpus(root, tmp_path / "shards", layout="moisesdb", splits=["train", "valid"], sources=["all"],
                       valid_songs=["uuid-1"])
    (out / "test.json").symlink_to(out / "valid.json")  # tiny_overrides validates on test.json
    groups = {"piano": ["piano"], "guitar": ["guitar"], "vocals": ["vocals"], "drums": ["drums"], "bass": ["bass"],
              "other": ["rest"]}
    _fit(out, tmp_path / "run", "--model.net.init_args.sources", '["drums", "bass", "other", "vocals", "piano", "guitar"]',
         "--data.init_args.stem_groups", json.dumps(groups))
    printed = capsys.readouterr().out
    assert "valid nSDR (dB)" in printed and "piano" in printed and "guitar" in printed
