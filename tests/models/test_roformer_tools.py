"""Every stemsep tool on BS-RoFormer and Mel-Band RoFormer: fit, separate, test, bag, export, quantize.

The networks are configs/model/{bs,mel_band}_roformer_small.yaml made smaller still (random
weights: width 8, one block, a 512-point STFT), so that each tool runs in seconds on a CPU.
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
from stemsep.models import BSRoFormer, MelBandRoFormer

SR = 44100
COMMON = {"dim": 8, "depth": 1, "dim_head": 8, "heads": 2, "stft_n_fft": 512, "stft_hop_length": 128,
          "stft_win_length": 512, "mlp_expansion_factor": 1, "segment": 0.5}
FAMILIES = {
    "bs": (BSRoFormer, "bs_roformer_small", {**COMMON, "freqs_per_bands": [16] * 15 + [17]}),
    "mel": (MelBandRoFormer, "mel_band_roformer_small", {**COMMON, "num_bands": 8}),
}


def _config(family: str, **overrides) -> dict:
    _, name, tiny = FAMILIES[family]
    config = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())
    config["init_args"].update({**tiny, **overrides})
    return config


def _checkpoint(family: str, path: Path, seed: int = 0, **overrides):
    config = _config(family, **overrides)
    torch.manual_seed(seed)
    net = build_from_config(config).eval()
    assert isinstance(net, FAMILIES[family][0])
    return net, save_checkpoint(path, net, config)


def _song(path: Path, seconds: float) -> Path:
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * SR)) / SR
    song = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 331 * t)])
    write_audio(path, song + 0.05 * rng.standard_normal(song.shape), SR, bits=32)
    return path


def _stems(folder: Path, sources) -> torch.Tensor:
    return torch.stack([read_audio(folder / f"{s}.wav")[0] for s in sources])


def _fit(family: str, shards: Path, run: Path, *extra: str) -> dict:
    """The quickstart recipe with the tiny RoFormer as model.net, two training steps."""
    cls, name, tiny = FAMILIES[family]
    net_args = [arg for key, value in tiny.items() for arg in (f"--model.net.init_args.{key}", json.dumps(value))]
    assert main(["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), *tiny_overrides(shards, run),
                 "--model.net", str(REPO / "configs" / "model" / f"{name}.yaml"), *net_args,
                 "--trainer.max_steps", "2", "--trainer.max_epochs", "1", "--data.init_args.epoch_batches", "2",
                 "--trainer.logger=null", "--trainer.callbacks.dirpath", str(run), *extra]) == 0
    ckpt = load_checkpoint(run / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["net"]["class_path"] == f"stemsep.models.{cls.__name__}"
    trained = load_separator(run / "last.ckpt")
    assert isinstance(trained, cls)
    torch.manual_seed(0)
    fresh = cls(**_config(family)["init_args"])
    assert trained.state_dict().keys() == fresh.state_dict().keys()
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in trained.state_dict().items())
    return ckpt


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_two_steps(family, shards, tmp_path):
    _fit(family, shards, tmp_path / "run", "--trainer.limit_val_batches", "0")


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_fast_dev_run_with_block_checkpointing(family, shards, tmp_path, capsys):
    cls, name, tiny = FAMILIES[family]
    net_args = [arg for key, value in tiny.items() for arg in (f"--model.net.init_args.{key}", json.dumps(value))]
    assert main(["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), *tiny_overrides(shards, tmp_path),
                 "--model.net", str(REPO / "configs" / "model" / f"{name}.yaml"), *net_args,
                 "--model.net.init_args.checkpoint_blocks", "true", "--trainer.fast_dev_run", "1"]) == 0
    assert "valid nSDR (dB)" in capsys.readouterr().out


@pytest.mark.slow  # validation and test separate whole songs: about a minute on two cores
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_with_validation_then_test(family, shards, tmp_path, capsys):
    run = tmp_path / "run"
    _fit(family, shards, run, "--trainer.limit_val_batches", "1")
    results = tmp_path / "results"
    assert main(["test", "--config", str(REPO / "recipes" / "eval.yaml"), *tiny_overrides(shards, tmp_path / "eval"),
                 "--model.net", "stemsep.io.FromCheckpoint", "--model.net.checkpoint", str(run / "last.ckpt"),
                 "--model.test_results_dir", str(results)]) == 0
    assert "test nSDR (dB)" in capsys.readouterr().out
    assert json.loads((results / "summary.json").read_text())
    assert len(list(results.glob("song*.json"))) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_test_command_scores_a_checkpoint(family, shards, tmp_path, capsys):
    _, ckpt = _checkpoint(family, tmp_path / "model.ckpt")
    results = tmp_path / "results"
    assert main(["test", "--config", str(REPO / "recipes" / "eval.yaml"), *tiny_overrides(shards, tmp_path / "eval"),
                 "--model.net", "stemsep.io.FromCheckpoint", "--model.net.checkpoint", str(ckpt),
                 "--model.test_results_dir", str(results), "--data.init_args.test_manifest",
                 str(shards / "test.json"), "--trainer.limit_test_batches", "1"]) == 0
    assert "test nSDR (dB)" in capsys.readouterr().out
    assert json.loads((results / "summary.json").read_text())


@pytest.mark.parametrize("family", FAMILIES)
def test_separate_writes_what_the_network_returns(family, tmp_path):
    net, ckpt = _checkpoint(family, tmp_path / "model.ckpt")
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


@pytest.mark.parametrize("family", FAMILIES)
def test_bag_of_two(family, tmp_path):
    (a, ckpt_a), (b, ckpt_b) = (_checkpoint(family, tmp_path / "a.ckpt", 1),
                                _checkpoint(family, tmp_path / "b.ckpt", 2))
    out = tmp_path / "bag.ckpt"
    assert main(["bag", "--models", str(ckpt_a), str(ckpt_b), "--weights", "1,1,1,0", "0,0,0,1", "-o", str(out)]) == 0
    bag = load_separator(out)
    assert isinstance(bag, BagOfModels) and all(isinstance(m, FAMILIES[family][0]) for m in bag.models)
    mix = torch.randn(1, 2, 4000)
    with torch.no_grad():
        expected = torch.cat([a(mix)[:, :3], b(mix)[:, 3:]], 1)
        assert (bag(mix) - expected).abs().max() < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_quantize_then_separate(family, tmp_path):
    net, ckpt = _checkpoint(family, tmp_path / "f32.ckpt")
    assert main(["quantize", str(ckpt), "-o", str(tmp_path / "int8.ckpt")]) == 0
    quantized = load_separator(tmp_path / "int8.ckpt")  # weights_only=True
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())
    mix = torch.randn(1, 2, 8000)
    with torch.no_grad():
        ref, got = net(mix), quantized(mix)
    error = (ref - got).abs().max() / ref.abs().max()
    assert 0 < error < 0.1  # changed by the rounding of the weights, not broken
    song = _song(tmp_path / "in" / "song.wav", 0.7)
    assert main(["separate", str(song), "--model", str(tmp_path / "int8.ckpt"), "--device", "cpu",
                 "--shifts", "0", "-o", str(tmp_path / "out")]) == 0
    stems = _stems(tmp_path / "out" / "song", net.sources)
    assert stems.shape == (4, 2, int(0.7 * SR)) and torch.isfinite(stems).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_export_runs_the_same_core(family, tmp_path):
    from stemsep.inference.export import export_model
    from stemsep.inference.exported import load_exported

    net, _ = _checkpoint(family, tmp_path / "model.ckpt")
    meta = export_model(net, tmp_path / "model.pt", "torchscript")
    assert meta["front_end"]["class_path"] == "stemsep.models.roformer.base.RoFormerFrontEnd"
    assert meta["inputs"] == ["spec"] and meta["outputs"] == ["masks"]
    exported = load_exported(tmp_path / "model.pt", "torchscript")
    length = int(net.segment * SR)
    assert exported.sources == net.sources and exported.length == meta["segment_samples"] == length
    mix = torch.randn(3, 2, length)
    with torch.no_grad():
        expected = net(mix)
        assert (exported(mix) - expected).abs().max() < 1e-4
        assert expected.abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_separate_matches_torch(family, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net, ckpt = _checkpoint(family, tmp_path / "model.ckpt", segment=0.25)
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
