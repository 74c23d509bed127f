"""SCNet, the sparse compression network (Tong et al., ICASSP 2024, arXiv 2401.13276).

A spectrogram U-Net without time branch. The complex STFT of the mix, as real channels, is
normalized and passed through sparse down-sampling blocks: each splits the frequency axis into
low / mid / high sub-bands (``band_SR`` of the bins each) and compresses them with strided
convolutions of their own (``band_stride``, ``band_kernel``: few bins are merged where
music carries most information, many where it carries little), refines every band with a
convolution module (GLU, depthwise conv, Swish; ``conv_depths`` residual layers per band) and
mixes the bands with a 3x3 convolution. In the compressed space ``num_dplayer`` dual-path
BiLSTM layers model frequency then time; every second layer works on the real FFT of the time
axis ("feature conversion"). Decoder blocks add the encoder's skip, fuse with a gated 3x3
convolution and expand each band back with its transposed convolution. The output is the
complex spectrogram of every source, inverted with the ISTFT.

Constructor arguments, defaults and ``state_dict`` layout are those of the reference
implementation (github.com/starrytong/SCNet, ``scnet/SCNet.py``), so its released checkpoints
load with ``strict=True``; ``samplerate`` and ``segment`` (stemsep's contract: the sample rate
and the training length used to chunk long inputs) are added. The code is ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.contract import DEFAULT_SOURCES, ExportParts, records_init_args
from stemsep.errors import StemsepError
from stemsep.models.spectral import SpectralCore

BANDS = ("low", "mid", "high")


# ---------------------------------------------------------------------------- encoder parts
class ConvolutionModule(nn.Module):
    """Residual stack over ``(N, channels, time)``: each layer is GroupNorm, a 1D conv to twice
    the hidden width, GLU, a depthwise conv, GroupNorm, Swish and a 1x1 conv back."""

    def __init__(self, channels: int, depth: int = 2, compress: float = 4, kernel: int = 3):
        super().__init__()
        if kernel % 2 != 1:
            raise StemsepError(f"SCNet conv_kernel must be odd, got {kernel}")
        hidden = int(channels / compress)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(1, channels),
                nn.Conv1d(channels, 2 * hidden, kernel, padding=kernel // 2),
                nn.GLU(dim=1),
                nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden),
                nn.GroupNorm(1, hidden),
                nn.SiLU(),
                nn.Conv1d(hidden, channels, 1),
            )
            for _ in range(abs(depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


def band_edges(n_freqs: int, band_sr: Sequence[float]) -> list[tuple[int, int]]:
    """``[(start, end)]`` of the low, mid and high bands of ``n_freqs`` bins."""
    low = math.ceil(n_freqs * band_sr[0])
    mid = math.ceil(n_freqs * (band_sr[0] + band_sr[1]))
    return [(0, low), (low, mid), (mid, n_freqs)]


class SDlayer(nn.Module):
    """Sparse down-sampling: one strided ``(kernel, 1)`` conv per frequency band."""

    def __init__(self, channels_in: int, channels_out: int, band_sr: Sequence[float],
                 strides: Sequence[int], kernels: Sequence[int]):
        super().__init__()
        self.band_sr = list(band_sr)
        self.strides = list(strides)
        self.kernels = list(kernels)
        self.convs = nn.ModuleList(nn.Conv2d(channels_in, channels_out, (k, 1), (s, 1))
                                   for s, k in zip(strides, kernels, strict=True))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        bands, sizes = [], []
        for conv, stride, kernel, (start, end) in zip(self.convs, self.strides, self.kernels,
                                                      band_edges(x.shape[2], self.band_sr), strict=True):
            size = end - start
            # stride 1: keep the size ("same" padding); else: pad up to a multiple of the stride
            pad = kernel - 1 if stride == 1 else -size % stride
            band = F.pad(x[:, :, start:end], (0, 0, pad // 2, pad - pad // 2))
            bands.append(conv(band))
            sizes.append(size)
        return bands, sizes


class SUlayer(nn.Module):
    """Sparse up-sampling: one ``(kernel, 1)`` transposed conv per band, cut back to the band's size."""

    def __init__(self, channels_in: int, channels_out: int, strides: Sequence[int], kernels: Sequence[int]):
        super().__init__()
        self.convtrs = nn.ModuleList(nn.ConvTranspose2d(channels_in, channels_out, (k, 1), (s, 1))
                                     for s, k in zip(strides, kernels, strict=True))

    def forward(self, x: torch.Tensor, lengths: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
        outs, start = [], 0
        for index, (convtr, size) in enumerate(zip(self.convtrs, sizes, strict=True)):
            end = start + lengths[index] if index < len(lengths) - 1 else x.shape[2]
            out = convtr(x[:, :, start:end])
            offset = abs(size - out.shape[2]) // 2
            outs.append(out[:, :, offset:offset + size])
            start = end
        return torch.cat(outs, dim=2)


class SDblock(nn.Module):
    """Encoder block: sparse down-sampling, a convolution module per band (over time, every
    compressed bin on its own), GELU, the bands joined and mixed by a 3x3 conv."""

    def __init__(self, channels_in: int, channels_out: int, band_sr: Sequence[float], strides: Sequence[int],
                 kernels: Sequence[int], depths: Sequence[int], compress: float, conv_kernel: int,
                 kernel_size: int = 3):
        super().__init__()
        self.SDlayer = SDlayer(channels_in, channels_out, band_sr, strides, kernels)
        self.conv_modules = nn.ModuleList(ConvolutionModule(channels_out, depth, compress, conv_kernel)
                                          for depth in depths)
        self.globalconv = nn.Conv2d(channels_out, channels_out, kernel_size, 1, (kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor):
        bands, sizes = self.SDlayer(x)
        outs = []
        for conv, band in zip(self.conv_modules, bands, strict=True):
            b, c, f, t = band.shape
            rows = band.transpose(1, 2).reshape(b * f, c, t)  # each compressed bin, over time
            outs.append(F.gelu(conv(rows).view(b, f, c, t).transpose(1, 2)))
        lengths = [band.shape[2] for band in outs]
        skip = torch.cat(outs, dim=2)
        return self.globalconv(skip), skip, lengths, sizes


# ---------------------------------------------------------------------------- decoder parts
class FusionLayer(nn.Module):
    """Adds the skip, then a gated 3x3 conv over the input repeated twice on channels."""

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + skip
        return F.glu(self.conv(torch.cat([x, x], dim=1)), dim=1)


class DecoderBlock(nn.Module):
    """A fusion layer and a sparse up-sampling layer (``state_dict`` keys ``0.*`` and ``1.*``)."""

    def __init__(self, channels_in: int, channels_out: int, strides: Sequence[int], kernels: Sequence[int]):
        super().__init__()
        self.add_module("0", FusionLayer(channels_in))
        self.add_module("1", SUlayer(channels_in, channels_out, strides, kernels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor, lengths: Sequence[int], sizes: Sequence[int]):
        fusion, up = self._modules["0"], self._modules["1"]
        return up(fusion(x, skip), lengths, sizes)


# ------------------------------------------------------------------------ separation network
class FeatureConversion(nn.Module):
    """Moves the time axis to (``inverse=False``) or back from (``True``) its orthonormal real FFT,
    real and imaginary parts stacked as channels (float32 whatever the autocast dtype)."""

    def __init__(self, channels: int, inverse: bool):
        super().__init__()
        self.channels = channels
        self.inverse = inverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.inverse:
            half = self.channels // 2
            return torch.fft.irfft(torch.complex(x[:, :half], x[:, half:]), dim=3, norm="ortho")
        z = torch.fft.rfft(x, dim=3, norm="ortho")
        return torch.cat([z.real, z.imag], dim=1)


class DualPathRNN(nn.Module):
    """A BiLSTM along frequency, then one along time, each after a GroupNorm, projected back to
    ``d_model`` channels and added to its input."""

    def __init__(self, d_model: int, expand: int = 1, bidirectional: bool = True):
        super().__init__()
        hidden = d_model * expand
        directions = 2 if bidirectional else 1
        self.lstm_layers = nn.ModuleList(nn.LSTM(d_model, hidden, num_layers=1, bidirectional=bidirectional,
                                                 batch_first=True) for _ in range(2))
        self.linear_layers = nn.ModuleList(nn.Linear(directions * hidden, d_model) for _ in range(2))
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, d_model) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        # along frequency: sequences of f bins, one per (batch, frame)
        y = self.norm_layers[0](x).permute(0, 3, 2, 1).reshape(b * t, f, c)
        y = self.linear_layers[0](self.lstm_layers[0](y)[0])
        x = x + y.view(b, t, f, c).permute(0, 3, 2, 1)
        # along time: sequences of t frames, one per (batch, bin)
        y = self.norm_layers[1](x).permute(0, 2, 3, 1).reshape(b * f, t, c)
        y = self.linear_layers[1](self.lstm_layers[1](y)[0])
        return x + y.view(b, f, t, c).permute(0, 3, 1, 2)


class SeparationNet(nn.Module):
    """``num_layers`` dual-path layers; even ones at ``channels`` then to the time-FFT domain,
    odd ones at twice the channels (real and imaginary) then back."""

    def __init__(self, channels: int, expand: int = 1, num_layers: int = 6):
        super().__init__()
        if num_layers % 2:
            raise StemsepError(f"SCNet num_dplayer must be even (each layer in the FFT domain returns "
                               f"from it), got {num_layers}")
        self.dp_modules = nn.ModuleList(DualPathRNN(channels * (2 if i % 2 else 1), expand)
                                        for i in range(num_layers))
        self.feature_conversion = nn.ModuleList(FeatureConversion(2 * channels, inverse=bool(i % 2))
                                                for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for rnn, conversion in zip(self.dp_modules, self.feature_conversion, strict=True):
            x = conversion(rnn(x))
        return x


# ---------------------------------------------------------------------------------- SCNet
@records_init_args
class SCNet(nn.Module):
    """SCNet: ``forward(mix (B, audio_channels, T)) -> (B, len(sources), audio_channels, T)``.

    ``dims``: channels of the spectrogram input (``2 * audio_channels``: real and imaginary
    parts) then of each encoder block ([4, 64, 128, 256] is SCNet-large). STFT: ``nfft``,
    ``hop_size``, ``win_size``, ``normalized`` (rectangular window, as the reference). Bands:
    ``band_SR`` shares of the bins, ``band_stride`` / ``band_kernel`` of their down-sampling
    convs, ``conv_depths`` layers of their convolution modules (hidden width
    ``channels / compress``, kernel ``conv_kernel``). ``num_dplayer`` dual-path layers with
    LSTMs ``expand`` times wider than their input. ``samplerate`` and ``segment`` (seconds,
    the training length; chunked inference cuts long inputs into pieces of it) are stemsep's.
    """

    def __init__(self, sources: list[str] = DEFAULT_SOURCES, audio_channels: int = 2,  # noqa: B006
                 dims: list[int] = [4, 32, 64, 128],  # noqa: B006 (the reference's defaults)
                 nfft: int = 4096, hop_size: int = 1024, win_size: int = 4096, normalized: bool = True,
                 band_SR: list[float] = [0.175, 0.392, 0.433],  # noqa: B006, N803
                 band_stride: list[int] = [1, 4, 16],  # noqa: B006
                 band_kernel: list[int] = [3, 4, 16],  # noqa: B006
                 conv_depths: list[int] = [3, 2, 1],  # noqa: B006
                 compress: float = 4, conv_kernel: int = 3, num_dplayer: int = 6, expand: int = 1,
                 samplerate: int = 44100, segment: float | Fraction = 11):
        super().__init__()
        if dims[0] != 2 * audio_channels:
            raise StemsepError(f"SCNet dims[0] must be 2 * audio_channels = {2 * audio_channels} (real and "
                               f"imaginary part of each channel), got dims {list(dims)}")
        for name, values in (("band_SR", band_SR), ("band_stride", band_stride), ("band_kernel", band_kernel),
                             ("conv_depths", conv_depths)):
            if len(values) != len(BANDS):
                raise StemsepError(f"SCNet {name} needs one value per band (low, mid, high), got {list(values)}")
        self.sources = list(sources)
        self.audio_channels = audio_channels
        self.samplerate = samplerate
        self.segment = segment
        self.dims = list(dims)
        self.nfft, self.hop_length, self.win_size, self.normalized = nfft, hop_size, win_size, normalized
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for index in range(len(dims) - 1):
            self.encoder.append(SDblock(dims[index], dims[index + 1], band_SR, band_stride, band_kernel,
                                        conv_depths, compress, conv_kernel))
            out = dims[index] * (len(self.sources) if index == 0 else 1)
            self.decoder.insert(0, DecoderBlock(dims[index + 1], out, band_stride, band_kernel))
        self.separation_net = SeparationNet(dims[-1], expand=expand, num_layers=num_dplayer)

    # -------------------------------------------------------------------- STFT and framing
    def padding(self, length: int) -> int:
        """Zero samples appended to an input of ``length`` samples, as the reference pads: up to the
        next multiple of the hop (at least one sample), and one hop more where needed for an even
        number of STFT frames (the real FFT along time in the dual-path layers needs it). Inputs too
        short for the STFT's reflect padding (the reference fails on them) get two hops more at a time."""
        hop = self.hop_length
        pad = hop - length % hop
        if (length + pad) // hop % 2 == 0:
            pad += hop
        while length + pad <= self.nfft // 2:
            pad += 2 * hop
        return pad

    def _stft_kwargs(self, like: torch.Tensor) -> dict[str, Any]:
        window = torch.ones(self.win_size, device=like.device, dtype=like.real.dtype)  # rectangular, as the reference
        return dict(n_fft=self.nfft, hop_length=self.hop_length, win_length=self.win_size, window=window,
                    center=True, normalized=self.normalized)

    def spectrogram(self, mix: torch.Tensor) -> torch.Tensor:
        """Padded ``mix (B, C, T)`` -> its STFT as channels ``(B, 2C, F, frames)`` (re, im of each channel)."""
        batch, channels, length = mix.shape
        flat = mix.reshape(batch * channels, length)
        z = torch.stft(flat, return_complex=True, **self._stft_kwargs(flat))
        x = torch.view_as_real(z).permute(0, 3, 1, 2)  # (B*C, 2, F, frames)
        return x.reshape(batch, 2 * channels, x.shape[2], x.shape[3])

    def waveforms(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """The core's output ``(B, S * 2C, F, frames)`` -> ``(B, S, C, length)`` by inverse STFT."""
        batch, _, freqs, frames = spec.shape
        pairs = spec.float().reshape(-1, 2, freqs, frames).permute(0, 2, 3, 1).contiguous()
        z = torch.view_as_complex(pairs)
        wav = torch.istft(z, **self._stft_kwargs(z))
        return wav.reshape(batch, len(self.sources), self.audio_channels, -1)[..., :length]

    # ------------------------------------------------------------------------- the network
    def core(self, x: torch.Tensor) -> torch.Tensor:
        """The network proper on real tensors (what ``stemsep export`` traces): the spectrogram
        as channels ``(B, 2C, F, frames)`` (an even number of frames) -> the sources' spectrograms
        ``(B, S * 2C, F, frames)``, normalized in and out with the input's mean and std."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        skips = []
        for block in self.encoder:
            x, skip, lengths, sizes = block(x)
            skips.append((skip, lengths, sizes))
        x = self.separation_net(x)
        for block in self.decoder:
            x = block(x, *skips.pop())
        return x * std + mean

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        mix = F.pad(mix, (0, self.padding(length)))
        return self.waveforms(self.core(self.spectrogram(mix)), length)

    def export_parts(self) -> ExportParts:
        """Core and front end for ``stemsep export`` (see :func:`stemsep.contract.export_parts`)."""
        return ExportParts(core=SpectralCore(self), front_end=SCNetFrontEnd.of(self), input_names=["spec"],
                           output_names=["spec_out"])


class SCNetFrontEnd:
    """What runs around an exported SCNet core: padding and STFT before, ISTFT after."""

    def __init__(self, sources: list[str], audio_channels: int, nfft: int, hop_size: int, win_size: int,
                 normalized: bool):
        self.sources = list(sources)
        self.audio_channels, self.nfft, self.hop_length = audio_channels, nfft, hop_size
        self.win_size, self.normalized = win_size, normalized

    @classmethod
    def of(cls, net: SCNet) -> SCNetFrontEnd:
        return cls(net.sources, net.audio_channels, net.nfft, net.hop_length, net.win_size, net.normalized)

    def config(self) -> dict[str, Any]:
        return {"sources": self.sources, "audio_channels": self.audio_channels, "nfft": self.nfft,
                "hop_size": self.hop_length, "win_size": self.win_size, "normalized": self.normalized}

    # SCNet's own framing and transforms, bound to this object's settings
    padding = SCNet.padding
    _stft_kwargs = SCNet._stft_kwargs
    spectrogram = SCNet.spectrogram
    waveforms = SCNet.waveforms

    def prepare(self, mix: torch.Tensor) -> tuple[tuple[torch.Tensor], None]:
        mix = F.pad(mix, (0, self.padding(mix.shape[-1])))
        return (self.spectrogram(mix),), None

    def finish(self, outputs: tuple[torch.Tensor, ...], state: None, length: int) -> torch.Tensor:
        return self.waveforms(outputs[0], length)
