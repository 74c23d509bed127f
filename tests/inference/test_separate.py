"""stemsep separate end to end (tiny checkpoint, generated audio) and apply_model parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemsep.cli import main
from stemsep.inference.chunked import apply_model
from stemsep.io.audio import read_audio, write_audio
from stemsep.io.checkpoint import save_checkpoint

SR = 8000
SOURCES = ["drums", "bass", "other", "vocals"]
CONFIG = {"sources": SOURCES, "channels": 8, "depth": 2, "t_layers": 1, "segment": 1, "nfft": 256,
          "samplerate": SR, "t_heads": 2}


def _checkpoint(path, seed: int):
    from stemsep.models import HTDemucs

    torch.manual_seed(seed)
    net = HTDemucs(**CONFIG).eval()
    save_checkpoint(path, net, {"class_path": "stemsep.models.htdemucs.HTDemucs", "init_args": CONFIG})
    return net


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("separate")
    nets = [_checkpoint(root / "a.ckpt", 0), _checkpoint(root / "b.ckpt", 1)]
    t = np.arange(int(2.3 * SR)) / SR
    rng = np.random.default_rng(0)
    song = np.stack([np.sin(2 * np.pi * 220 * t), 0.5 * np.sin(2 * np.pi * 330 * t)]) * 0.3
    song += 0.05 * rng.standard_normal(song.shape)
    write_audio(root / "in" / "song.wav", song, SR, bits=32)
    write_audio(root / "in" / "mono.flac", song[:1] * 0.5, SR, bits=24)
    write_audio(root / "musdb" / "Some Track" / "mixture.wav", song[::-1].copy(), SR, bits=32)
    return root, nets


def _expected(net, path):
    mix, _ = read_audio(path)
    mix = mix.expand(2, -1)
    ref = mix.mean(0)
    mean, std = ref.mean(), ref.std()
    return apply_model(net, ((mix - mean) / std)[None], shifts=0, batch_size=3)[0] * std + mean


def test_separate_writes_stems_and_skips_on_rerun(setup, capsys):
    root, nets = setup
    out = root / "out"
    argv = ["separate", str(root / "in"), str(root / "musdb" / "Some Track" / "mixture.wav"),
            "--model", str(root / "a.ckpt"), "-o", str(out), "--shifts", "0", "--batch-size", "16",
            "--bits", "32"]
    assert main(argv) == 0
    assert "separated 3 file(s)" in capsys.readouterr().out
    for track in ("song", "mono", "Some Track"):
        assert sorted(p.name for p in (out / track).iterdir()) == sorted(f"{s}.wav" for s in SOURCES)
    expected = _expected(nets[0], root / "in" / "song.wav")
    for j, source in enumerate(SOURCES):
        stem, sr = read_audio(out / "song" / f"{source}.wav")
        assert sr == SR and stem.shape == expected[j].shape
        assert torch.allclose(stem, expected[j], atol=1e-5)
    mtime = (out / "song" / "vocals.wav").stat().st_mtime_ns
    assert main(argv) == 0
    assert "skipped 3 already done" in capsys.readouterr().out
    assert (out / "song" / "vocals.wav").stat().st_mtime_ns == mtime
    assert not list(out.rglob(".*"))  # no temporary leftovers


def test_separate_bag_with_weights_and_flac(setup, capsys):
    root, nets = setup
    out = root / "bag"
    assert main(["separate", str(root / "in" / "song.wav"), "--model", str(root / "a.ckpt"),
                 "--model", str(root / "b.ckpt"), "--weights", "1,0,1,1", "1,1,1,0", "--shifts", "0",
                 "-o", str(out), "--format", "flac", "--bits", "24"]) == 0
    capsys.readouterr()
    a, b = _expected(nets[0], root / "in" / "song.wav"), _expected(nets[1], root / "in" / "song.wav")
    weights = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 0]], dtype=torch.float32)
    bag = (a * weights[0, :, None, None] + b * weights[1, :, None, None]) / weights.sum(0)[:, None, None]
    stem, _ = read_audio(out / "song" / "bass.flac")
    assert torch.allclose(stem, bag[1].clamp(-1, 1), atol=2e-4)  # 24-bit quantisation
    assert torch.allclose(read_audio(out / "song" / "vocals.flac")[0], a[3].clamp(-1, 1), atol=2e-4)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stemsep: error: ") and "\n" not in err
    return err


def test_other_rates_and_channel_counts_are_converted(setup, tmp_path, capsys):
    """Issue 15: a 16 kHz file is resampled to the model's 8 kHz, three channels downmixed (a note)."""
    root, _ = setup
    model = ["--model", str(root / "a.ckpt"), "-o", str(tmp_path / "o"), "--shifts", "0"]
    write_audio(tmp_path / "hi.wav", np.zeros((2, 100)), 16000)
    write_audio(tmp_path / "three.wav", 0.1 * np.ones((3, 100)), SR)
    assert main(["separate", str(tmp_path / "hi.wav"), str(tmp_path / "three.wav"), *model]) == 0
    assert "three.wav: 3 channels downmixed to stereo" in capsys.readouterr().err
    assert read_audio(tmp_path / "o" / "hi" / "vocals.wav")[0].shape == (2, 50)
    assert read_audio(tmp_path / "o" / "three" / "vocals.wav")[0].shape == (2, 100)


def test_separate_bad_inputs_are_one_line_errors(setup, tmp_path, capsys):
    root, _ = setup
    model = ["--model", str(root / "a.ckpt"), "-o", str(tmp_path / "o")]
    (tmp_path / "junk.wav").write_bytes(b"nope")
    assert "not a readable audio file" in _error(capsys, ["separate", str(tmp_path / "junk.wav"), *model])
    assert "file not found" in _error(capsys, ["separate", str(tmp_path / "missing.wav"), *model])
    song = str(root / "in" / "song.wav")
    assert "one per --model" in _error(capsys, ["separate", song, *model, "--weights", "1,1,1,1", "1,1,1,1"])
    assert "4 sources" in _error(capsys, ["separate", song, *model, "--weights", "1,1"])
    assert "checkpoint not found" in _error(capsys, ["separate", song, "--model", str(tmp_path / "x.ckpt"),
                                                     "-o", str(tmp_path / "o")])


def test_apply_model_with_stemsep_htdemucs_matches_demucs(setup):
    """Same weights in demucs' HTDemucs and ours: the two apply_model agree (shifts=0)."""
    demucs_htdemucs = pytest.importorskip("demucs.htdemucs")
    from demucs.apply import apply_model as demucs_apply

    _, nets = setup
    theirs = demucs_htdemucs.HTDemucs(**CONFIG).eval()
    theirs.load_state_dict(nets[0].state_dict())
    mix = torch.randn(2, 2, int(3.4 * SR))
    expected = demucs_apply(theirs, mix, shifts=0, split=True, overlap=0.25)
    ours = apply_model(nets[0], mix, shifts=0, split=True, overlap=0.25, batch_size=4)
    assert (ours - expected).abs().max().item() <= 1e-4
