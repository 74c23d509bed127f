"""Parity of our SCNet with the reference implementation (github.com/starrytong/SCNet).

The reference is not a dependency: tests/fixtures/make_scnet_fixture.py ran it once and stored
its random-init weights, inputs and outputs for a small configuration, and the ``state_dict``
layout and parameter count of SCNet and SCNet-large (tests/fixtures/scnet).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from stemsep.errors import StemsepError
from stemsep.models import SCNet

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "scnet"
TOL = 1e-4
# The reference implementation's parameter counts (measured by the fixture script).
COUNTS = {"default": 10_578_768, "large": 42_181_232}


@pytest.fixture(scope="module")
def small() -> dict:
    return torch.load(FIXTURE / "small.pt", weights_only=True)


@pytest.fixture(scope="module")
def layouts() -> dict:
    return json.loads((FIXTURE / "layouts.json").read_text())


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_small_config_matches_reference_outputs(small):
    net = SCNet(**small["config"]).eval()
    net.load_state_dict(small["state_dict"], strict=True)
    assert _count(net) == small["parameters"]
    for mix, expected in zip(small["inputs"], small["outputs"], strict=True):
        with torch.no_grad():
            got = net(mix)
        assert got.shape == expected.shape == (mix.shape[0], 4, 2, mix.shape[-1])
        assert (got - expected).abs().max().item() <= TOL
        assert expected.abs().max().item() > 1e-2  # a real signal, not zeros on both sides


def test_small_config_differs_with_other_weights(small):
    """The comparison can fail: perturbed weights give another output."""
    net = SCNet(**small["config"]).eval()
    state = dict(small["state_dict"])
    key = "decoder.2.0.conv.weight"
    state[key] = state[key] * 1.5
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        got = net(small["inputs"][0])
    assert (got - small["outputs"][0]).abs().max().item() > TOL


@pytest.mark.parametrize("name", ["default", "large"])
def test_state_dict_layout_and_count_match_reference(layouts, name):
    layout = layouts[name]
    with torch.device("meta"):
        net = SCNet(**layout["overrides"])
    ours = [[key, list(value.shape)] for key, value in net.state_dict().items()]
    assert ours == layout["state_dict"]
    assert _count(net) == layout["parameters"] == COUNTS[name]


@pytest.mark.parametrize("name", ["default", "large"])
def test_reference_state_dict_loads_strict(layouts, name):
    layout = layouts[name]
    state = {key: torch.zeros(shape) for key, shape in layout["state_dict"]}
    net = SCNet(**layout["overrides"])
    net.load_state_dict(state, strict=True)
    del state[layout["state_dict"][-1][0]]
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict(state, strict=True)


def test_configs_state_reference_counts():
    repo = FIXTURE.parents[2]
    for name, config in (("default", "scnet.yaml"), ("large", "scnet_large.yaml")):
        spec = yaml.safe_load((repo / "configs" / "model" / config).read_text())
        assert spec["class_path"] == "stemsep.models.SCNet"
        with torch.device("meta"):
            net = SCNet(**spec["init_args"])
        assert _count(net) == COUNTS[name]
        assert f"{COUNTS[name]:,}" in (repo / "configs" / "model" / config).read_text()


@pytest.mark.parametrize("kwargs, message", [({"dims": [2, 8, 8]}, "dims\\[0\\]"),
                                             ({"band_SR": [0.5, 0.5]}, "band_SR"),
                                             ({"num_dplayer": 3}, "num_dplayer"),
                                             ({"conv_kernel": 4}, "conv_kernel")])
def test_bad_arguments_give_one_line_errors(kwargs, message):
    with pytest.raises(StemsepError, match=message):
        SCNet(**kwargs)


def test_any_length_and_batch_round_trip_shapes():
    torch.manual_seed(0)
    net = SCNet(dims=[4, 8, 8, 8], nfft=256, hop_size=64, win_size=256, num_dplayer=2).eval()
    for length in (64, 1000, 2048):
        with torch.no_grad():
            out = net(torch.randn(2, 2, length))
        assert out.shape == (2, 4, 2, length)


def test_training_loss_matches_reference(small):
    """SpectrogramRMSELoss, per source and averaged as SeparationModule does, equals the reference's
    spec_rmse_loss (value stored by the fixture script) between an output and its sources rotated."""
    from stemsep.training.losses import SpectrogramRMSELoss

    config = small["config"]
    loss = SpectrogramRMSELoss(config["nfft"], config["hop_size"], config["win_size"], config["normalized"])
    estimate = small["outputs"][-1]
    target = estimate.roll(1, dims=1)
    value = torch.stack([loss(estimate[:, i], target[:, i]) for i in range(estimate.shape[1])]).mean()
    assert abs(value.item() - small["loss"]) <= 1e-6 * max(1.0, small["loss"])
    assert loss(estimate[:, 0], estimate[:, 0]).item() == 0
