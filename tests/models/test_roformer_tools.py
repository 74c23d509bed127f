"""Every stemsep tool on BS-RoFormer and Mel-Band RoFormer: fit, separate, test, bag, export, quantize.

The networks are configs/model/{bs,mel_band}_roformer_small.yaml made smaller still (random
weights: width 8, one block, a 512-point STFT), so that each tool runs in seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import REPO, tools
from helpers.recipes import tiny_overrides
from stemsep.cli import main
from stemsep.contract import network_config
from stemsep.inference.exported import _has_reducing_scatter
from stemsep.io.checkpoint import load_checkpoint, load_separator, save_checkpoint
from stemsep.models import BSRoFormer, MelBandRoFormer

COMMON = {"dim": 8, "depth": 1, "dim_head": 8, "heads": 2, "stft_n_fft": 512, "stft_hop_length": 128,
          "stft_win_length": 512, "mlp_expansion_factor": 1, "segment": 0.5}
FAMILIES = {
    "bs": (BSRoFormer, "bs_roformer_small", {**COMMON, "freqs_per_bands": [16] * 15 + [17]}),
    "mel": (MelBandRoFormer, "mel_band_roformer_small", {**COMMON, "num_bands": 8}),
}


def _config(family: str, **overrides) -> dict:
    _, name, tiny = FAMILIES[family]
    return tools.small_config(name, **{**tiny, **overrides})


def _checkpoint(family: str, path: Path, seed: int = 0, **overrides):
    cls, name, tiny = FAMILIES[family]
    net, ckpt = tools.small_checkpoint(name, path, seed, **{**tiny, **overrides})
    assert isinstance(net, cls)
    return net, ckpt


def _fit_args(family: str, shards: Path, run: Path) -> list[str]:
    """The quickstart recipe with the tiny RoFormer as model.net."""
    _, name, tiny = FAMILIES[family]
    return ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), *tiny_overrides(shards, run),
            "--model.net", str(REPO / "configs" / "model" / f"{name}.yaml"), *tools.net_args(tiny)]


def _fit(family: str, shards: Path, run: Path, *extra: str) -> dict:
    """The quickstart recipe with the tiny RoFormer as model.net, two training steps."""
    assert main([*_fit_args(family, shards, run),
                 "--trainer.max_steps", "2", "--trainer.max_epochs", "1", "--data.init_args.epoch_batches", "2",
                 "--trainer.logger=null", "--trainer.callbacks.dirpath", str(run), *extra]) == 0
    ckpt, _ = tools.check_trained(run, FAMILIES[family][0], _config(family))
    return ckpt


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_two_steps(family, shards, tmp_path):
    _fit(family, shards, tmp_path / "run", "--trainer.limit_val_batches", "0")


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_fast_dev_run_with_block_checkpointing(family, shards, tmp_path, capsys):
    assert main([*_fit_args(family, shards, tmp_path),
                 "--model.net.init_args.checkpoint_blocks", "true", "--trainer.fast_dev_run", "1"]) == 0
    assert "valid nSDR (dB)" in capsys.readouterr().out


@pytest.mark.slow  # validation and test separate whole songs: about a minute on two cores
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_with_validation_then_test(family, shards, tmp_path, capsys):
    run = tmp_path / "run"
    _fit(family, shards, run, "--trainer.limit_val_batches", "1")
    results = tools.check_test_command(run / "last.ckpt", shards, tmp_path, capsys)
    assert len(list(results.glob("song*.json"))) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_test_command_scores_a_checkpoint(family, shards, tmp_path, capsys):
    _, ckpt = _checkpoint(family, tmp_path / "model.ckpt")
    tools.check_test_command(ckpt, shards, tmp_path, capsys, "--data.init_args.test_manifest",
                             str(shards / "test.json"), "--trainer.limit_test_batches", "1")


@pytest.mark.parametrize("family", FAMILIES)
def test_separate_writes_what_the_network_returns(family, tmp_path):
    tools.check_separate_writes_what_the_network_returns(*_checkpoint(family, tmp_path / "model.ckpt"), tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_bag_of_two(family, tmp_path):
    (a, ckpt_a), (b, ckpt_b) = (_checkpoint(family, tmp_path / "a.ckpt", 1),
                                _checkpoint(family, tmp_path / "b.ckpt", 2))
    tools.check_bag_of_two(a, ckpt_a, b, ckpt_b, FAMILIES[family][0], tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_quantize_then_separate(family, tmp_path):
    tools.check_quantize_then_separate(*_checkpoint(family, tmp_path / "f32.ckpt"), tmp_path, max_error=0.1)


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_export_runs_the_same_core(family, tmp_path):
    net, _ = _checkpoint(family, tmp_path / "model.ckpt")
    meta = tools.check_torchscript_export(net, tmp_path, "stemsep.models.roformer.base.RoFormerFrontEnd")
    assert meta["inputs"] == ["spec"] and meta["outputs"] == ["masks"]


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_separate_matches_torch(family, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net, ckpt = _checkpoint(family, tmp_path / "model.ckpt", segment=0.25)
    # whole chunks only (the graph's length is fixed): no overlap, the song is 4 segments
    tools.check_onnx_separate_matches_torch(net, ckpt, tmp_path, capsys,
                                            options=("--overlap", "0", "--device", "cpu"))
    # Mel's overlapping bands are summed by a reducing scatter: onnxruntime runs such graphs on one
    # thread (its multithreaded ScatterND races on repeated indices; a full-suite run saw > 1e-4).
    assert _has_reducing_scatter(tmp_path / "model.onnx") == (family == "mel")


# The reference's multi-resolution STFT loss settings at its defaults, as community configs pass them (YAML lists).
REFERENCE_LOSS_DEFAULTS = {"multi_stft_resolution_loss_weight": 1.0,
                           "multi_stft_resolutions_window_sizes": [4096, 2048, 1024, 512, 256],
                           "multi_stft_hop_size": 147, "multi_stft_normalized": False, "multi_stft_window_fn": None}


def _loss_warnings(record) -> list:
    return [w for w in record if "multi_stft" in str(w.message)]


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_loss_settings_are_accepted_and_have_no_effect(family, tmp_path, recwarn):
    """``multi_stft_*`` configure the reference's in-forward loss; here the loss is ``model.loss``:
    the reference's defaults pass quietly, other values warn once, and the config keeps them."""
    cls, _, tiny = FAMILIES[family]
    torch.manual_seed(0)
    plain = cls(**tiny, **REFERENCE_LOSS_DEFAULTS)
    assert not _loss_warnings(recwarn)
    with pytest.warns(UserWarning) as record:
        torch.manual_seed(0)
        changed = cls(**tiny, multi_stft_hop_size=100, multi_stft_resolutions_window_sizes=(1024, 256))
    (warning,) = _loss_warnings(record)
    message = str(warning.message)
    assert "\n" not in message and warning.filename == __file__  # one line, pointing at the caller
    assert "multi_stft_hop_size=100 have no effect" in message and "model.loss" in message
    assert "MultiResolutionL1Loss with window_sizes: (1024, 256), hop_length: 100" in message
    assert "multi_stft_resolution_loss_weight" not in message  # left at its default
    assert not any(key.startswith("multi_stft") for key in vars(changed))  # not stored: nothing reads them
    mix = torch.randn(1, changed.audio_channels, 4000)
    with torch.no_grad():
        torch.testing.assert_close(changed.eval()(mix), plain.eval()(mix), rtol=0, atol=0)
    # the config still records them, and a checkpoint rebuilds the network from it
    save_checkpoint(tmp_path / "model.ckpt", changed, network_config(changed))
    recorded = load_checkpoint(tmp_path / "model.ckpt")["hyper_parameters"]["net"]["init_args"]
    assert recorded["multi_stft_hop_size"] == 100
    with pytest.warns(UserWarning, match="multi_stft_hop_size=100 have no effect"):
        loaded = load_separator(tmp_path / "model.ckpt")
    assert loaded.init_args["multi_stft_resolutions_window_sizes"] == (1024, 256)
