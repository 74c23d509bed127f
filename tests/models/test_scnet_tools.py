"""Every stemsep tool on SCNet: fit (recipes/scnet.yaml), separate, test, bag, audit, export, quantize.

The network is configs/model/scnet_small.yaml made smaller still (random weights), so that each
tool runs in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import REPO, tools
from helpers.recipes import tiny_overrides
from stemsep.cli import main
from stemsep.models import SCNet

TINY = {"dims": [4, 8, 8, 8], "nfft": 512, "hop_size": 128, "win_size": 512, "conv_depths": [1, 1, 1],
        "num_dplayer": 2, "segment": 0.5}


def _config(**overrides) -> dict:
    return tools.small_config("scnet_small", **{**TINY, **overrides})


def _checkpoint(path: Path, seed: int = 0, **overrides) -> tuple[SCNet, Path]:
    net, ckpt = tools.small_checkpoint("scnet_small", path, seed, **{**TINY, **overrides})
    assert isinstance(net, SCNet)
    return net, ckpt


def _fit(shards: Path, run: Path, *extra: str) -> dict:
    """recipes/scnet.yaml (its loss, optimizer, LR schedule, EMA) on the tiny SCNet, two steps."""
    assert main(["fit", "--config", str(REPO / "recipes" / "scnet.yaml"), *tiny_overrides(shards, run),
                 "--model.net", str(REPO / "configs" / "model" / "scnet_small.yaml"), *tools.net_args(TINY),
                 "--model.loss.init_args.n_fft", "512", "--model.loss.init_args.hop_length", "128",
                 "--model.loss.init_args.win_length", "512", "--trainer.max_steps", "2",
                 "--data.init_args.epoch_batches", "2", "--trainer.logger=null",
                 "--trainer.callbacks.dirpath", str(run), *extra]) == 0
    ckpt, trained = tools.check_trained(run, SCNet, _config())
    assert trained.dims == TINY["dims"]
    return ckpt


def test_training_step_reaches_every_parameter():
    """The module's training step with SCNet's loss: a finite loss and a gradient for every parameter."""
    from stemsep.training.losses import SpectrogramRMSELoss
    from stemsep.training.module import SeparationModule

    torch.manual_seed(0)
    net = SCNet(**_config()["init_args"])
    module = SeparationModule(net, loss=SpectrogramRMSELoss(n_fft=512, hop_length=128, win_length=512))
    mix, stems = torch.randn(2, 2, 8000), torch.randn(2, 4, 2, 8000)
    module.log = lambda *args, **kwargs: None  # no trainer attached
    loss = module.training_step((mix, stems), 0)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.slow  # Lightning, shards and two steps: over 10 s on two busy cores
def test_fit_recipe_two_steps(shards, tmp_path):
    ckpt = _fit(shards, tmp_path / "run", "--trainer.limit_val_batches", "0")
    scheduler = ckpt["lr_schedulers"][0]
    assert scheduler["step_size"] == 6000 and scheduler["gamma"] == 0.98 and scheduler["last_epoch"] == 2


@pytest.mark.slow  # validation and test separate whole songs: about a minute on two cores
def test_fit_with_validation_then_test(shards, tmp_path, capsys):
    run = tmp_path / "run"
    _fit(shards, run, "--trainer.limit_val_batches", "1")
    assert "valid nSDR (dB)" in capsys.readouterr().out
    results = tools.check_test_command(run / "last.ckpt", shards, tmp_path, capsys)
    assert len(list(results.glob("song*.json"))) == 2


def test_separate_writes_what_the_network_returns(tmp_path):
    tools.check_separate_writes_what_the_network_returns(*_checkpoint(tmp_path / "scnet.ckpt"), tmp_path)


def test_bag_of_two_scnets(tmp_path):
    (a, ckpt_a), (b, ckpt_b) = _checkpoint(tmp_path / "a.ckpt", 1), _checkpoint(tmp_path / "b.ckpt", 2)
    tools.check_bag_of_two(a, ckpt_a, b, ckpt_b, SCNet, tmp_path)


@pytest.mark.slow  # the bleeding test separates every stem of every song: minutes on two busy cores
def test_audit_with_scnet_as_the_bleeding_model(shards, tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path / "scnet.ckpt")
    keep = tmp_path / "keep.json"
    assert main(["audit", "--shards", str(shards / "train.json"), "--model", str(ckpt), "--segment", "0.5",
                 "--out", str(keep)]) == 0
    result = json.loads(keep.read_text())
    assert sorted(result["keep"] + list(result["drop"])) == [f"song{i:04d}" for i in range(4)]
    assert "kept" in capsys.readouterr().out


def test_quantize_then_separate(tmp_path):
    tools.check_quantize_then_separate(*_checkpoint(tmp_path / "f32.ckpt"), tmp_path, max_error=0.05)


def test_torchscript_export_runs_the_same_core(tmp_path):
    net, _ = _checkpoint(tmp_path / "scnet.ckpt")
    tools.check_torchscript_export(net, tmp_path, "stemsep.models.scnet.SCNetFrontEnd")


@pytest.mark.slow  # the torch.export based ONNX exporter takes about a minute on two cores
def test_onnx_separate_matches_torch(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net, ckpt = _checkpoint(tmp_path / "scnet.ckpt", segment=0.25)
    # whole chunks only (the graph's length is fixed): no overlap, the song is 4 segments
    tools.check_onnx_separate_matches_torch(net, ckpt, tmp_path, capsys,
                                            options=("--overlap", "0", "--device", "cpu"))
