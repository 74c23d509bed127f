"""Targets from the full mix for songs read straight from folders (FolderDataModule, issue 26 follow-up).

The mixture of a one-stem model is every stored stem of the song (musdb: drums, bass, other, vocals;
moisesdb: every stem type), the targets the network's sources; derived targets and stem groups as
for shards. Checked against the stem files read here, in training batches (a segment = the whole
song, no augmentation, so the span is known) and in validation tracks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.data import moisesdb_corpus
from stemsep.data.loaders.folder import FolderDataModule
from stemsep.data.shards.manifest import REST
from stemsep.errors import BadDataError
from stemsep.io.audio import read_audio, write_audio

ALL = ["drums", "bass", "other", "vocals"]
SONG_SECONDS = 3.0  # corpus_root's songs: a segment this long is the whole song, from sample 0


def _files(folder: Path) -> dict[str, torch.Tensor]:
    return {name: read_audio(folder / f"{name}.wav")[0] for name in [*ALL, "mixture"]}


def _batch(dm: FolderDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def _musdb(corpus_root: Path, **kw) -> FolderDataModule:
    options = dict(segment=SONG_SECONDS, batch_size=1, epoch_size=1, valid_split="test")
    return FolderDataModule(str(corpus_root), **{**options, **kw})


def _song_of(corpus_root: Path, vocals: torch.Tensor) -> dict[str, torch.Tensor]:
    """The train song whose vocals file is ``vocals`` (exactly one)."""
    songs = [_files(d) for d in sorted((corpus_root / "train").iterdir())]
    found = [s for s in songs if s["vocals"].shape == vocals.shape and torch.equal(s["vocals"], vocals)]
    assert len(found) == 1
    return found[0]


def test_one_stem_training_mix_is_the_whole_song(corpus_root):
    torch.manual_seed(0)
    mix, stems = _batch(_musdb(corpus_root, sources=["vocals"]))
    assert mix.shape == (1, 2, int(SONG_SECONDS * 44100)) and stems.shape == (1, 1, 2, mix.shape[-1])
    song = _song_of(corpus_root, stems[0, 0])
    assert torch.allclose(mix[0], sum(song[n] for n in ALL), atol=1e-6)
    assert (mix[0] - stems[0, 0]).abs().max() > 0.01  # not the identity any more

    torch.manual_seed(0)
    old_mix, old_stems = _batch(_musdb(corpus_root, sources=["vocals"], full_mix=False))
    assert torch.equal(old_mix, old_stems[:, 0])  # full_mix: false keeps the old mix: the vocals


def test_full_mix_off_reads_only_the_sources(corpus_root):
    dm = _musdb(corpus_root, sources=["vocals"], full_mix=False)
    assert dm.mapping == {"vocals": ["vocals"]}
    assert all(list(song.stems) == ["vocals"] for song in dm._songs("train"))
    full = _musdb(corpus_root, sources=["vocals"])
    assert full.mapping == {"vocals": ["vocals"], REST: ["drums", "bass", "other"]}


def test_instrumental_target_and_validation_tracks(corpus_root):
    torch.manual_seed(1)
    mix, stems = _batch(_musdb(corpus_root, sources=["vocals", "instrumental"]))
    song = _song_of(corpus_root, stems[0, 0])
    assert torch.allclose(stems[0, 1], song["drums"] + song["bass"] + song["other"], atol=1e-6)
    assert torch.allclose(mix[0], sum(song[n] for n in ALL), atol=1e-6)

    dm = _musdb(corpus_root, sources=["vocals"])
    dm.setup("validate")
    for mix, stems, name in dm.val_dataloader():
        files = _files(corpus_root / "test" / name[0])
        assert stems.shape[1] == 1 and torch.equal(stems[0, 0], files["vocals"])
        assert torch.equal(mix[0], files["mixture"])  # musdb: the mixture file, as before
    old = _musdb(corpus_root, sources=["vocals"], full_mix=False)
    old.setup("validate")
    mix, stems, name = old.valid_set[0]
    assert torch.equal(mix, _files(corpus_root / "test" / name)["mixture"])  # validation as before full_mix


def test_moisesdb_stem_types_groups_and_missing_guitar(corpus_root, tmp_path):
    root = moisesdb_corpus(corpus_root, tmp_path / "moises")
    src = {i: _files(corpus_root / "train" / f"song{i:04d}") for i in range(2)}
    groups = {"other": ["rest"]}
    six = FolderDataModule(str(root), layout="moisesdb", sources=["drums", "bass", "other", "vocals", "piano", "guitar"],
                           stem_groups=groups, valid_songs=["uuid-1"], segment=SONG_SECONDS, batch_size=1, epoch_size=1)
    assert six.mapping["other"] == ["wind"] and REST not in six.mapping
    six.setup("fit")
    mix, stems, name = six.valid_set[0]
    assert name == "uuid-1" and stems.shape[0] == 6
    tol = 1e-5  # 32-bit float files: sums differ by rounding only
    assert (stems[2] - 0.25 * src[1]["other"]).abs().max() < tol  # other = rest = wind
    assert (stems[4] - 0.5 * src[1]["other"]).abs().max() < tol  # piano
    assert stems[5].abs().max() == 0  # no guitar in this song: silence
    whole = src[1]["drums"] + src[1]["bass"] + src[1]["vocals"] + 0.75 * src[1]["other"]
    assert (mix - whole).abs().max() < 4 * tol
    train_mix, train_stems = next(iter(six.train_dataloader()))  # the one train song, uuid-0, with guitar
    assert (train_stems[0, 5] - 0.25 * src[0]["other"]).abs().max() < tol
    assert (train_mix[0] - sum(src[0][n] for n in ALL)).abs().max() < 4 * tol

    piano = FolderDataModule(str(root), layout="moisesdb", sources=["piano"], valid_songs=["uuid-1"])
    piano.setup("validate")
    mix, stems, _ = piano.valid_set[0]
    assert (stems[0] - 0.5 * src[1]["other"]).abs().max() < tol and (mix - whole).abs().max() < 4 * tol
    four = FolderDataModule(str(root), layout="moisesdb", valid_songs=["uuid-1"])  # `other`: every type left
    assert four.mapping["other"] == ["guitar", "piano", "wind"] and REST not in four.mapping


@pytest.mark.parametrize("sources, needle", [(["cello"], "'cello' is not a stem of the songs"),
                                             (["drums", "no_vocals"], "stem 'drums' is in both")])
def test_bad_sources_are_one_line_errors_naming_the_root(corpus_root, sources, needle):
    with pytest.raises(BadDataError, match=needle) as info:
        _musdb(corpus_root, sources=sources).setup("fit")
    assert str(info.value).startswith(str(corpus_root)) and "\n" not in str(info.value)


def test_folder_layout_stores_the_stem_files_of_the_songs(corpus_root, tmp_path):
    root = tmp_path / "plain"
    for index in range(2):
        song = corpus_root / "train" / f"song{index:04d}"
        (root / f"s{index}").mkdir(parents=True)
        for name in [*ALL, "mixture"]:
            (root / f"s{index}" / f"{name}.wav").symlink_to(song / f"{name}.wav")
    dm = FolderDataModule(str(root), layout="folder", sources=["vocals"], valid_split="train",
                          segment=SONG_SECONDS, batch_size=1, epoch_size=1)
    assert dm.mapping == {"vocals": ["vocals"], REST: ["bass", "drums", "other"]}
    dm.setup("fit")
    mix, stems, _ = dm.valid_set[0]
    assert torch.equal(mix, _files(corpus_root / "train" / "song0000")["mixture"])
    torch.manual_seed(0)
    train_mix, train_stems = next(iter(dm.train_dataloader()))
    song = _song_of(corpus_root, train_stems[0, 0])
    assert torch.allclose(train_mix[0], sum(song[n] for n in ALL), atol=1e-6)  # training: every stem summed
    # A stray file in some songs (a click track; other.wav missing from s1) is not a stored stem:
    # neither in the mix nor an error; a missing *source* still is.
    (root / "s0" / "click.wav").symlink_to(corpus_root / "train" / "song0000" / "drums.wav")
    (root / "s1" / "other.wav").unlink()
    stray = FolderDataModule(str(root), layout="folder", sources=["vocals"], valid_split="train")
    assert stray.mapping == {"vocals": ["vocals"], REST: ["bass", "drums"]}
    stray.setup("validate")
    with pytest.raises(BadDataError, match="s1: song is missing stem 'other'"):
        FolderDataModule(str(root), layout="folder", sources=["other"], valid_split="train").setup("validate")


def test_folder_layout_with_split_folders_stores_the_songs_stems(corpus_root, tmp_path):
    """root/train/<song>, root/test/<song> (no valid folder): the split folders are not songs."""
    root = tmp_path / "splits"
    for split, index in (("train", 0), ("test", 1)):
        song = corpus_root / "train" / f"song{index:04d}"
        (root / split / f"s{index}").mkdir(parents=True)
        for name in ALL:
            (root / split / f"s{index}" / f"{name}.wav").symlink_to(song / f"{name}.wav")
    dm = FolderDataModule(str(root), layout="folder", sources=["vocals"], valid_split="test")
    assert dm.mapping == {"vocals": ["vocals"], REST: ["bass", "drums", "other"]}
    dm.setup("validate")
    mix, _, _ = dm.valid_set[0]
    assert torch.allclose(mix, sum(_files(corpus_root / "train" / "song0001")[n] for n in ALL), atol=1e-6)


def test_moisesdb_unused_stem_types_stay_out_of_other_without_full_mix(corpus_root, tmp_path):
    """MoisesDB's own `other` stem type as a source, full_mix off: the unused types (guitar, piano,
    wind) are not read into it (the layout's catch-all `other` would sum them there)."""
    root = moisesdb_corpus(corpus_root, tmp_path / "moises")
    own_other = read_audio(corpus_root / "train" / "song0000" / "bass.wav")[0] * 0.1
    write_audio(root / "uuid-0" / "other" / "o.wav", own_other, 44100, bits=32)
    dm = FolderDataModule(str(root), layout="moisesdb", sources={"vocals": ["vocals"], "misc": ["other"]},
                          full_mix=False, valid_songs=["uuid-1"], segment=SONG_SECONDS, batch_size=1, epoch_size=1)
    songs = dm._songs("train")
    assert [p.parent.name for p in songs[0].stems["other"]] == ["other"]
    dm.setup("fit")
    mix, stems = next(iter(dm.train_dataloader()))
    assert (stems[0, 1] - own_other).abs().max() < 1e-6
    vocals = read_audio(corpus_root / "train" / "song0000" / "vocals.wav")[0]
    assert (mix[0] - vocals - own_other).abs().max() < 1e-5


def test_a_one_stem_fit_on_folder_data_runs(corpus_root, tmp_path, capsys):
    from stemsep.cli import main

    data = "--data.init_args."
    assert main(["fit", "--model.net", "helpers.nets.TinyNet", "--model.net.init_args.sources", '["vocals"]',
                 "--data", "stemsep.data.loaders.FolderDataModule", f"{data}root", str(corpus_root),
                 f"{data}valid_split", "test", f"{data}segment", "0.5", f"{data}batch_size", "2",
                 f"{data}epoch_size", "4", "--trainer.max_steps", "2", "--trainer.max_epochs", "1",
                 "--trainer.limit_val_batches", "1", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                 "--trainer.logger", "false"]) == 0
    assert list(tmp_path.rglob("*.ckpt"))
    assert "valid nSDR (dB)" in capsys.readouterr().out


def test_stem_mp4_songs_read_their_streams(tmp_path):
    from helpers.stem_mp4 import write_stem_mp4
    from stemsep.io.audio import read_stream

    t = torch.arange(22050) / 44100
    stems = [0.2 * torch.sin(2 * torch.pi * f * t).repeat(2, 1) for f in (110, 220, 440, 880)]
    for split, name in [("train", "a"), ("test", "b")]:
        write_stem_mp4(tmp_path / split / f"{name}.stem.mp4", [sum(stems).numpy()] + [s.numpy() for s in stems])
    dm = FolderDataModule(str(tmp_path), sources=["vocals"], valid_split="test", batch_size=1, epoch_size=1,
                          segment=0.1)
    dm.setup("fit")
    song = dm.train_set.songs[0]
    dm.segment = song.frames / 44100  # the whole song: the segment starts at 0
    dm.setup("fit")
    mix, target = next(iter(dm.train_dataloader()))
    path = tmp_path / "train" / "a.stem.mp4"
    decoded = [read_stream(path, i)[0][:, :song.frames] for i in range(5)]
    assert torch.allclose(mix[0], sum(decoded[1:]), atol=1e-5) and torch.equal(target[0, 0], decoded[4])
    valid_mix, valid_stems, _ = dm.valid_set[0]
    test_decoded = read_stream(tmp_path / "test" / "b.stem.mp4", 0)[0]
    assert torch.equal(valid_mix, test_decoded[:, :valid_mix.shape[-1]])  # stream 0, the mixture
