"""`stemsep shard --layout musdb` reads the MUSDB18 release: ``{train,test}/<song>.stem.mp4``, five AAC
streams (mixture, drums, bass, other, vocals), made here with PyAV."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from helpers.stem_mp4 import write_stem_mp4
from stemsep.cli import main
from stemsep.data.corpus.layouts import discover_songs
from stemsep.data.shards.codec import decode_flac
from stemsep.errors import BadAudioError, BadDataError
from stemsep.io.audio import STEM_MP4_STREAMS, read_stream

pytest.importorskip("av")

SR = 44100
SOURCES = ["drums", "bass", "other", "vocals"]
FREQS = {"drums": 110.0, "bass": 55.0, "other": 440.0, "vocals": 880.0}  # one tone per source: a swap shows


def _stems(seconds: float, seed: int) -> dict[str, np.ndarray]:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    out = {}
    for source, freq in FREQS.items():
        gain = rng.uniform(0.1, 0.2)
        out[source] = np.stack([gain * np.sin(2 * np.pi * freq * t), 0.7 * gain * np.sin(2 * np.pi * freq * t + 1)]
                               ).astype(np.float32)
    return out


def make_stem_mp4(path: Path, seconds: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    """A MUSDB18-style ``.stem.mp4``: mixture then drums, bass, other, vocals, each an AAC stream."""
    stems = _stems(seconds, seed)
    write_stem_mp4(path, [sum(stems.values()), *(stems[s] for s in SOURCES)], SR)
    return stems


def _snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    n = min(reference.shape[-1], estimate.shape[-1])
    reference, estimate = reference[..., :n], estimate[..., :n]
    return float(10 * np.log10((reference**2).sum() / ((reference - estimate) ** 2).sum()))


@pytest.fixture(scope="module")
def musdb18(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("musdb18")
    truth = {}
    for split, names in (("train", ["Artist - A", "Artist - B"]), ("test", ["Artist - C"])):
        for i, name in enumerate(names):
            truth[name] = make_stem_mp4(root / split / f"{name}.stem.mp4", seed=len(truth) + i)
    return root, truth


def test_stream_order_is_musdb18s():
    assert [STEM_MP4_STREAMS[s] for s in ["mixture", *SOURCES]] == [0, 1, 2, 3, 4]


def test_discover_stem_mp4_songs(musdb18):
    root, _ = musdb18
    songs = discover_songs(root, "musdb", "train")
    assert [s.name for s in songs] == ["Artist - A", "Artist - B"]
    song = songs[0]
    assert song.samplerate == SR and song.channels == 2
    assert abs(song.frames - SR) <= 64  # the length the container states (AAC: a few samples of padding)
    assert song.streams == {"drums": 1, "bass": 2, "other": 3, "vocals": 4, "mixture": 0}
    assert [s.name for s in discover_songs(root, "musdb", "test")] == ["Artist - C"]
    with pytest.raises(BadDataError, match="no stream for 'piano'"):
        discover_songs(root, "musdb", "train", sources=["piano", "vocals"])


def test_shard_stem_mp4_musdb18(musdb18, tmp_path, capsys):
    root, truth = musdb18
    out = tmp_path / "shards"
    assert main(["shard", "--layout", "musdb", "--root", str(root), "--out", str(out)]) == 0
    assert "split valid: no songs" in capsys.readouterr().out
    for split, names in (("train", ["Artist - A", "Artist - B"]), ("test", ["Artist - C"])):
        manifest = json.loads((out / f"{split}.json").read_text())
        assert manifest["complete"] and manifest["samplerate"] == SR and manifest["sources"] == SOURCES
        assert [s["name"] for s in manifest["songs"]] == names
        for song in manifest["songs"]:
            path = root / split / f"{song['name']}.stem.mp4"
            with tarfile.open(out / song["shard"]) as tar:
                for source in SOURCES:
                    decoded, sr = decode_flac(tar.extractfile(f"{song['key']}.{source}.flac").read(), source)
                    assert sr == SR and decoded.shape == (2, song["frames"])
                    # exactly the decoded AAC stream (to the 24-bit grid of the FLAC shards) ...
                    stream, _ = read_stream(path, STEM_MP4_STREAMS[source])
                    assert np.abs(decoded.numpy() - stream.numpy()[:, :song["frames"]]).max() < 1e-6
                    # ... and that stream is the right source: close to what was encoded, far from the others
                    assert _snr(truth[song["name"]][source], decoded.numpy()) > 15
                    for other in SOURCES:
                        if other != source:
                            assert _snr(truth[song["name"]][other], decoded.numpy()) < 3


def test_stem_mp4_bad_files_are_one_line_errors(tmp_path):
    root = tmp_path / "musdb18"
    (root / "train").mkdir(parents=True)
    (root / "train" / "broken.stem.mp4").write_bytes(b"not an mp4 file")
    with pytest.raises(BadAudioError, match=r"broken\.stem\.mp4: not a readable audio file"):
        discover_songs(root, "musdb", "train")
    (root / "train" / "broken.stem.mp4").unlink()
    stems = _stems(0.5, 0)
    write_stem_mp4(root / "train" / "two.stem.mp4", [stems["drums"], stems["bass"]], SR)
    with pytest.raises(BadAudioError, match=r"two\.stem\.mp4: has 2 audio stream\(s\)"):
        discover_songs(root, "musdb", "train")
    with pytest.raises(BadAudioError, match="no stream 4"):
        read_stream(root / "train" / "two.stem.mp4", 4)
