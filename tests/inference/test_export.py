"""stemsep export: exported cores separate like the torch models on full `separate` runs."""

from __future__ import annotations

import pytest
import torch

from helpers import TinyNet
from helpers.tools import SR, check_onnx_separate_matches_torch, small_checkpoint, small_network
from stemsep.cli import main
from stemsep.inference.bag import BagOfModels
from stemsep.io.checkpoint import save_checkpoint


@pytest.mark.parametrize("name, seconds, options", [
    # HT Demucs pads chunks to its training segment itself: default chunking, partial chunks included.
    ("htdemucs_small", 3.0, []),
    # Hybrid Demucs takes short chunks as they are; the exported graph has a fixed length, so the
    # comparison uses whole chunks only (no overlap, file = 4 segments). 0.25 s keeps the export quick.
    ("hdemucs_small", 1.0, ["--overlap", "0", "--segment", "0.25"]),
])
def test_onnx_separate_matches_torch(tmp_path, capsys, name, seconds, options):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    overrides = {"segment": 0.25} if name == "hdemucs_small" else {}
    net, ckpt = small_checkpoint(name, tmp_path / "model.ckpt", **overrides)
    check_onnx_separate_matches_torch(net, ckpt, tmp_path, capsys, seconds=seconds, options=tuple(options))


def test_torchscript_export_runs_the_same_core(tmp_path):
    from stemsep.inference.export import export_model
    from stemsep.inference.exported import load_exported

    net, _ = small_network("htdemucs_small", depth=2, channels=8, t_layers=1, segment=0.5)
    meta = export_model(net, tmp_path / "model.pt", "torchscript")
    exported = load_exported(tmp_path / "model.pt", "torchscript")
    assert exported.sources == net.sources and meta["segment_samples"] == exported.length == SR // 2
    mix = torch.randn(3, 2, SR // 2 - 100)  # shorter than the segment: padded like the model pads
    with torch.no_grad():
        assert (exported(mix) - net(mix)).abs().max() < 1e-5
    with pytest.raises(Exception, match="longer than the exported segment"):
        exported(torch.randn(1, 2, SR))


@pytest.mark.parametrize("kind", ["user network", "bag"])
def test_export_without_export_path_is_one_line_error(tmp_path, capsys, kind):
    net = TinyNet()
    config = {"class_path": "helpers.nets.TinyNet", "init_args": net.init_args}
    if kind == "bag":
        net = BagOfModels([TinyNet(), TinyNet()])
        config = {"class_path": "stemsep.inference.bag.BagOfModels",
                  "init_args": {"models": [dict(config), dict(config)]}}
    ckpt = save_checkpoint(tmp_path / "model.ckpt", net, config)
    assert main(["export", str(ckpt), "--format", "onnx", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no export path" in err and str(ckpt) in err
    assert ("bag of models" if kind == "bag" else "TinyNet") in err
    assert not (tmp_path / "x.onnx").exists() and not list(tmp_path.glob(".*"))
