"""The model configs in configs/model build, state their true parameter count, and run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from stemsep.io.checkpoint import build_from_config
from stemsep.models.attention import backends as attention_backends

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
SMALL = ["htdemucs_small.yaml", "hdemucs_small.yaml"]
LARGE = ["htdemucs_paper.yaml", "htdemucs.yaml", "htdemucs_sparse.yaml", "hdemucs.yaml"]


def _build(name: str) -> tuple[torch.nn.Module, int]:
    path = CONFIGS / name
    text = path.read_text()
    stated = re.search(r"^#.*?([\d,]+) parameters", text, re.MULTILINE)
    assert stated, f"{name}: the header comment must state the parameter count"
    config = yaml.safe_load(text)
    backend = config["init_args"].get("attention", "dense")
    try:
        attention_backends.get_backend(backend)
    except (ValueError, ImportError):
        pytest.skip(f"attention backend {backend!r} not available")
    torch.manual_seed(0)
    return build_from_config(config, origin=str(path)), int(stated.group(1).replace(",", ""))


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SMALL)
def test_small_config_trains_a_step(name):
    model, stated = _build(name)
    assert _count(model) == stated
    assert 200_000 <= stated <= 2_000_000
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=1e-3)
    mix = torch.randn(1, model.audio_channels, model.samplerate)  # 1 s
    out = model(mix)
    assert out.shape == (1, len(model.sources), model.audio_channels, mix.shape[-1])
    out.sub(mix[:, None]).abs().mean().backward()
    optim.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_large_config_builds_with_stated_size(name):
    model, stated = _build(name)
    assert _count(model) == stated
