"""Every stemsep tool on SCNet: fit (recipes/scnet.yaml), separate, test, bag, audit, export, quantize.

The network is configs/model/scnet_small.yaml made smaller still (random weights), so that each
tool runs in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import REPO
from helpers.recipes import tiny_overrides
from stemsep.cli import main
from stemsep.inference.bag import BagOfModels
from stemsep.io.audio import read_audio, write_audio
from stemsep.io.checkpoint import build_from_config, load_checkpoint, load_separator, save_checkpoint
from stemsep.models import SCNet

SR = 44100
TINY = {"dims": [4, 8, 8, 8], "nfft": 512, "hop_size": 128, "win_size": 512, "conv_depths": [1, 1, 1],
        "num_dplayer": 2, "segment": 0.5}
TINY_ARGS = [arg for key, value in TINY.items()
             for arg in (f"--model.net.init_args.{key}", json.dumps(value))]


def _config(**overrides) -> dict:
    config = yaml.safe_load((REPO / "configs" / "model" / "scnet_small.yaml").read_text())
    config["init_args"].update({**TINY, **overrides})
    return config


def _checkpoint(path: Path, seed: int = 0, **overrides) -> tuple[SCNet, Path]:
    config = _config(**overrides)
    torch.manual_seed(seed)
    net = build_from_config(config).eval()
    assert isinstance(net, SCNet)
    return net, save_checkpoint(path, net, config)


def _song(path: Path, seconds: float) -> Path:
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * SR)) / SR
    song = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 331 * t)])
    write_audio(path, song + 0.05 * rng.standard_normal(song.shape), SR, bits=32)
    return path


def _stems(folder: Path, sources) -> torch.Tensor:
    return torch.stack([read_audio(folder / f"{s}.wav")[0] for s in sources])


def _fit(shards: Path, run: Path, *extra: str) -> dict:
    """recipes/scnet.yaml (its loss, optimizer, LR schedule, EMA) on the tiny SCNet, two steps."""
    assert main(["fit", "--config", str(REPO / "recipes" / "scnet.yaml"), *tiny_overrides(shards, run),
                 "--model.net", str(REPO / "configs" / "model" / "scnet_small.yaml"), *TINY_ARGS,
                 "--model.loss.init_args.n_fft", "512", "--model.loss.init_args.hop_length", "128",
                 "--model.loss.init_args.win_length", "512", "--trainer.max_steps", "2",
                 "--data.init_args.epoch_batches", "2", "--trainer.logger=null",
                 "--trainer.callbacks.dirpath", str(run), *extra]) == 0
    ckpt = load_checkpoint(run / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["net"]["class_path"] == "stemsep.models.SCNet"
    trained = load_separator(run / "last.ckpt")
    assert isinstance(trained, SCNet) and trained.dims == TINY["dims"]
    torch.manual_seed(0)
    fresh = SCNet(**_config()["init_args"])
    assert trained.state_dict().keys() == fresh.state_dict().keys()
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in trained.state_dict().items())
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
    results = tmp_path / "results"
    assert main(["test", "--config", str(REPO / "recipes" / "eval.yaml"), *tiny_overrides(shards, tmp_path / "eval"),
                 "--model.net", "stemsep.io.FromCheckpoint", "--model.net.checkpoint", str(run / "last.ckpt"),
                 "--model.test_results_dir", str(results)]) == 0
    assert "test nSDR (dB)" in capsys.readouterr().out
    assert json.loads((results / "summary.json").read_text())
    assert len(list(results.glob("song*.json"))) == 2


def test_separate_writes_what_the_network_returns(tmp_path):
    net, ckpt = _checkpoint(tmp_path / "scnet.ckpt")
    song = _song(tmp_path / "in" / "song.wav", 1.0)
    # one chunk for the whole song: the stems are the network's output on it
    assert main(["separate", str(song), "--model", str(ckpt), "--shifts", "0", "--overlap", "0",
                 "--segment", "2", "--bits", "32", "--device", "cpu", "-o", str(tmp_path / "out")]) == 0
    stems = _stems(tmp_path / "out" / "song", net.sources)
    mix = read_audio(song)[0]
    mono = mix.mean(0)  # `separate` normalises the mix as the reference's inference does
    mean, std = mono.mean(), mono.std()
    with torch.no_grad():
        expected = net(((mix - mean) / std)[None])[0] * std + mean
    assert stems.shape == expected.shape == (4, 2, SR)
    assert expected.abs().max() > 1e-3
    assert (stems - expected).abs().max() < 1e-4


def test_bag_of_two_scnets(tmp_path):
    (a, ckpt_a), (b, ckpt_b) = _checkpoint(tmp_path / "a.ckpt", 1), _checkpoint(tmp_path / "b.ckpt", 2)
    out = tmp_path / "bag.ckpt"
    assert main(["bag", "--models", str(ckpt_a), str(ckpt_b), "--weights", "1,1,1,0", "0,0,0,1", "-o", str(out)]) == 0
    bag = load_separator(out)
    assert isinstance(bag, BagOfModels) and all(isinstance(m, SCNet) for m in bag.models)
    mix = torch.randn(1, 2, 4000)
    with torch.no_grad():
        expected = torch.cat([a(mix)[:, :3], b(mix)[:, 3:]], 1)
        assert (bag(mix) - expected).abs().max() < 1e-5


@pytest.mark.slow  # the bleeding test separates every stem of every song: minutes on two busy cores
def test_audit_with_scnet_as_the_bleeding_model(shards, tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path / "scnet.ckpt")
    keep = tmp_path / "keep.json"
    assert main(["audit", "--shards", str(shards / "train.json"), "--model", str(ckpt), "--segment", "0.5",
                 "--out", str(keep)]) == 0
    result = json.loads(keep.read_text())
    assert sorted(result["keep"] + list(result["drop"])) == [f"song{i:04d}" for i in range(4)]
    assert "kept" in capsys.readouterr().out


def test_quantize_then_separate(tmp_path, capsys):
    net, ckpt = _checkpoint(tmp_path / "f32.ckpt")
    assert main(["quantize", str(ckpt), "-o", str(tmp_path / "int8.ckpt")]) == 0
    quantized = load_separator(tmp_path / "int8.ckpt")  # weights_only=True
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())
    mix = torch.randn(1, 2, 8000)
    with torch.no_grad():
        ref, got = net(mix), quantized(mix)
    error = (ref - got).abs().max() / ref.abs().max()
    assert 0 < error < 0.05  # changed by the rounding of the weights, not broken
    song = _song(tmp_path / "in" / "song.wav", 0.7)
    assert main(["separate", str(song), "--model", str(tmp_path / "int8.ckpt"), "--device", "cpu",
                 "--shifts", "0", "-o", str(tmp_path / "out")]) == 0
    stems = _stems(tmp_path / "out" / "song", net.sources)
    assert stems.shape == (4, 2, int(0.7 * SR)) and torch.isfinite(stems).all()


def test_torchscript_export_runs_the_same_core(tmp_path):
    from stemsep.inference.export import export_model
    from stemsep.inference.exported import load_exported

    net, _ = _checkpoint(tmp_path / "scnet.ckpt")
    meta = export_model(net, tmp_path / "model.pt", "torchscript")
    assert meta["front_end"]["class_path"] == "stemsep.models.scnet.SCNetFrontEnd"
    exported = load_exported(tmp_path / "model.pt", "torchscript")
    length = int(net.segment * SR)
    assert exported.sources == net.sources and exported.length == meta["segment_samples"] == length
    mix = torch.randn(3, 2, length)
    with torch.no_grad():
        expected = net(mix)
        assert (exported(mix) - expected).abs().max() < 1e-4
        assert expected.abs().max() > 1e-3


@pytest.mark.slow  # the torch.export based ONNX exporter takes about a minute on two cores
def test_onnx_separate_matches_torch(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net, ckpt = _checkpoint(tmp_path / "scnet.ckpt", segment=0.25)
    song = _song(tmp_path / "in" / "song.wav", 1.0)
    assert main(["export", str(ckpt), "--format", "onnx", "-o", str(tmp_path / "model.onnx")]) == 0
    assert "exported" in capsys.readouterr().out
    # whole chunks only (the graph's length is fixed): no overlap, the song is 4 segments
    common = [str(song), "--shifts", "0", "--bits", "32", "--overlap", "0", "--batch-size", "3", "--device", "cpu"]
    assert main(["separate", *common, "--model", str(ckpt), "-o", str(tmp_path / "torch")]) == 0
    assert main(["separate", *common, "--model", str(tmp_path / "model.onnx"), "--backend", "onnxruntime",
                 "-o", str(tmp_path / "onnx")]) == 0
    ours, theirs = _stems(tmp_path / "torch" / "song", net.sources), _stems(tmp_path / "onnx" / "song", net.sources)
    assert ours.shape == theirs.shape == (4, 2, SR)
    assert ours.abs().max() > 1e-3
    assert (ours - theirs).abs().max() < 1e-4
