"""`stemsep shard`: layouts, FLAC round trip, manifest, resume, and one-line errors on bad input."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from helpers.data import shard_corpus
from stemsep.cli import main
from stemsep.data.corpus.layouts import discover_songs
from stemsep.data.shards.codec import decode_flac, encode_flac, quantize24
from stemsep.data.shards.shard import parse_size
from stemsep.errors import BadAudioError, BadDataError
from stemsep.io.audio import read_audio, write_audio
from stemsep.io.files import file_sha256


def test_flac_round_trip_is_24bit_exact():
    torch.manual_seed(0)
    wav = torch.rand(2, 30000) * 1.8 - 0.9  # arbitrary float input, quantised to 24 bit by design
    decoded, sr = decode_flac(encode_flac(wav, 44100), "test")
    assert sr == 44100 and decoded.shape == wav.shape
    assert np.abs(decoded.double().numpy() - quantize24(wav.numpy())).max() < 1e-6
    assert (decoded - wav).abs().max() <= 2.0**-24 + 1e-9  # half a 24-bit step
    part, _ = decode_flac(encode_flac(wav, 44100), "test", start=1000, frames=500)
    assert torch.equal(part, decoded[:, 1000:1500])


def test_parse_size():
    assert parse_size("1GB") == 10**9 and parse_size("64MiB") == 64 * 2**20 and parse_size(512) == 512
    with pytest.raises(Exception, match="max-shard-size"):
        parse_size("lots")


def test_shard_musdb_manifest_and_resume(corpus_root, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["shard", "--layout", "musdb", "--root", str(corpus_root), "--out", str(out),
                 "--max-shard-size", "1MB"]) == 0
    assert "split valid: no songs" in capsys.readouterr().out  # synthetic names: no standard valid songs
    manifest = json.loads((out / "train.json").read_text())
    assert manifest["complete"] and manifest["samplerate"] == 44100 and manifest["sources"] == [
        "drums", "bass", "other", "vocals"]
    assert [s["name"] for s in manifest["songs"]] == [f"song{i:04d}" for i in range(4)]
    assert len(manifest["shards"]) >= 2  # size-bounded
    for entry in manifest["shards"]:
        path = out / entry["name"]
        assert file_sha256(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
        names = tarfile.open(path).getnames()
        assert all(n.count(".") in (1, 2) and "." not in n.split(".")[0] for n in names)
    song = manifest["songs"][1]
    assert song["seconds"] == 3.0 and all(len(v) == 3 for v in song["activity"].values())
    # the decoded stems equal the 24-bit input exactly
    with tarfile.open(out / song["shard"]) as tar:
        data = tar.extractfile(f"{song['key']}.vocals.flac").read()
    decoded, _ = decode_flac(data, "t")
    original, _ = read_audio(corpus_root / "train" / song["name"] / "vocals.wav")
    assert (decoded - original).abs().max() < 1e-6
    # resume: an interrupted run (last shard lost, manifest incomplete) rewrites only what is missing
    first = out / manifest["shards"][0]["name"]
    first_mtime = first.stat().st_mtime_ns
    last = out / manifest["shards"][-1]["name"]
    last.unlink()
    manifest["complete"] = False
    (out / "train.json").write_text(json.dumps(manifest))
    assert main(["shard", "--layout", "musdb", "--root", str(corpus_root), "--out", str(out),
                 "--max-shard-size", "1MB", "--split", "train"]) == 0
    again = json.loads((out / "train.json").read_text())
    assert again["complete"] and again["shards"] == json.loads(json.dumps(manifest["shards"]))
    assert first.stat().st_mtime_ns == first_mtime and last.is_file()
    assert not list(out.glob(".*"))  # no temporary leftovers


def test_layout_errors_are_one_line(corpus_copy, tmp_path):
    with pytest.raises(BadDataError, match="dataset root not found"):
        discover_songs(tmp_path / "nope", "musdb", "train")
    song = corpus_copy / "train" / "song0001"
    (song / "bass.wav").unlink()
    with pytest.raises(BadDataError, match="song0001.*missing stem 'bass'"):
        discover_songs(corpus_copy, "musdb", "train")
    wav, _ = read_audio(song / "drums.wav")
    write_audio(song / "bass.wav", wav, 48000)
    with pytest.raises(BadAudioError, match=r"bass.wav.*48000"):
        discover_songs(corpus_copy, "musdb", "train")
    write_audio(song / "bass.wav", wav[:, :-10], 44100)
    with pytest.raises(BadAudioError, match=r"bass.wav: length"):
        discover_songs(corpus_copy, "musdb", "train")
    write_audio(song / "bass.wav", wav[:1], 44100)
    with pytest.raises(BadAudioError, match=r"bass.wav: has 1 channel"):
        discover_songs(corpus_copy, "musdb", "train")
    err = None
    try:
        discover_songs(corpus_copy, "musdb", "train")
    except BadAudioError as e:
        err = str(e)
    assert err is not None and "\n" not in err


def test_nan_input_fails_cleanly(corpus_copy, tmp_path, capsys):
    song = corpus_copy / "train" / "song0002"
    wav, _ = read_audio(song / "other.wav")
    wav[0, 100] = float("nan")
    write_audio(song / "other.wav", wav, 44100, bits=32)
    out = tmp_path / "shards"
    code = main(["shard", "--layout", "musdb", "--root", str(corpus_copy), "--out", str(out),
                 "--max-shard-size", "1MB", "--split", "train"])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert code == 2 and err.startswith("stemsep: error:") and "song0002/other.wav" in err and "NaN" in err
    manifest = json.loads((out / "train.json").read_text())  # progress so far, marked incomplete
    assert not manifest["complete"]
    assert sorted(p.name for p in out.iterdir()) == sorted([s["name"] for s in manifest["shards"]] + ["train.json"])


def test_moisesdb_layout_sums_stems_into_sources(corpus_root, tmp_path):
    root = tmp_path / "moises"
    for index in range(2):
        src = corpus_root / "train" / f"song{index:04d}"
        song = root / f"uuid-{index}"
        stems = {name: read_audio(src / f"{name}.wav")[0] for name in ("drums", "bass", "other", "vocals")}
        parts = {"drums/a.wav": stems["drums"], "bass/b.wav": stems["bass"], "vocals/c.wav": stems["vocals"],
                 "guitar/d.wav": stems["other"] * 0.25, "piano/e.wav": stems["other"] * 0.5,
                 "piano/f.wav": stems["other"] * 0.25}
        for rel, wav in parts.items():
            (song / rel).parent.mkdir(parents=True, exist_ok=True)
            write_audio(song / rel, wav, 44100)
        (song / "data.json").write_text(json.dumps({"song": f"s{index}", "stems": []}))
    songs = discover_songs(root, "moisesdb", "train")
    assert [s.name for s in songs] == ["uuid-0", "uuid-1"] and len(songs[0].stems["other"]) == 3
    out = shard_corpus(root, tmp_path / "shards", layout="moisesdb", splits=["train"])
    manifest = json.loads((out / "train.json").read_text())
    song = manifest["songs"][0]
    with tarfile.open(out / song["shard"]) as tar:
        other, _ = decode_flac(tar.extractfile(f"{song['key']}.other.flac").read(), "t")
    expected, _ = read_audio(corpus_root / "train" / "song0000" / "other.wav")
    assert (other - expected).abs().max() < 3e-7 * 3
