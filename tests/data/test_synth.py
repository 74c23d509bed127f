import hashlib

import numpy as np
import soundfile as sf

from stemsep import DEFAULT_SOURCES
from stemsep.cli import main


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.wav")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_stems_sum_to_mixture(corpus_root):
    songs = sorted((corpus_root / "train").iterdir()) + sorted((corpus_root / "test").iterdir())
    assert len(songs) == 6
    for song in songs:
        mix, sr = sf.read(song / "mixture.wav", dtype="float64")
        assert sr == 44100 and mix.shape == (3 * 44100, 2)
        total = sum(sf.read(song / f"{name}.wav", dtype="float64")[0] for name in DEFAULT_SOURCES)
        assert np.abs(mix - total).max() < 1e-6
        assert sf.info(song / "mixture.wav").subtype == "PCM_24"
        ints = {name: sf.read(song / f"{name}.wav", dtype="int32")[0] for name in [*DEFAULT_SOURCES, "mixture"]}
        assert np.array_equal(ints["mixture"], sum(ints[name] for name in DEFAULT_SOURCES))  # exact, bit for bit
        for name in DEFAULT_SOURCES:  # every stem is audible
            assert np.sqrt(np.mean(sf.read(song / f"{name}.wav")[0] ** 2)) > 1e-3


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert main(["synth", "--out", str(tmp_path / name), "--songs", "2", "--seconds", "1.5",
                     "--seed", str(seed)]) == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_songs_vary(corpus_root):
    """Tempo, key and panning differ per song: the stems of two songs are not alike."""
    a, _ = sf.read(corpus_root / "train" / "song0000" / "bass.wav")
    b, _ = sf.read(corpus_root / "train" / "song0001" / "bass.wav")
    corr = np.corrcoef(a[:, 0], b[:, 0])[0, 1]
    assert abs(corr) < 0.5
    pan_a = np.sqrt((a[:, 0] ** 2).mean() / (a[:, 1] ** 2).mean())
    pan_b = np.sqrt((b[:, 0] ** 2).mean() / (b[:, 1] ** 2).mean())
    assert abs(pan_a - pan_b) > 1e-3
