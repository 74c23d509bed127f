"""Parity of our HS-TasNet with the reference implementation (``hs-tasnet`` 0.3.4, lucidrains).

The reference is not a dependency: tests/fixtures/make_hstasnet_fixture.py ran it once and stored, for
five small configurations (the paper's layout, ``small``, mono, ``use_gru``, magnitude-only without
norm), its random-init weights, an input, its offline output and its stateful transform's output; and
the ``state_dict`` layout and parameter count of the paper size and ``small`` (tests/fixtures/hstasnet).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stemsep.errors import StemsepError
from stemsep.models import HSTasNet

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hstasnet"
TOL = 1e-4
# The reference's parameter counts (measured by the fixture script; the paper says 50.2 M / 28.1 M).
COUNTS = {"paper": 50_163_210, "small": 28_135_210}


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURE / "reference.pt", weights_only=True)["fixtures"]


@pytest.fixture(scope="module")
def layouts() -> dict:
    return json.loads((FIXTURE / "layouts.json").read_text())


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _loaded(fixture: dict) -> HSTasNet:
    net = HSTasNet(**fixture["config"]).eval()
    net.load_state_dict(fixture["state_dict"], strict=True)
    return net


CONFIGS = ["paper", "small", "mono", "gru", "magnitude"]


@pytest.mark.parametrize("name", CONFIGS)
def test_offline_output_matches_reference(reference, name):
    fixture = reference[name]
    net = _loaded(fixture)
    assert _count(net) == fixture["parameters"]
    with torch.no_grad():
        got = net(fixture["input"])
    expected = fixture["output"]
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= TOL
    assert expected.abs().max().item() > 1e-2


@pytest.mark.parametrize("name", CONFIGS)
def test_stream_step_matches_reference_stateful_transform(reference, name):
    fixture = reference[name]
    net = _loaded(fixture)
    hop = net.overlap_len
    state, outs = None, []
    with torch.no_grad():
        for chunk in fixture["input"][:1].split(hop, dim=-1):
            out, state = net.stream_step(chunk, state)
            outs.append(out)
        offline = net(fixture["input"][:1])
    streamed = torch.cat(outs, dim=-1)[0]
    assert (streamed - fixture["streamed"]).abs().max().item() <= TOL
    # streamed == offline, overlap_len samples late
    assert (streamed[..., hop:] - offline[0, ..., :-hop]).abs().max().item() <= 1e-5


def test_comparison_can_fail(reference):
    fixture = reference["paper"]
    state = dict(fixture["state_dict"])
    state["fusion_branch.weight_hh_l1"] = state["fusion_branch.weight_hh_l1"] * 1.5
    net = HSTasNet(**fixture["config"]).eval()
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        got = net(fixture["input"])
    assert (got - fixture["output"]).abs().max().item() > TOL


@pytest.mark.parametrize("name", ["paper", "small"])
def test_full_size_layout_and_count_match_reference(layouts, name):
    with torch.device("meta"):
        net = HSTasNet(**layouts[name]["overrides"])
    assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == layouts[name]["state_dict"]
    assert _count(net) == layouts[name]["parameters"] == COUNTS[name]


def test_contract_and_any_length():
    torch.manual_seed(0)
    net = HSTasNet(dim=8, num_basis=8, segment_len=64, overlap_len=32, n_fft=64).eval()
    assert net.sources == ["drums", "bass", "other", "vocals"] and net.audio_channels == 2
    assert net.samplerate == 44100 and net.segment > 0 and net.init_args["dim"] == 8
    for length in (1, 31, 100, 257):
        with torch.no_grad():
            out = net(torch.randn(2, 2, length))
        assert out.shape == (2, 4, 2, length)
        assert torch.isfinite(out).all()
    # a longer input does not change the output of the earlier samples beyond the last frame's reach
    mix = torch.randn(1, 2, 320)
    with torch.no_grad():
        assert torch.allclose(net(mix)[..., :256], net(mix[..., :288])[..., :256], atol=1e-5)


def test_sources_and_errors():
    net = HSTasNet(dim=8, num_basis=8, segment_len=64, overlap_len=32, n_fft=64, sources=["a", "b"], stereo=False)
    assert net.num_sources == 2 and net.audio_channels == 1
    assert net(torch.randn(1, 1, 100)).shape == (1, 2, 1, 100)
    assert HSTasNet(dim=8, num_basis=8, segment_len=64, overlap_len=32, n_fft=64, num_sources=3).num_sources == 3
    with pytest.raises(StemsepError, match="num_sources"):
        HSTasNet(dim=8, num_basis=8, num_sources=3, sources=["a", "b"])
    with pytest.raises(StemsepError, match="n_fft"):
        HSTasNet(dim=8, num_basis=8, n_fft=2048)
    with pytest.raises(StemsepError, match="expects"):
        net(torch.randn(1, 2, 100))
    with pytest.raises(StemsepError, match="stream_step"):
        net.stream_step(torch.randn(1, 1, 10))
