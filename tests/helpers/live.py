"""Tiny networks for the ``stemsep stream`` tests, saved as checkpoints the way users get them."""

from __future__ import annotations

from pathlib import Path

import torch

from helpers.slow_net import SlowNet
from stemsep.contract import network_config
from stemsep.io.checkpoint import save_checkpoint
from stemsep.models import HSTasNet

SR = 8000
HOP = 32  # the tiny HS-TasNet's hop: its stream latency is 2 * HOP - 1 samples


def tiny_hstasnet(stereo: bool = True, seed: int = 0) -> HSTasNet:
    """A tiny HS-TasNet at :data:`SR` with random weights everywhere (mask heads too, so its stems
    are not the mix): streamed step by step."""
    torch.manual_seed(seed)
    net = HSTasNet(dim=16, num_basis=32, segment_len=2 * HOP, overlap_len=HOP, n_fft=2 * HOP, sample_rate=SR,
                   stereo=stereo).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.3)
    return net


def tiny_windowed(delay: float = 0.0, seed: int = 1) -> SlowNet:
    """A TinyNet at :data:`SR` with a 0.05 s segment (a chunk every 300 samples at overlap 0.25),
    ``delay`` seconds per network call: streamed on ``apply_model``'s chunk grid."""
    torch.manual_seed(seed)
    return SlowNet(samplerate=SR, delay=delay, segment=0.05).eval()


def checkpoint(net: torch.nn.Module, path: Path) -> Path:
    """``net`` as a stemsep checkpoint at ``path``."""
    return save_checkpoint(path, net, network_config(net))

