"""Training losses selectable by config (``model.loss`` of a recipe).

``SeparationModule`` calls its loss as ``loss(estimate, reference)`` on one source at a time,
``(batch, channels, time)`` each, and averages the sources with ``source_weights``. With equal
weights that is the mean over all sources, which is what the reference implementations compute
on the stacked ``(batch, sources, channels, time)`` tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stemsep.errors import BadArgumentError

ROFORMER_WINDOWS = (4096, 2048, 1024, 512, 256)


class MultiResolutionL1Loss(nn.Module):
    """L1 on waveforms plus ``weight`` x the sum over resolutions of the L1 between complex STFTs.

    The loss that BS-RoFormer and Mel-Band RoFormer train with (the ``bs-roformer`` package,
    0.5.x, when its ``forward`` is given a target; MSST's RoFormer training uses it too)::

        mean|est - ref| + weight * sum_w mean|STFT_w(est) - STFT_w(ref)|

    where ``STFT_w`` has a Hann window of ``w`` samples, ``n_fft = max(w, min_n_fft)`` (the
    reference passes the network's own ``stft_n_fft``, 2048 by default, as the floor), hop
    ``hop_length``, centred frames with reflect padding, and ``|.|`` is the modulus of the complex
    difference. Each channel is transformed separately.

    Args:
        window_sizes: STFT window lengths (samples), one term each.
        hop_length: hop of every STFT (147 in the reference, for all resolutions).
        weight: weight of the summed STFT terms (``multi_stft_resolution_loss_weight``).
        min_n_fft: lower bound of the FFT size (the network's ``stft_n_fft`` in the reference).
        normalized: ``torch.stft(normalized=...)`` (``multi_stft_normalized``).

    The loss is computed in float32 whatever the autocast dtype (``torch.stft`` needs it).
    """

    def __init__(self, window_sizes: Sequence[int] = ROFORMER_WINDOWS, hop_length: int = 147, weight: float = 1.0,
                 min_n_fft: int = 2048, normalized: bool = False):
        super().__init__()
        window_sizes = [int(w) for w in window_sizes]
        if not window_sizes or min(window_sizes) < 2:
            raise BadArgumentError(f"window_sizes {window_sizes} must be a non-empty list of lengths >= 2")
        if hop_length < 1:
            raise BadArgumentError(f"hop_length must be >= 1, got {hop_length}")
        if weight < 0:
            raise BadArgumentError(f"weight must be >= 0, got {weight}")
        self.window_sizes = window_sizes
        self.hop_length = int(hop_length)
        self.weight = float(weight)
        self.min_n_fft = int(min_n_fft)
        self.normalized = bool(normalized)
        for size in window_sizes:  # not persistent: checkpoints stay free of loss state
            self.register_buffer(f"window_{size}", torch.hann_window(size), persistent=False)

    def stft(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """Complex STFT of every channel of ``x`` (``(..., time)``) at window ``size``."""
        window = getattr(self, f"window_{size}").to(device=x.device, dtype=x.dtype)
        return torch.stft(x.reshape(-1, x.shape[-1]), n_fft=max(size, self.min_n_fft), hop_length=self.hop_length,
                          win_length=size, window=window, normalized=self.normalized, return_complex=True)

    def waveform_term(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return (estimate - reference).abs().mean()

    def spectral_term(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The unweighted sum over resolutions of the STFT L1 terms."""
        total = estimate.new_zeros(())
        for size in self.window_sizes:
            total = total + (self.stft(estimate, size) - self.stft(reference, size)).abs().mean()
        return total

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if estimate.shape != reference.shape:
            raise BadArgumentError(f"loss: estimate {tuple(estimate.shape)} and reference "
                                   f"{tuple(reference.shape)} differ in shape")
        estimate, reference = estimate.float(), reference.float()
        return self.waveform_term(estimate, reference) + self.weight * self.spectral_term(estimate, reference)


class SpectrogramRMSELoss(nn.Module):
    """Root mean squared error between complex STFTs: SCNet's training loss.

    The reference (github.com/starrytong/SCNet, ``scnet/loss.py``) takes, for each example and
    source, the mean over channels, bins, frames and real/imaginary parts of the squared
    difference of the STFTs, its square root, then the mean over examples and sources; called on
    one source at a time and averaged over sources by ``SeparationModule``, this is the same value.
    The STFT is the network's: ``n_fft``, ``hop_length``, ``win_length``, centred, rectangular
    window (the reference passes none), ``normalized``. Computed in float32.
    """

    def __init__(self, n_fft: int = 4096, hop_length: int = 1024, win_length: int | None = None,
                 normalized: bool = True):
        super().__init__()
        win_length = n_fft if win_length is None else int(win_length)
        if n_fft < 2 or hop_length < 1 or not 1 <= win_length <= n_fft:
            raise BadArgumentError(f"STFT sizes n_fft {n_fft}, hop_length {hop_length}, win_length {win_length}: "
                                   "need n_fft >= 2, hop_length >= 1, 1 <= win_length <= n_fft")
        self.n_fft, self.hop_length, self.win_length = int(n_fft), int(hop_length), win_length
        self.normalized = bool(normalized)

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, time)`` -> real ``(batch, channels, bins, frames, 2)``."""
        window = torch.ones(self.win_length, device=x.device, dtype=x.dtype)
        z = torch.stft(x.reshape(-1, x.shape[-1]), n_fft=self.n_fft, hop_length=self.hop_length,
                       win_length=self.win_length, window=window, center=True, normalized=self.normalized,
                       return_complex=True)
        return torch.view_as_real(z).reshape(*x.shape[:-1], *z.shape[-2:], 2)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if estimate.shape != reference.shape or estimate.dim() < 2:
            raise BadArgumentError(f"loss: estimate {tuple(estimate.shape)} and reference "
                                   f"{tuple(reference.shape)} must have the same (batch, ..., time) shape")
        error = (self.stft(estimate.float()) - self.stft(reference.float())).square()
        return error.flatten(1).mean(dim=1).sqrt().mean()
