"""After `stemsep fit` saved a checkpoint, its last lines name it and the `stemsep separate` command to
try it; the command runs as printed. (The quickstart recipe, run with a tiny network.)"""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

from helpers import REPO
from helpers.recipes import tiny_overrides
from stemsep.cli import main
from stemsep.data.shards.prepare import PrepareShards
from stemsep.training.cli import example_input, next_command


def test_quickstart_ends_with_the_separate_command(shards, corpus_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the printed paths are relative to the working directory
    ckpts = tmp_path / "run" / "checkpoints"
    argv = ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), *tiny_overrides(shards, tmp_path / "run"),
            "--trainer.max_epochs", "1", "--data.init_args.epoch_batches", "2", "--model.scheduler", "null",
            "--trainer.callbacks.dirpath", str(ckpts)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert (ckpts / "last.ckpt").is_file()
    assert lines[-3] == "checkpoint: run/checkpoints/last.ckpt"
    command = lines[-1].strip()
    assert command == "stemsep separate song.wav --model run/checkpoints/last.ckpt -o separated"
    assert "valid nSDR (dB) epoch 0" in "\n".join(lines[:-3])
    # the printed command separates (with a real file in place of the placeholder)
    song = corpus_root / "test" / "song0004" / "mixture.wav"
    args = shlex.split(command.replace("song.wav", shlex.quote(str(song))))
    assert args[0] == "stemsep" and main(args[1:]) == 0
    assert sorted(p.name for p in (tmp_path / "separated").rglob("*.wav")) == [
        "bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    # a rerun replaces last.ckpt (no last-v1.ckpt), so the documented path stays right
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-3] == "checkpoint: run/checkpoints/last.ckpt"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]


def test_no_checkpoint_no_command(shards, tmp_path, capsys):
    argv = ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), *tiny_overrides(shards, tmp_path / "run"),
            "--trainer.max_epochs", "1", "--data.init_args.epoch_batches", "1", "--model.scheduler", "null",
            "--trainer.callbacks", "null", "--trainer.enable_checkpointing", "false"]
    assert main(argv) == 0
    assert "stemsep separate" not in capsys.readouterr().out


def test_example_input_is_a_test_song_of_the_prepared_corpus(corpus_root, tmp_path, monkeypatch):
    data = SimpleNamespace(prepare=PrepareShards(root=str(corpus_root)))
    monkeypatch.chdir(corpus_root)
    assert example_input(data) == "test/song0004/mixture.wav"
    monkeypatch.setenv("HOME", str(corpus_root.parent))
    monkeypatch.chdir(tmp_path)  # elsewhere: under the home folder, as ~/...
    assert example_input(data) == f"~/{corpus_root.name}/test/song0004/mixture.wav"
    assert example_input(SimpleNamespace()) == example_input(None) == "song.wav"


def test_next_command_quotes_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert next_command(Path("my run/last.ckpt"), "a.wav") == "stemsep separate a.wav --model 'my run/last.ckpt' -o separated"
