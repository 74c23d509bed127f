"""Every stemsep tool on HS-TasNet: fit (recipes/hstasnet.yaml, and the quickstart recipe until nSDR
improves), test, separate, bag, quantize, export (TorchScript; ONNX in the slow suite).

The network is configs/model/hstasnet_tiny.yaml (the paper's 1024/512 framing, 32 units, 64 basis;
random weights), with half-second segments where a fit needs them, so that each tool runs in seconds
on a CPU.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from helpers import REPO, tools
from helpers.recipes import tiny_overrides
from stemsep.cli import main
from stemsep.io.checkpoint import save_checkpoint
from stemsep.models import HSTasNet

NAME = "hstasnet_tiny"
SEGMENT = {"segment": 0.5}  # the data's in tiny_overrides: the network's must agree


def _config(**overrides) -> dict:
    return tools.small_config(NAME, **overrides)


def _checkpoint(path: Path, seed: int = 0, **overrides) -> tuple[HSTasNet, Path]:
    """The tiny network, seeded, saved at ``path``. Its mask heads start at identity (zero weights) as the
    reference's, so every source would be the same: they get small random weights."""
    net, config = tools.small_network(NAME, seed, **overrides)
    assert isinstance(net, HSTasNet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (net.to_spec_masks[1], net.to_waveform_masks[1]):
            head.weight.normal_(0, 0.05, generator=generator)
    return net, save_checkpoint(path, net, config)


def _fit_args(recipe: str, shards: Path, run: Path) -> list[str]:
    return ["fit", "--config", str(REPO / "recipes" / recipe), *tiny_overrides(shards, run),
            "--model.net", str(REPO / "configs" / "model" / f"{NAME}.yaml"), *tools.net_args(SEGMENT)]


def _fit(shards: Path, run: Path, *extra: str) -> dict:
    """recipes/hstasnet.yaml (its loss, optimizer, clipping, EMA, early stopping) on the tiny HS-TasNet, two steps."""
    assert main([*_fit_args("hstasnet.yaml", shards, run), "--trainer.max_steps", "2",
                 "--data.init_args.epoch_batches", "2", "--data.init_args.num_workers", "0",
                 "--trainer.logger=null", "--trainer.callbacks.dirpath", str(run), *extra]) == 0
    ckpt, _ = tools.check_trained(run, HSTasNet, _config(**SEGMENT))
    return ckpt


def test_fit_recipe_two_steps(shards, tmp_path):
    ckpt = _fit(shards, tmp_path / "run", "--trainer.limit_val_batches", "0")
    assert ckpt["hyper_parameters"]["net"]["init_args"]["overlap_len"] == 512


@pytest.mark.slow  # validation and test separate whole songs
def test_fit_with_validation_then_test(shards, tmp_path, capsys):
    run = tmp_path / "run"
    _fit(shards, run, "--trainer.limit_val_batches", "1")
    assert "valid nSDR (dB)" in capsys.readouterr().out
    results = tools.check_test_command(run / "last.ckpt", shards, tmp_path, capsys)
    assert len(list(results.glob("song*.json"))) == 2


def _mean_nsdr_by_epoch(out: str) -> list[float]:
    return [float(m) for m in re.findall(r"^valid nSDR \(dB\) epoch \d+: .*  mean (-?[\d.]+)$", out, re.MULTILINE)]


def test_fit_improves_nsdr_over_its_first_validation(shards, tmp_path, capsys):
    """The quickstart recipe (Adam, OneCycleLR) with the tiny HS-TasNet on the synthetic corpus: the
    mean validation nSDR of the last epoch is above that of the first."""
    run = tmp_path / "run"
    assert main([*_fit_args("quickstart.yaml", shards, run), "--trainer.max_epochs", "6",
                 "--data.init_args.epoch_batches", "10", "--model.scheduler.init_args.total_steps", "60",
                 "--trainer.callbacks.dirpath", str(run)]) == 0
    means = _mean_nsdr_by_epoch(capsys.readouterr().out)
    assert len(means) == 6, means
    assert means[-1] > means[0] + 0.5, means


def test_test_command_scores_a_checkpoint(shards, tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path / "model.ckpt")
    tools.check_test_command(ckpt, shards, tmp_path, capsys, "--data.init_args.test_manifest",
                             str(shards / "test.json"), "--trainer.limit_test_batches", "1")


def test_separate_writes_what_the_network_returns(tmp_path):
    tools.check_separate_writes_what_the_network_returns(*_checkpoint(tmp_path / "model.ckpt"), tmp_path)


def test_bag_of_two(tmp_path):
    (a, ckpt_a), (b, ckpt_b) = _checkpoint(tmp_path / "a.ckpt", 1), _checkpoint(tmp_path / "b.ckpt", 2)
    tools.check_bag_of_two(a, ckpt_a, b, ckpt_b, HSTasNet, tmp_path)


def test_quantize_then_separate(tmp_path):
    tools.check_quantize_then_separate(*_checkpoint(tmp_path / "f32.ckpt"), tmp_path, max_error=0.1)


def test_torchscript_export_runs_the_same_core(tmp_path):
    net, _ = _checkpoint(tmp_path / "model.ckpt")
    meta = tools.check_torchscript_export(net, tmp_path, "stemsep.models.hstasnet.HSTasNetFrontEnd")
    assert meta["inputs"] == ["audio", "spec"] and meta["outputs"] == ["spec_out", "wave"]


@pytest.mark.slow  # the torch.export based ONNX exporter takes over a minute on two cores (the LSTMs)
def test_onnx_separate_matches_torch(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net, ckpt = _checkpoint(tmp_path / "model.ckpt", segment=0.25)
    # whole chunks only (the graph's length is fixed): no overlap, the song is 4 segments
    tools.check_onnx_separate_matches_torch(net, ckpt, tmp_path, capsys,
                                            options=("--overlap", "0", "--device", "cpu"))
