"""Positional embeddings for the cross-domain transformer.

* 1D sinusoidal embedding for the time-branch sequence (``(T, 1, C)``: first half cosines,
  second half sines, periods spaced geometrically up to ``max_period``).
* 2D sinusoidal embedding for the (frequency, time) grid of the spectral branch: half the
  channels encode the time position, half the frequency position, interleaved sin/cos.
* CAPE (Likhomanenko et al. 2021, arXiv 2106.03143): the 1D embedding evaluated at
  mean-centred positions that are randomly shifted and scaled during training.
"""

from __future__ import annotations

import math

import torch


def _sin_cos(pos: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """``pos`` of shape ``(T, B, 1)`` -> ``(T, B, dim)`` = [cos(pos * w_i), sin(pos * w_i)]."""
    half = dim // 2
    exponents = torch.arange(half, device=pos.device, dtype=torch.float32) / (half - 1)
    phase = pos / (max_period ** exponents).view(1, 1, -1)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


def sin_embedding(length: int, dim: int, shift: int = 0, device: torch.device | str = "cpu",
                  max_period: float = 10000.0) -> torch.Tensor:
    """1D sinusoidal embedding of positions ``shift .. shift + length - 1``: ``(length, 1, dim)``."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dimension, got {dim}")
    pos = (shift + torch.arange(length, device=device, dtype=torch.float32)).view(-1, 1, 1)
    return _sin_cos(pos, dim, max_period)


def sin_embedding_2d(dim: int, height: int, width: int, device: torch.device | str = "cpu",
                     max_period: float = 10000.0) -> torch.Tensor:
    """2D sinusoidal embedding ``(1, dim, height, width)``.

    Channels ``[0, dim/2)`` alternate sin/cos of the width (time) position, channels
    ``[dim/2, dim)`` alternate sin/cos of the height (frequency) position.
    """
    if dim % 4:
        raise ValueError(f"2D sinusoidal embedding needs a dimension divisible by 4, got {dim}")
    half = dim // 2
    freqs = torch.exp(torch.arange(0.0, half, 2, device=device) * -(math.log(max_period) / half))
    wphase = torch.arange(0.0, width, device=device)[:, None] * freqs  # (W, half/2)
    hphase = torch.arange(0.0, height, device=device)[:, None] * freqs  # (H, half/2)
    pe = torch.empty(dim, height, width, device=device)
    pe[0:half:2] = torch.sin(wphase).t()[:, None, :]
    pe[1:half:2] = torch.cos(wphase).t()[:, None, :]
    pe[half::2] = torch.sin(hphase).t()[:, :, None]
    pe[half + 1::2] = torch.cos(hphase).t()[:, :, None]
    return pe[None]


def cape_embedding(length: int, dim: int, batch_size: int, mean_normalize: bool, augment: bool,
                   max_global_shift: float = 0.0, max_local_shift: float = 0.0, max_scale: float = 1.0,
                   device: torch.device | str = "cpu", max_period: float = 10000.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """CAPE embedding ``(length, batch_size, dim)``.

    With ``augment`` each batch item gets a global shift in ``[-max_global_shift, +]``, each
    position a local shift in ``[-max_local_shift, +]`` and each item a scale log-uniform in
    ``[1/max_scale, max_scale]``, so the model cannot rely on absolute positions.
    """
    if dim % 2:
        raise ValueError(f"CAPE embedding needs an even dimension, got {dim}")
    pos = torch.arange(length, dtype=torch.float64).view(-1, 1, 1).repeat(1, batch_size, 1)
    if mean_normalize:
        pos = pos - pos.mean(dim=0, keepdim=True)
    if augment:
        def uniform(bound: float, *shape: int) -> torch.Tensor:
            return (torch.rand(*shape, dtype=torch.float64, generator=generator) * 2 - 1) * bound

        shift = uniform(max_global_shift, 1, batch_size, 1)
        local = uniform(max_local_shift, length, batch_size, 1)
        log_scale = uniform(math.log(max_scale), 1, batch_size, 1)
        pos = (pos + shift + local) * log_scale.exp()
    return _sin_cos(pos.to(device=device, dtype=torch.float32), dim, max_period)
