"""`stemsep separate` and stemsep.Separator on the files people have: any format, rate, channel count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stemsep
from helpers import TinyNet
from helpers.audio import tone, write_av, write_sf
from stemsep.cli import main
from stemsep.contract import network_config
from stemsep.errors import BadAudioError
from stemsep.inference import Separator
from stemsep.io.audio import read_audio, read_mix
from stemsep.io.checkpoint import save_checkpoint

SR = 16000  # the model's rate
SOURCES = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    torch.manual_seed(0)
    net = TinyNet(SOURCES, samplerate=SR)
    return save_checkpoint(root / "tiny.ckpt", net, network_config(net))


# name -> (writer, input rate, slack in input samples for codecs that pad: AAC priming + last frame)
CASES = {
    "song.mp3": (lambda p, x, sr: write_sf(p, x, sr, "MP3", "MPEG_LAYER_III"), SR, 0),
    "song.ogg": (lambda p, x, sr: write_sf(p, x, sr, "OGG", "VORBIS"), 44100, 0),
    "song.opus": (lambda p, x, sr: write_sf(p, x, sr, "OGG", "OPUS"), 48000, 0),
    "song.m4a": (lambda p, x, sr: write_av(p, [x], sr), 44100, 2048),
    "song.stem.mp4": (lambda p, x, sr: write_av(p, [x] + [0.2 * x] * 4, sr, container="mp4"), 44100, 2048),
    "song22.wav": (lambda p, x, sr: write_sf(p, x, sr, "WAV", "PCM_16"), 22050, 0),
    "song48.wav": (lambda p, x, sr: write_sf(p, x, sr, "WAV", "FLOAT"), 48000, 0),
    "mono.flac": (lambda p, x, sr: write_sf(p, x[:1], sr, "FLAC", "PCM_16"), SR, 0),
    "surround.wav": (lambda p, x, sr: write_sf(p, np.concatenate([x, x, x]), sr, "WAV", "PCM_24"), SR, 0),
}
SECONDS = 1.3
SAME_AS = {"voice.opus": "song.opus", "other.mp3": "song.mp3"}  # more files of a kind, for the folder test


def _case(name):
    return CASES[SAME_AS.get(name, name)]


def _make(folder, name):
    write, rate, _ = _case(name)
    return write(folder / name, tone(SECONDS, rate), rate)


def _track(name):
    return name.removesuffix(".stem.mp4").rsplit(".", 1)[0]


def _check_outputs(out, name, path):
    _, rate, slack = _case(name)
    decoded = read_mix(path, SR).shape[1]  # the decoded input at the model's rate
    original = round(SECONDS * rate) * SR / rate
    assert abs(decoded - original) <= 1 + slack * SR / rate
    folder = out / _track(name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.wav" for s in SOURCES)
    for source in SOURCES:
        stem, sr = read_audio(folder / f"{source}.wav")
        assert sr == SR and stem.shape[0] == 2 and abs(stem.shape[1] - decoded) <= 1


@pytest.mark.parametrize("name", list(CASES))
def test_separate_any_format_rate_and_channels(model, tmp_path, capsys, name):
    path = _make(tmp_path / "in", name)
    out = tmp_path / "out"
    assert main(["separate", str(path), "--model", str(model), "-o", str(out), "--shifts", "0"]) == 0
    err = capsys.readouterr().err
    _check_outputs(out, name, path)
    if name == "surround.wav":
        assert err.strip() == f"note: {path}: 6 channels downmixed to stereo"
    assert not list(out.rglob(".*"))


def test_separate_a_folder_of_formats(model, tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    for name in ["song.mp3", "song.stem.mp4", "song48.wav", "voice.opus"]:
        _make(folder, name)
    _make(folder / "sub", "mono.flac")
    (folder / "cover.jpg").write_bytes(b"\xff\xd8 not audio")
    (folder / "notes.txt").write_text("ignored")
    # song.mp3 and song.stem.mp4 would both be track "song": refused before anything is written
    assert main(["separate", str(folder), "--model", str(model), "-o", str(out), "--shifts", "0"]) == 2
    err = capsys.readouterr().err
    assert f"would both be written to {out / 'song'}" in err and "{trackext}" in err and not out.exists()
    (folder / "song.mp3").rename(folder / "other.mp3")
    assert main(["separate", str(folder), "--model", str(model), "-o", str(out), "--shifts", "0"]) == 0
    assert "separated 5 file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["mono", "other", "song", "song48", "voice"]
    for path in [folder / "other.mp3", folder / "song.stem.mp4", folder / "song48.wav", folder / "voice.opus",
                 folder / "sub" / "mono.flac"]:
        _check_outputs(out, path.name, path)


def _bad(folder, name):
    full = write_sf(folder / "full.wav", tone(2.0, SR), SR, "WAV", "PCM_16").read_bytes()
    if name == "truncated.wav":
        (folder / name).write_bytes(full[:len(full) // 2])
    elif name == "truncated.m4a":
        m4a = write_av(folder / "full.m4a", [tone(2.0, SR)], SR).read_bytes()
        (folder / name).write_bytes(m4a[:len(m4a) // 2])
    elif name == "empty.mp3":
        (folder / name).write_bytes(b"")
    elif name == "text.m4a":
        (folder / name).write_text("not audio\n" * 50)
    elif name == "codec.wav":
        (folder / name).write_bytes(full[:20] + (0x1234).to_bytes(2, "little") + full[22:])
    return folder / name


@pytest.mark.parametrize("name", ["truncated.wav", "truncated.m4a", "empty.mp3", "text.m4a", "codec.wav"])
def test_bad_files_one_line_error_and_nothing_written(model, tmp_path, capsys, name):
    src = tmp_path / "in"
    src.mkdir()
    path = _bad(src, name)
    out = tmp_path / "out"
    assert main(["separate", str(path), "--model", str(model), "-o", str(out), "--shifts", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"stemsep: error: {path}: "), err
    assert not out.exists() or not list(out.iterdir())
    # through the Python API as well: the same error, no track folder
    sep = Separator.from_checkpoint(model, device="cpu", shifts=0)
    with pytest.raises(BadAudioError, match=f"^{path}: "):
        sep.separate_file(path, out)
    assert not (out / _track(name)).exists() and not list(out.rglob(".*"))


def test_separator_api(model, tmp_path, capsys):
    assert stemsep.Separator is Separator
    sep = Separator.from_checkpoint(model, device="cpu", shifts=0)
    assert sep.sources == SOURCES and sep.samplerate == SR and sep.audio_channels == 2
    mix = torch.from_numpy(tone(0.5, 48000))
    before = mix.clone()
    stems = sep.separate(mix, samplerate=48000)
    assert torch.equal(mix, before)  # not normalised in place
    assert list(stems) == SOURCES and all(s.shape == (2, 24000) for s in stems.values())
    batch = sep.separate(torch.stack([mix, 0.5 * mix]), samplerate=48000)
    assert all(s.shape == (2, 2, 24000) for s in batch.values())
    assert torch.allclose(batch["vocals"][0], stems["vocals"], atol=1e-5)
    mono = sep.separate(mix[0].numpy(), samplerate=48000)
    assert mono["drums"].shape == (2, 24000)
    # at the model's rate, separate() is what separate_mixes does to the tensor
    same = sep.separate(torch.from_numpy(tone(0.5, SR)), samplerate=SR)
    assert same["bass"].shape == (2, SR // 2)

    # separate_file writes what `stemsep separate` writes for the same file and options
    path = _make(tmp_path / "in", "song.m4a")
    written = sep.separate_file(path, tmp_path / "api")
    assert written == {s: tmp_path / "api" / "song" / f"{s}.wav" for s in SOURCES}
    assert main(["separate", str(path), "--model", str(model), "-o", str(tmp_path / "cli"), "--shifts", "0",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    for source, file in written.items():
        api, sr = read_audio(file)
        cli, _ = read_audio(tmp_path / "cli" / "song" / f"{source}.wav")
        assert sr == SR and torch.equal(api, cli)
    # and separate() on the decoded mix gives the same stems (to the 24-bit files' precision)
    decoded = read_mix(path, SR)
    direct = sep.separate(decoded, samplerate=SR)
    assert torch.allclose(direct["vocals"], read_audio(written["vocals"])[0], atol=1e-4)


def test_separator_bag_and_options(model, tmp_path):
    torch.manual_seed(1)
    other = TinyNet(SOURCES, samplerate=SR)
    second = save_checkpoint(tmp_path / "b.ckpt", other, network_config(other))
    bag = Separator.from_checkpoint([model, second], device="cpu", shifts=0,
                                    weights=[[1, 0, 1, 0], [0, 1, 0, 1]])
    a = Separator.from_checkpoint(model, device="cpu", shifts=0)
    b = Separator.from_checkpoint(second, device="cpu", shifts=0)
    mix = torch.from_numpy(tone(0.4, SR))
    out, out_a, out_b = bag.separate(mix, SR), a.separate(mix, SR), b.separate(mix, SR)
    assert torch.allclose(out["drums"], out_a["drums"], atol=1e-5)
    assert torch.allclose(out["bass"], out_b["bass"], atol=1e-5)
    with pytest.raises(ValueError):
        Separator.from_checkpoint(model, device="cpu", overlap=1.5)
    with pytest.raises(BadAudioError):
        a.separate(torch.zeros(2, 0), SR)
