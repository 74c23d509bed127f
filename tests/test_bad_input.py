"""Bad input stops with one line naming the file or key, exit status 2, no traceback."""

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from stemsep.cli import main

QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")


def _fit(root, capsys, *extra):
    code = main(["fit", "--config", QUICKSTART, "--data.init_args.prepare.root", str(root),
                 "--data.init_args.synthetic", "null", "--trainer.max_steps", "1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def _assert_one_line(code, line, *needles):
    assert code == 2
    assert line.startswith("stemsep: error: ")
    assert "Traceback" not in line
    for needle in needles:
        assert needle in line, line


def test_missing_data_directory(tmp_path, capsys):
    code, line = _fit(tmp_path / "nowhere", capsys)
    _assert_one_line(code, line, str(tmp_path / "nowhere"), "not found")


def test_song_missing_a_stem(corpus_copy, capsys):
    (corpus_copy / "train" / "song0001" / "bass.wav").unlink()
    code, line = _fit(corpus_copy, capsys)
    _assert_one_line(code, line, "song0001", "bass")


def test_stem_with_other_sample_rate(corpus_copy, capsys):
    path = corpus_copy / "train" / "song0002" / "drums.wav"
    data, _ = sf.read(path)
    sf.write(path, data, 48000, subtype="PCM_24")
    code, line = _fit(corpus_copy, capsys)
    _assert_one_line(code, line, str(path), "48000")


def test_stem_with_other_length(corpus_copy, capsys):
    path = corpus_copy / "train" / "song0000" / "vocals.wav"
    data, sr = sf.read(path)
    sf.write(path, data[:-100], sr, subtype="PCM_24")
    code, line = _fit(corpus_copy, capsys)
    _assert_one_line(code, line, str(path), "length")


def test_mono_stem(corpus_copy, capsys):
    path = corpus_copy / "train" / "song0000" / "other.wav"
    data, sr = sf.read(path)
    sf.write(path, data[:, 0], sr, subtype="PCM_24")
    code, line = _fit(corpus_copy, capsys)
    _assert_one_line(code, line, str(path), "channel")


def test_unknown_config_key(corpus_root, capsys):
    code, line = _fit(corpus_root, capsys, "--model.no_such_key", "3")
    _assert_one_line(code, line, "no_such_key")


def test_unknown_key_in_config_file(corpus_root, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  optimiser_typo: 1\n")
    code, line = _fit(corpus_root, capsys, "--config", str(bad))
    _assert_one_line(code, line, "optimiser_typo")


def test_non_audio_file_as_stem(corpus_copy, capsys):
    path = corpus_copy / "train" / "song0003" / "bass.wav"
    path.write_bytes(b"this is not audio" * 10)
    code, line = _fit(corpus_copy, capsys)
    _assert_one_line(code, line, str(path), "not a readable audio file")


def test_nan_samples_are_refused_when_read(tmp_path):
    from stemsep.audio import read_audio
    from stemsep.errors import BadAudioError

    path = tmp_path / "nan.wav"
    data = np.zeros((100, 2), dtype=np.float32)
    data[10, 0] = np.nan
    sf.write(path, data, 44100, subtype="FLOAT")
    with pytest.raises(BadAudioError, match="NaN"):
        read_audio(path)


def test_unknown_command(capsys):
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err
