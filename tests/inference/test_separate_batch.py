"""``stemsep separate`` on batches: where same-named inputs go (``{trackext}``, ``{folder}``), which
files a folder search takes, ``--skip-errors``, per-file progress, and stale staging folders."""

from __future__ import annotations

import os

import pytest
import torch

from helpers.audio import tone, write_av, write_sf
from helpers.data import leftovers
from helpers.slow_net import SlowNet
from stemsep.cli import main
from stemsep.errors import BadAudioError
from stemsep.inference.inputs import find_inputs
from stemsep.inference.separate import separate_files
from stemsep.io.audio import read_audio
from stemsep.io.checkpoint import save_checkpoint
from stemsep.io.provenance import read_provenance
from stemsep.io.staging import _try_lock, remove_stale_scratch

SR = 8000
SOURCES = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A fast network with a training segment (0.25 s), so files longer than a window stream."""
    torch.manual_seed(0)
    net = SlowNet(samplerate=SR, delay=0.0, segment=0.25)
    root = tmp_path_factory.mktemp("batch")
    return save_checkpoint(root / "seg.ckpt", net, {"class_path": "helpers.slow_net.SlowNet",
                                                   "init_args": net.init_args})


def _separate(model, out, *inputs, options=()) -> int:
    return main(["separate", *map(str, inputs), "--model", str(model), "-o", str(out), "--shifts", "0", *options])


def _files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _stems(prefix: str) -> list[str]:
    return sorted(f"{prefix}/{s}.wav" for s in SOURCES)


def _one_line_error(capsys, code) -> str:
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("stemsep: error: ") and err.count("\n") == 1, err
    return err


def test_trackext_template_writes_same_named_inputs_apart(model, tmp_path, capsys):
    m4a = write_av(tmp_path / "a" / "mix.m4a", [tone(0.5, SR)], SR)
    flac = write_sf(tmp_path / "a" / "mix.flac", tone(0.5, SR, seed=1), SR, "FLAC", "PCM_16")
    out = tmp_path / "o"
    # the default template writes both to o/mix/: refused before anything is written, with the fix
    err = _one_line_error(capsys, _separate(model, out, m4a, flac))
    assert f"inputs {m4a} and {flac} would both be written to {out / 'mix'}" in err
    assert "{trackext}" in err and "{folder}" in err and not out.exists()
    # ... also when the files differ but share the track's folder (its commit would drop the other's)
    err = _one_line_error(capsys, _separate(model, out, m4a, flac, options=["--filename",
                                                                        "{track}/{stem}_{trackext}.{ext}"]))
    assert f"would both be written to {out / 'mix'};" in err and not out.exists()
    # the template troubleshooting.md recommends: the clash check looks at the paths it gives
    assert _separate(model, out, m4a, flac, options=["--filename", "{track}_{trackext}/{stem}.{ext}"]) == 0
    assert "separated 2 file(s)" in capsys.readouterr().out
    assert _files(out) == sorted(_stems("mix_flac") + _stems("mix_m4a"))
    assert read_provenance(out / "mix_m4a" / "vocals.wav")["input"] == str(m4a.resolve())
    assert read_provenance(out / "mix_flac" / "vocals.wav")["input"] == str(flac.resolve())
    assert _separate(model, out, m4a, flac, options=["--filename", "{track}_{trackext}/{stem}.{ext}"]) == 0
    assert "skipped 2 already done" in capsys.readouterr().out


def test_folder_field(model, tmp_path, capsys):
    music = tmp_path / "music"
    a = write_sf(music / "albumA" / "01.wav", tone(0.5, SR), SR, "WAV", "PCM_16")
    b = write_sf(music / "albumB" / "01.flac", tone(0.5, SR, seed=1), SR, "FLAC", "PCM_16")
    write_sf(music / "02.wav", tone(0.5, SR, seed=2), SR, "WAV", "PCM_16")
    write_sf(music / "test" / "Song" / "mixture.wav", tone(0.5, SR, seed=3), SR, "WAV", "PCM_16")
    assert [(i.path.relative_to(music).as_posix(), i.folder) for i in find_inputs([music])] == [
        ("02.wav", ""), ("albumA/01.wav", "albumA"), ("albumB/01.flac", "albumB"),
        ("test/Song/mixture.wav", "test")]  # MUSDB's <track>/mixture.wav: the folder holding <track>
    # albumA/01 and albumB/01 are both track "01": the error says how to tell them apart
    err = _one_line_error(capsys, _separate(model, tmp_path / "plain", music))
    assert f"would both be written to {tmp_path / 'plain' / '01'}" in err and "{folder}" in err
    out, template = tmp_path / "o", ["--filename", "{folder}/{track}/{stem}.{ext}"]
    assert _separate(model, out, music, options=template) == 0
    assert "separated 4 file(s)" in capsys.readouterr().out
    assert _files(out) == sorted(_stems("albumA/01") + _stems("albumB/01") + _stems("02") + _stems("test/Song"))
    assert not leftovers(out)
    assert read_provenance(out / "albumB" / "01" / "bass.wav")["input"] == str(b.resolve())
    assert _separate(model, out, music, options=template) == 0
    assert "separated 0 file(s)" in capsys.readouterr().out  # nested track folders are found again
    # files named directly: {folder} is the name of the folder they are in
    direct = tmp_path / "direct"
    assert _separate(model, direct, a, b, options=template) == 0
    assert _files(direct) == sorted(_stems("albumA/01") + _stems("albumB/01"))


def test_output_folder_hidden_files_and_own_stems_are_not_inputs(model, tmp_path, capsys):
    music = tmp_path / "music"
    write_sf(music / "song.wav", tone(0.5, SR), SR, "WAV", "PCM_16")
    write_sf(music / ".hidden" / "secret.wav", tone(0.5, SR), SR, "WAV", "PCM_16")
    write_sf(music / ".dot.wav", tone(0.5, SR), SR, "WAV", "PCM_16")
    out = music / "stems"
    for _ in range(2):  # the second run must not separate the first run's stems
        assert _separate(model, out, music) == 0
        assert _files(out) == _stems("song")
    assert "separated 0 file(s) into" in capsys.readouterr().out.splitlines()[-1]
    # stems written elsewhere under the searched folder are recognised by their provenance
    assert _separate(model, music / "old", music / "song.wav") == 0
    assert _separate(model, tmp_path / "other", music) == 0
    assert _files(tmp_path / "other") == _stems("song")
    # a hidden folder named on the command line is searched; a hidden file named is used
    assert _separate(model, tmp_path / "h", music / ".hidden", music / ".dot.wav") == 0
    assert _files(tmp_path / "h") == sorted(_stems("secret") + _stems(".dot"))
    err = _one_line_error(capsys, _separate(model, out, out))
    assert "inside the output folder" in err


def _bad_batch(folder):
    good = [write_sf(folder / f"{name}.wav", tone(0.5, SR, seed=i), SR, "WAV", "PCM_16")
            for i, name in enumerate(["a", "d"])]
    full = write_sf(folder / "full.mp3", tone(2.0, SR), SR, "MP3", "MPEG_LAYER_III").read_bytes()
    (folder / "full.mp3").unlink()
    truncated = folder / "b.mp3"
    truncated.write_bytes(full[:len(full) // 2])
    text = folder / "c.wav"
    text.write_text("not audio\n" * 50)
    return good, truncated, text


def test_skip_errors(model, tmp_path, capsys):
    (good_a, good_d), truncated, text = _bad_batch(tmp_path / "in")
    # without the flag: stops at the first bad file, one line that names it and hints at the flag
    err = _one_line_error(capsys, _separate(model, tmp_path / "stop", tmp_path / "in"))
    assert err.startswith(f"stemsep: error: {truncated}: ") and "--skip-errors" in err
    assert not (tmp_path / "stop" / "d").exists()
    # with it: each failure is one line, the others are separated, a summary, exit status 1
    out = tmp_path / "out"
    assert _separate(model, out, tmp_path / "in", options=["--skip-errors"]) == 1
    captured = capsys.readouterr()
    assert "separated 2 file(s)" in captured.out
    lines = captured.err.splitlines()
    assert sum(line.startswith(f"stemsep: skipped {truncated}: decoding stopped") for line in lines) == 1
    assert sum(line.startswith(f"stemsep: skipped {text}: not a readable audio file") for line in lines) == 1
    summary = lines.index("stemsep: 2 file(s) failed:")
    assert [line.split(":")[0].strip() for line in lines[summary + 1:]] == [str(truncated), str(text)]
    assert _files(out) == sorted(_stems("a") + _stems("d")) and not leftovers(out)
    # the library: several short files share network calls; a bad one does not sink its group
    result = separate_files(tmp_path / "in", tmp_path / "lib", models=model, shifts=0, batch_size=8,
                            device="cpu", skip_errors=True)
    assert (result.done, result.skipped) == (2, 0)
    assert [(path, reason.split(" ")[0]) for path, reason in result.failed] == [(truncated, "decoding"),
                                                                                (text, "not")]
    assert _files(tmp_path / "lib") == sorted(_stems("a") + _stems("d"))
    with pytest.raises(BadAudioError, match="add --skip-errors"):
        separate_files(tmp_path / "in", tmp_path / "lib2", models=model, shifts=0, batch_size=8, device="cpu")


def test_progress_reports_each_file_up_to_its_length(model, tmp_path):
    long = write_sf(tmp_path / "in" / "long.wav", tone(3.0, SR), SR, "WAV", "FLOAT")
    short = write_sf(tmp_path / "in" / "short.wav", tone(0.4, SR, seed=1), SR, "WAV", "FLOAT")
    calls: dict = {}
    result = separate_files(tmp_path / "in", tmp_path / "out", models=model, shifts=0, device="cpu", window=0.5,
                            progress=lambda path, done, total: calls.setdefault(path, []).append((done, total)))
    assert result.done == 2 and set(calls) == {long, short}
    done = [d for d, _ in calls[long]]
    assert {t for _, t in calls[long]} == {3 * SR}  # the whole file, at the model's rate
    assert done[0] == 0 and done[-1] == 3 * SR and len(done) > 3  # window by window ...
    assert all(a < b for a, b in zip(done, done[1:], strict=False))  # ... always forward
    assert calls[short] == [(int(0.4 * SR), int(0.4 * SR))]  # separated whole: once, done
    assert read_audio(tmp_path / "out" / "long" / "vocals.wav")[0].shape == (2, 3 * SR)


def test_stale_staging_is_removed_and_live_staging_kept(tmp_path):
    out = tmp_path / "out"
    stale = out / ".killed.part"
    stale.mkdir(parents=True)
    (stale / ".mix.f32").write_bytes(b"\0" * 1000)
    fd = _try_lock(stale)  # as the killed run had it: now released
    os.close(fd)
    live = out / "nested" / ".busy.part"
    held = _try_lock(live)  # another process writing: its lock is held
    unlocked = out / ".older-stemsep.part"  # no lock file (killed before locking): stale once old
    write_sf(unlocked / ".raw0.f32.tmp-x.wav", tone(0.1, SR), SR, "WAV", "PCM_16")
    (out / "song").mkdir()
    (out / ".song.old").mkdir()  # killed after the new folder was in place: the old one goes
    (out / ".gone.old").mkdir()  # killed between the two renames: put back
    user = out / ".mine.part"  # not stemsep's: never touched
    write_sf(user / "take.wav", tone(0.1, SR), SR, "WAV", "PCM_16")
    (out / "mine").mkdir()
    (out / ".mine.old").mkdir()
    (out / ".mine.old" / "notes.txt").write_text("mine")
    hour_ago = os.stat(out).st_mtime - 3600
    for folder in (unlocked, user):
        os.utime(folder, (hour_ago, hour_ago))
    try:
        assert sorted(remove_stale_scratch(out)) == sorted([stale, unlocked])
        assert live.is_dir() and not stale.exists() and not unlocked.exists()
        assert (out / "gone").is_dir() and not (out / ".song.old").exists() and not (out / ".gone.old").exists()
    finally:
        os.close(held)
    assert remove_stale_scratch(out) == [live]
    assert sorted(leftovers(out)) == sorted([user, out / ".mine.old"])
    assert (user / "take.wav").is_file() and (out / ".mine.old" / "notes.txt").is_file()


def test_models_and_output_spellings(model, tmp_path, capsys):
    song = write_sf(tmp_path / "song.wav", tone(0.5, SR), SR, "WAV", "PCM_16")
    # --models A B (a bag, as `stemsep bag` takes it) and --output for -o; --model before the inputs
    assert main(["separate", "--model", str(model), str(song), "--output", str(tmp_path / "one"), "--shifts", "0"]) == 0
    assert main(["separate", str(song), "--models", str(model), str(model), "--output", str(tmp_path / "bag"),
                 "--shifts", "0", "--bits", "32"]) == 0
    assert "separated 1 file(s)" in capsys.readouterr().out
    assert _files(tmp_path / "bag") == _stems("song") and _files(tmp_path / "one") == _stems("song")
