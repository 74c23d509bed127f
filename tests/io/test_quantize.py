"""stemsep quantize: an int8 checkpoint loads safely (weights_only) and separates."""

from __future__ import annotations

import numpy as np
import torch

from stemsep.cli import main
from stemsep.io.audio import read_audio, write_audio
from stemsep.io.checkpoint import load_checkpoint, load_separator, save_checkpoint

SR = 8000
SOURCES = ["drums", "bass", "other", "vocals"]
CONFIG = {"sources": SOURCES, "channels": 8, "depth": 2, "t_layers": 2, "segment": 1, "nfft": 256,
          "samplerate": SR, "t_heads": 2, "bottom_channels": 64, "t_layer_scale": False}


def test_int8_checkpoint_loads_and_separates(tmp_path, capsys):
    from stemsep.models import HTDemucs

    torch.manual_seed(0)
    net = HTDemucs(**CONFIG).eval()
    ckpt = save_checkpoint(tmp_path / "f32.ckpt", net, {"class_path": "stemsep.models.HTDemucs", "init_args": CONFIG})
    assert main(["quantize", str(ckpt), "-o", str(tmp_path / "int8.ckpt")]) == 0
    assert "wrote" in capsys.readouterr().out
    stored = load_checkpoint(tmp_path / "int8.ckpt")  # weights_only=True
    int8 = [v[0] for v in stored["state_dict"].values() if isinstance(v, tuple)]
    assert int8 and all(w.dtype == torch.qint8 for w in int8)
    assert (tmp_path / "int8.ckpt").stat().st_size < 0.8 * ckpt.stat().st_size

    quantized = load_separator(tmp_path / "int8.ckpt")
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())  # every Linear is int8
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())
    mix = torch.randn(2, 2, SR)
    with torch.no_grad():
        ref, got = net(mix), quantized(mix)
    error = (ref - got).abs().max() / ref.abs().max()
    assert 0 < error < 0.05  # changed by the rounding of the weights, not broken

    rng = np.random.default_rng(0)
    write_audio(tmp_path / "in" / "song.wav", 0.1 * rng.standard_normal((2, int(1.7 * SR))), SR, bits=32)
    assert main(["separate", str(tmp_path / "in"), "--model", str(tmp_path / "int8.ckpt"), "--device", "cpu",
                 "--shifts", "0", "-o", str(tmp_path / "out")]) == 0
    stems = [read_audio(tmp_path / "out" / "song" / f"{s}.wav")[0] for s in SOURCES]
    assert all(s.shape == (2, int(1.7 * SR)) and torch.isfinite(s).all() and s.abs().max() > 0 for s in stems)


def test_int8_checkpoints_refused_where_they_cannot_go(tmp_path, capsys, monkeypatch):
    from stemsep.models import HTDemucs

    net = HTDemucs(**CONFIG).eval()
    ckpt = save_checkpoint(tmp_path / "f32.ckpt", net, {"class_path": "stemsep.models.HTDemucs", "init_args": CONFIG})
    assert main(["quantize", str(ckpt), "-o", str(tmp_path / "a.ckpt")]) == 0
    assert main(["quantize", str(tmp_path / "a.ckpt"), "-o", str(tmp_path / "b.ckpt")]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "a.ckpt"), "-o", str(tmp_path / "a.onnx")]) == 2
    assert "cannot be exported; export the float32 checkpoint" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    write_audio(tmp_path / "in" / "x.wav", np.zeros((2, SR)), SR)
    # as on a machine with a GPU (here or not): --device cuda resolves, the int8 model refuses it before any tensor moves
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["separate", str(tmp_path / "in"), "--model", str(tmp_path / "a.ckpt"), "--device", "cuda",
                 "-o", str(tmp_path / "out")]) == 2
    assert "run on the CPU only" in capsys.readouterr().err
