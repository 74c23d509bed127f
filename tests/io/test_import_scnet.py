"""``stemsep import-checkpoint --model-type scnet``: the reference's ``.th`` packages (with its
``conf/config.yaml``) and MSST's SCNet checkpoints become stemsep checkpoints, safely.

The weights are the reference's own (tests/fixtures/scnet/small.pt, written by the reference
code), so an imported package must reproduce the reference's outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers.imports import RunsShell, import_error
from stemsep.cli import main
from stemsep.io.checkpoint import load_checkpoint, load_separator
from stemsep.models import SCNet

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "scnet" / "small.pt"
TOL = 1e-4


@pytest.fixture(scope="module")
def small() -> dict:
    return torch.load(FIXTURE, weights_only=True)


def reference_config(path: Path, model: dict) -> Path:
    """A config in the layout of the reference's conf/config.yaml (data:, model:, optim:, ...)."""
    config = {"data": {"wav": "/data/musdbhq", "samplerate": 44100, "segment": 11, "shift": 1, "channels": 2,
                       "normalize": True, "sources": list(model["sources"])},
              "ema": {"epoch": [0.9, 0.95], "batch": [0.9995, 0.9999]},
              "model": dict(model), "epochs": 200, "batch_size": 4,
              "optim": {"lr": 0.0005, "decay_rate": 0.98, "decay_step": 10, "optim": "adam"}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def solver_package(best: dict, last: dict, config: dict) -> dict:
    """What the reference's solver saves (``Solver._serialize``): weights, optimizer, EMA states."""
    net = SCNet(**config)
    net.load_state_dict(last)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
    net(torch.randn(1, 2, 2048)).square().mean().backward()
    optimizer.step()
    return {"state": last, "best_nsdr": 4.25, "best_state": best, "optimizer": optimizer.state_dict(), "epoch": 3,
            "ema_batch_0": {"state": {k: v.clone() for k, v in last.items()}, "count": 12.5},
            "ema_epoch_0": {"state": {k: v.clone() for k, v in best.items()}, "count": 2.0}}


def test_reference_package_round_trips_to_the_reference_outputs(small, tmp_path, capsys):
    best = small["state_dict"]
    last = {k: v + 0.01 for k, v in best.items()}  # the last epoch: not what the reference's loader takes
    torch.save(solver_package(best, last, small["config"]), tmp_path / "SCNet.th")
    config = reference_config(tmp_path / "config.yaml", small["config"])
    out = tmp_path / "scnet.ckpt"
    assert main(["import-checkpoint", str(tmp_path / "SCNet.th"), "--config", str(config), "--model-type", "scnet",
                 "-o", str(out)]) == 0
    assert "stemsep.models.SCNet" in capsys.readouterr().out
    net = load_separator(out)  # a stemsep checkpoint: weights_only, rebuilt from class path + init args
    assert isinstance(net, SCNet) and net.segment == 11 and net.samplerate == 44100
    assert all(torch.equal(net.state_dict()[k], v) for k, v in best.items())  # best_state, loaded strictly
    for mix, expected in zip(small["inputs"], small["outputs"], strict=True):
        with torch.no_grad():
            assert (net(mix) - expected).abs().max().item() <= TOL
    provenance = load_checkpoint(out)["hyper_parameters"]["imported_from"]
    assert provenance["model_type"] == "scnet" and provenance["file"] == "SCNet.th"


def test_package_without_best_state_and_data_parallel_names(small, tmp_path):
    """``best_state`` is None until a validation improves: the last ``state`` is taken; ``module.`` dropped."""
    state = {f"module.{k}": v for k, v in small["state_dict"].items()}
    torch.save({"state": state, "best_state": None, "epoch": 0, "best_nsdr": 0}, tmp_path / "checkpoint.th")
    config = reference_config(tmp_path / "config.yaml", small["config"])
    assert main(["import-checkpoint", str(tmp_path / "checkpoint.th"), "--config", str(config),
                 "--model-type", "scnet", "-o", str(tmp_path / "out.ckpt")]) == 0
    net = load_separator(tmp_path / "out.ckpt")
    with torch.no_grad():
        assert (net(small["inputs"][0]) - small["outputs"][0]).abs().max().item() <= TOL


def test_msst_style_state_dict_and_config(small, tmp_path):
    torch.save(small["state_dict"], tmp_path / "scnet_msst.ckpt")
    config = {"audio": {"chunk_size": 485100, "num_channels": 2, "sample_rate": 44100, "min_mean_abs": 0.0},
              "model": dict(small["config"]),
              "training": {"batch_size": 6, "instruments": list(small["config"]["sources"]), "target_instrument": None,
                           "lr": 5.0e-04, "optimizer": "adam"},
              "inference": {"batch_size": 8, "num_overlap": 4}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["import-checkpoint", str(tmp_path / "scnet_msst.ckpt"), "--config", str(tmp_path / "config.yaml"),
                 "--model-type", "scnet", "-o", str(tmp_path / "out.ckpt")]) == 0
    net = load_separator(tmp_path / "out.ckpt")
    assert net.segment == 11
    with torch.no_grad():
        assert (net(small["inputs"][1]) - small["outputs"][1]).abs().max().item() <= TOL


def test_wrong_layout_is_a_one_line_error(small, tmp_path, capsys):
    state = dict(small["state_dict"])
    del state["decoder.0.0.conv.bias"]
    torch.save({"best_state": state}, tmp_path / "SCNet.th")
    config = reference_config(tmp_path / "config.yaml", small["config"])
    err = import_error(tmp_path / "SCNet.th", config, "scnet", tmp_path / "out.ckpt", capsys)
    assert "SCNet.th" in err and "decoder.0.0.conv.bias" in err, err
    assert not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_package_is_refused_without_running(small, tmp_path, capsys, zip_format):
    marker = tmp_path / "PWNED"
    package = {"best_state": dict(small["state_dict"]), "epoch": 3, "hook": RunsShell(marker)}
    torch.save(package, tmp_path / "SCNet.th", _use_new_zipfile_serialization=zip_format)
    config = reference_config(tmp_path / "config.yaml", small["config"])
    err = import_error(tmp_path / "SCNet.th", config, "scnet", tmp_path / "out.ckpt", capsys)
    assert err.startswith("stemsep: error: ") and "SCNet.th" in err, err
    assert "refused" in err
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()
