"""Every stemsep tool on a small network: the steps and checks the per-architecture tool tests share.

A network here is a ``configs/model/<name>.yaml`` config with some ``init_args`` replaced (random
weights), small enough that each tool runs in seconds on a CPU. Each ``check_*`` function runs one
tool (``separate``, ``test``, ``bag``, ``quantize``, ``export``) and asserts what it must produce.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from helpers import REPO
from helpers.recipes import tiny_overrides
from stemsep.cli import main
from stemsep.inference.bag import BagOfModels
from stemsep.io.audio import read_audio, write_audio
from stemsep.io.checkpoint import build_from_config, load_checkpoint, load_separator, save_checkpoint

SR = 44100


def small_config(name: str, **init_args) -> dict:
    """``configs/model/<name>.yaml`` with ``init_args`` replaced."""
    config = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())
    config["init_args"].update(init_args)
    return config


def small_network(name: str, seed: int = 0, **init_args) -> tuple[torch.nn.Module, dict]:
    """The network of ``small_config(name, **init_args)`` with seeded random weights (eval mode), and its config."""
    config = small_config(name, **init_args)
    torch.manual_seed(seed)
    return build_from_config(config).eval(), config


def small_checkpoint(name: str, path: Path, seed: int = 0, **init_args) -> tuple[torch.nn.Module, Path]:
    """``small_network`` saved as a stemsep checkpoint at ``path``."""
    net, config = small_network(name, seed, **init_args)
    return net, save_checkpoint(path, net, config)


def net_args(init_args: dict) -> list[str]:
    """``--model.net.init_args.<key> <json value>`` for each of ``init_args`` (LightningCLI overrides)."""
    return [arg for key, value in init_args.items() for arg in (f"--model.net.init_args.{key}", json.dumps(value))]


def song(path: Path, seconds: float) -> Path:
    """A 32-bit stereo WAV of two tones and some noise."""
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * SR)) / SR
    tones = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 331 * t)])
    write_audio(path, tones + 0.05 * rng.standard_normal(tones.shape), SR, bits=32)
    return path


def stems(folder: Path, sources) -> torch.Tensor:
    """The ``<source>.wav`` files ``separate`` wrote in ``folder``, stacked in ``sources`` order."""
    return torch.stack([read_audio(folder / f"{s}.wav")[0] for s in sources])


def check_trained(run: Path, cls: type, config: dict) -> tuple[dict, torch.nn.Module]:
    """A two-step ``fit`` into ``run``: ``last.ckpt`` holds a ``cls`` whose weights moved from the
    seed-0 initialisation of ``config``. Returns the checkpoint and the trained network."""
    ckpt = load_checkpoint(run / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["net"]["class_path"] == f"stemsep.models.{cls.__name__}"
    trained = load_separator(run / "last.ckpt")
    assert isinstance(trained, cls)
    torch.manual_seed(0)
    fresh = cls(**config["init_args"])
    assert trained.state_dict().keys() == fresh.state_dict().keys()
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in trained.state_dict().items())
    return ckpt, trained


def check_test_command(ckpt: Path, shards: Path, tmp_path: Path, capsys, *extra: str) -> Path:
    """``stemsep test`` (recipes/eval.yaml) scores ``ckpt`` and writes a summary; returns the results folder."""
    results = tmp_path / "results"
    assert main(["test", "--config", str(REPO / "recipes" / "eval.yaml"), *tiny_overrides(shards, tmp_path / "eval"),
                 "--model.net", "stemsep.io.FromCheckpoint", "--model.net.checkpoint", str(ckpt),
                 "--model.test_results_dir", str(results), *extra]) == 0
    assert "test nSDR (dB)" in capsys.readouterr().out
    assert json.loads((results / "summary.json").read_text())
    return results


def check_separate_writes_what_the_network_returns(net: torch.nn.Module, ckpt: Path, tmp_path: Path) -> None:
    """One chunk for a whole 1 s song: the stems ``separate`` writes are the network's output on it."""
    mix_file = song(tmp_path / "in" / "song.wav", 1.0)
    assert main(["separate", str(mix_file), "--model", str(ckpt), "--shifts", "0", "--overlap", "0",
                 "--segment", "2", "--bits", "32", "--device", "cpu", "-o", str(tmp_path / "out")]) == 0
    written = stems(tmp_path / "out" / "song", net.sources)
    mix = read_audio(mix_file)[0]
    mono = mix.mean(0)  # `separate` normalises the mix as the reference's inference does
    mean, std = mono.mean(), mono.std()
    with torch.no_grad():
        expected = net(((mix - mean) / std)[None])[0] * std + mean
    assert written.shape == expected.shape == (4, 2, SR)
    assert expected.abs().max() > 1e-3
    assert (written - expected).abs().max() < 1e-4


def check_bag_of_two(a: torch.nn.Module, ckpt_a: Path, b: torch.nn.Module, ckpt_b: Path, cls: type,
                     tmp_path: Path) -> None:
    """``bag`` of two checkpoints (three sources from ``a``, the last from ``b``) separates as the weights say."""
    out = tmp_path / "bag.ckpt"
    assert main(["bag", "--models", str(ckpt_a), str(ckpt_b), "--weights", "1,1,1,0", "0,0,0,1", "-o", str(out)]) == 0
    bag = load_separator(out)
    assert isinstance(bag, BagOfModels) and all(isinstance(m, cls) for m in bag.models)
    mix = torch.randn(1, 2, 4000)
    with torch.no_grad():
        expected = torch.cat([a(mix)[:, :3], b(mix)[:, 3:]], 1)
        assert (bag(mix) - expected).abs().max() < 1e-5


def check_quantize_then_separate(net: torch.nn.Module, ckpt: Path, tmp_path: Path, max_error: float) -> None:
    """``quantize`` to dynamic int8 Linear layers: outputs change by under ``max_error`` (relative), and
    the quantized checkpoint separates a song."""
    assert main(["quantize", str(ckpt), "-o", str(tmp_path / "int8.ckpt")]) == 0
    quantized = load_separator(tmp_path / "int8.ckpt")  # weights_only=True
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())
    mix = torch.randn(1, 2, 8000)
    with torch.no_grad():
        ref, got = net(mix), quantized(mix)
    error = (ref - got).abs().max() / ref.abs().max()
    assert 0 < error < max_error  # changed by the rounding of the weights, not broken
    mix_file = song(tmp_path / "in" / "song.wav", 0.7)
    assert main(["separate", str(mix_file), "--model", str(tmp_path / "int8.ckpt"), "--device", "cpu",
                 "--shifts", "0", "-o", str(tmp_path / "out")]) == 0
    written = stems(tmp_path / "out" / "song", net.sources)
    assert written.shape == (4, 2, int(0.7 * SR)) and torch.isfinite(written).all()


def check_torchscript_export(net: torch.nn.Module, tmp_path: Path, front_end: str) -> dict:
    """TorchScript export of the core behind front end ``front_end`` separates whole segments as ``net``
    does; returns the export's metadata."""
    from stemsep.inference.export import export_model
    from stemsep.inference.exported import load_exported

    meta = export_model(net, tmp_path / "model.pt", "torchscript")
    assert meta["front_end"]["class_path"] == front_end
    exported = load_exported(tmp_path / "model.pt", "torchscript")
    length = int(net.segment * SR)
    assert exported.sources == net.sources and exported.length == meta["segment_samples"] == length
    mix = torch.randn(3, 2, length)
    with torch.no_grad():
        expected = net(mix)
        assert (exported(mix) - expected).abs().max() < 1e-4
        assert expected.abs().max() > 1e-3
    return meta


def check_onnx_separate_matches_torch(net: torch.nn.Module, ckpt: Path, tmp_path: Path, capsys, *,
                                      seconds: float = 1.0, options: tuple[str, ...] = ()) -> None:
    """``export --format onnx`` then ``separate`` with onnxruntime writes the stems the torch model writes
    (``options``: extra ``separate`` options for both runs). Needs onnxruntime and onnxscript."""
    mix_file = song(tmp_path / "in" / "song.wav", seconds)
    assert main(["export", str(ckpt), "--format", "onnx", "-o", str(tmp_path / "model.onnx")]) == 0
    assert "exported" in capsys.readouterr().out
    common = [str(mix_file), "--shifts", "0", "--bits", "32", "--batch-size", "3", *options]
    assert main(["separate", *common, "--model", str(ckpt), "-o", str(tmp_path / "torch")]) == 0
    assert main(["separate", *common, "--model", str(tmp_path / "model.onnx"), "--backend", "onnxruntime",
                 "-o", str(tmp_path / "onnx")]) == 0
    ours, theirs = stems(tmp_path / "torch" / "song", net.sources), stems(tmp_path / "onnx" / "song", net.sources)
    assert ours.shape == theirs.shape == (4, 2, int(seconds * SR))
    assert ours.abs().max() > 1e-3  # a real signal, not silence on both sides
    assert (ours - theirs).abs().max() < 1e-4, f"max abs difference {float((ours - theirs).abs().max()):.3g}"
