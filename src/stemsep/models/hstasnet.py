"""HS-TasNet, the hybrid spectrogram / waveform TasNet for low-latency separation (Venkatesh et al. 2024,
arXiv 2402.17701).

Two branches see the same frames of ``segment_len`` samples, one every ``overlap_len`` samples:

* the **spectral branch** takes the STFT of each frame (``n_fft`` bins, Hann window of ``segment_len``,
  no centering; real and imaginary parts, or the magnitude only with ``spec_branch_use_phase=False``)
  and projects all channels' bins to ``dim``;
* the **waveform branch** is TasNet's learned encoder: a strided conv to ``num_basis`` non-negative
  basis weights (a ReLU part gated by a sigmoid part), projected to ``dim``.

Each branch has a recurrent layer (LSTM, or GRU with ``use_gru``); a fusion layer sees both (their
concatenation, or their sum in the ``small`` variant), its output is split back and added to each
branch's encoding, and one more recurrent layer per branch follows. Every recurrent layer has two
stacked layers and a residual connection, one layer and no residual when ``small``. Each branch then
estimates one mask per source (RMSNorm first with ``norm_before_mask_estimate``): the spectral masks
scale the mix's STFT, inverted by overlap-add; the waveform masks scale the basis weights, decoded by a
transposed conv with Hann-windowed filters. The source is the sum of both.

Everything is causal except the frame itself: a frame of ``segment_len`` samples is padded by half a
frame on each side offline, so the output lags the input by ``overlap_len`` samples when streamed.

Constructor keywords, defaults and ``state_dict`` names are those of the reference implementation
(``hs-tasnet`` 0.3.4 on PyPI, github.com/lucidrains/hs-tasnet), so its weights load with
``strict=True``; ``sources`` and ``segment`` are stemsep's contract. The code is ours.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.contract import ExportParts, default_source_names, records_init_args
from stemsep.errors import StemsepError


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """``(N, width, count)`` frames -> ``(N, (count - 1) * hop + width)``, each frame added at its hop."""
    _, width, count = frames.shape
    length = (count - 1) * hop + width
    return F.fold(frames, output_size=(1, length), kernel_size=(1, width), stride=(1, hop))[:, 0, 0]


# ---------------------------------------------------------------------------- spectral front end
class FrameSTFT(nn.Module):
    """STFT of frames of ``win_length`` samples every ``hop_length`` (Hann window, no centering) and its
    inverse by windowed overlap-add, normalized by the summed squared window. ``streaming_envelope``
    is that sum inside the signal (where every sample is covered by the same number of frames): the
    normalization of one streamed frame."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int, eps: float = 1e-11):
        super().__init__()
        if n_fft != win_length:
            raise StemsepError(f"HSTasNet needs n_fft == segment_len (the inverse windows the FFT), "
                               f"got n_fft={n_fft}, segment_len={win_length}")
        self.n_fft, self.hop_length, self.win_length, self.eps = n_fft, hop_length, win_length, eps
        window = torch.hann_window(win_length)
        self.register_buffer("window", window)
        # the squared window summed over three consecutive frames; its middle frame is steady state
        three = overlap_add(window.square().reshape(1, win_length, 1).expand(1, win_length, 3), hop_length)[0]
        self.register_buffer("streaming_envelope", three[hop_length:hop_length + win_length].clone())

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` -> complex ``(N, n_fft // 2 + 1, frames)``."""
        return torch.stft(audio, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=False, return_complex=True)

    def inverse(self, spec: torch.Tensor, streaming: bool = False) -> torch.Tensor:
        """Complex ``(N, freqs, frames)`` -> ``(N, (frames - 1) * hop + win_length)``."""
        frames = torch.fft.irfft(spec, self.n_fft, dim=1) * self.window[:, None]
        out = overlap_add(frames, self.hop_length)
        if streaming:
            envelope = self.streaming_envelope
        else:
            squared = self.window.square().reshape(1, -1, 1).expand(1, -1, spec.shape[-1])
            envelope = overlap_add(squared, self.hop_length)[0]
        return out / envelope.clamp(min=self.eps)


class SpecToFrames(nn.Module):
    """``(B * C, freqs, frames[, parts])`` -> ``(B, frames, C * freqs * parts)`` (channel, bin, part order)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.dim() == 3:
            spec = spec.unsqueeze(-1)
        flat, freqs, frames, parts = spec.shape
        spec = spec.reshape(flat // self.channels, self.channels, freqs, frames, parts)
        return spec.permute(0, 3, 1, 2, 4).reshape(flat // self.channels, frames, -1)


class FramesToSpecMasks(nn.Module):
    """``(B, frames, C * freqs * parts * S)`` -> ``(B * C, freqs, frames, parts, S)``."""

    def __init__(self, channels: int, parts: int, sources: int):
        super().__init__()
        self.channels, self.parts, self.sources = channels, parts, sources

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape
        x = x.reshape(batch, frames, self.channels, -1, self.parts, self.sources)
        return x.permute(0, 2, 3, 1, 4, 5).reshape(batch * self.channels, -1, frames, self.parts, self.sources)


class ChannelsLast(nn.Module):
    """``(B, C, L)`` -> ``(B, L, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class SplitSources(nn.Module):
    """``(..., S * basis)`` -> ``(..., basis, S)``."""

    def __init__(self, sources: int):
        super().__init__()
        self.sources = sources

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.sources, -1).transpose(-1, -2)


class WindowedDecoder(nn.ConvTranspose1d):
    """TasNet's decoder: a transposed conv whose filters are multiplied by a Hann window. Like the
    reference, its ``bias`` is kept (for the ``state_dict``) but not added."""

    def __init__(self, basis: int, channels: int, width: int, stride: int):
        super().__init__(basis, channels, width, stride=stride)
        self.register_buffer("window", torch.hann_window(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight * self.window, stride=self.stride, padding=self.padding)


def pad_to_frames(mix: torch.Tensor, hop: int, pad: int) -> torch.Tensor:
    """``mix (B, C, T)`` padded by ``pad`` on each side and to a whole number of ``hop``: the frames of
    the offline forward."""
    return F.pad(mix, (pad, pad + (-mix.shape[-1]) % hop))


def frame_spectrum(stft: FrameSTFT, audio: torch.Tensor, use_phase: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``audio (B, C, L)`` -> its frames' complex STFT ``(B*C, freqs, frames)`` and the spectral
    branch's real input ``(B, C, freqs, frames, parts)`` (real and imaginary parts, or the magnitude)."""
    batch, channels, _ = audio.shape
    mix_spec = stft(audio.reshape(batch * channels, -1))
    spec_in = torch.view_as_real(mix_spec) if use_phase else mix_spec.abs().unsqueeze(-1)
    return mix_spec, spec_in.reshape(batch, channels, *spec_in.shape[1:])


def spectra_to_waveforms(stft: FrameSTFT, masked: torch.Tensor, mix_spec: torch.Tensor,
                         streaming: bool = False) -> torch.Tensor:
    """The masked spectra ``(B, S, C, freqs, frames, parts)`` -> waveforms ``(B, S, C, L)``: real and
    imaginary parts, or magnitudes given the phase of ``mix_spec (B*C, freqs, frames)``."""
    batch, sources, channels = masked.shape[:3]
    if masked.shape[-1] == 2:
        per_source = torch.view_as_complex(masked.contiguous())
    else:
        phase = mix_spec.angle().reshape(batch, 1, channels, *mix_spec.shape[1:])
        per_source = torch.polar(masked[..., 0], phase.expand(batch, sources, *phase.shape[2:]))
    return stft.inverse(per_source.flatten(0, 2), streaming=streaming).reshape(batch, sources, channels, -1)


class HSTasNetCore(nn.Module):
    """``(audio, spec) -> (spec_out, wave)``: :meth:`HSTasNet.core` without recurrent states, as the module
    ``stemsep export`` traces."""

    def __init__(self, net: HSTasNet):
        super().__init__()
        self.net = net

    def forward(self, audio: torch.Tensor, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        masked, wave, _ = self.net.core(audio, spec)
        return masked, wave


class HSTasNetFrontEnd:
    """What runs around an exported HS-TasNet core: the padding and the frames' STFT before, the
    spectral inverse (overlap-add) and the sum of both branches after."""

    def __init__(self, segment_len: int, overlap_len: int, n_fft: int, spec_branch_use_phase: bool):
        self.segment_len, self.overlap_len, self.n_fft = segment_len, overlap_len, n_fft
        self.spec_branch_use_phase = spec_branch_use_phase
        self.stft = FrameSTFT(n_fft, hop_length=overlap_len, win_length=segment_len)

    @classmethod
    def of(cls, net: HSTasNet) -> HSTasNetFrontEnd:
        return cls(net.segment_len, net.overlap_len, net.n_fft, net.spec_branch_use_phase)

    def config(self) -> dict[str, Any]:
        return {"segment_len": self.segment_len, "overlap_len": self.overlap_len, "n_fft": self.n_fft,
                "spec_branch_use_phase": self.spec_branch_use_phase}

    def prepare(self, mix: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        padded = pad_to_frames(mix, self.overlap_len, self.segment_len // 2)
        mix_spec, spec_in = frame_spectrum(self.stft.to(mix.device), padded, self.spec_branch_use_phase)
        return (padded, spec_in), mix_spec

    def finish(self, outputs: tuple[torch.Tensor, ...], mix_spec: torch.Tensor, length: int) -> torch.Tensor:
        masked, wave = outputs
        pad = self.segment_len // 2
        return (spectra_to_waveforms(self.stft, masked, mix_spec) + wave)[..., pad:pad + length]


# ---------------------------------------------------------------------------------- HSTasNet
Hiddens = tuple  # five recurrent states: pre spectral, pre waveform, fusion, post spectral, post waveform


@records_init_args
class HSTasNet(nn.Module):
    """HS-TasNet: ``forward(mix (B, audio_channels, T)) -> (B, len(sources), audio_channels, T)``.

    Reference keywords: ``dim`` (width of each branch; the paper's 500), ``small`` (one recurrent layer
    per block, no residuals, fusion by sum), ``stereo`` (two channels, else one), ``num_basis`` (TasNet
    basis), ``segment_len`` / ``overlap_len`` (frame and hop in samples; the STFT's window and hop
    too), ``n_fft`` (must equal ``segment_len``), ``sample_rate``, ``num_sources`` (derived from
    ``sources`` when left out; must agree when given), ``use_gru`` (GRU instead of LSTM), ``rnn_klass``
    (any ``(dim_in, dim_out, num_layers) -> module`` with ``(x, hidden) -> (y, hidden)``, batch first),
    ``spec_branch_use_phase`` (real and imaginary parts, else magnitude with the mix's phase),
    ``norm_before_mask_estimate`` (RMSNorm before each mask projection); ``torch_compile`` is accepted
    and ignored (compile the module yourself). stemsep's: ``sources`` (names) and ``segment`` (seconds,
    the training length). Any input length works: it is padded to a whole number of hops and trimmed.
    """

    def __init__(self, *, dim: int = 500, small: bool = False, stereo: bool = True, num_basis: int = 1500,
                 segment_len: int = 1024, overlap_len: int = 512, n_fft: int = 1024, sample_rate: int = 44100,
                 num_sources: int | None = None, torch_compile: bool = False, use_gru: bool = False,
                 rnn_klass: Callable[..., nn.Module] | None = None, spec_branch_use_phase: bool = True,
                 norm_before_mask_estimate: bool = True, sources: list[str] | None = None,
                 segment: float | Fraction = 4):
        super().__init__()
        if sources is None:
            sources = default_source_names(num_sources)
        if num_sources is not None and num_sources != len(sources):
            raise StemsepError(f"HSTasNet num_sources={num_sources} disagrees with sources {list(sources)}")
        if not 0 < overlap_len < segment_len or segment_len % 2:
            raise StemsepError(f"HSTasNet needs an even segment_len above overlap_len > 0, got "
                               f"segment_len={segment_len}, overlap_len={overlap_len}")
        self.sources = list(sources)
        self.num_sources = len(self.sources)
        self.stereo, self.small = stereo, small
        self.audio_channels = channels = 2 if stereo else 1
        self.samplerate = self.sample_rate = sample_rate
        self.segment = segment
        self.segment_len, self.overlap_len, self.n_fft = segment_len, overlap_len, n_fft
        self.causal_pad = segment_len // 2
        self.spec_branch_use_phase = spec_branch_use_phase
        sources_count = self.num_sources

        # spectral branch
        self.stft = FrameSTFT(n_fft, hop_length=overlap_len, win_length=segment_len)
        parts = 2 if spec_branch_use_phase else 1
        spec_features = (n_fft // 2 + 1) * channels * parts
        self.spec_encode = nn.Sequential(SpecToFrames(channels), nn.Linear(spec_features, dim))
        self.to_spec_masks = nn.Sequential(
            nn.RMSNorm(dim) if norm_before_mask_estimate else nn.Identity(),
            nn.Linear(dim, spec_features * sources_count),
            FramesToSpecMasks(channels, parts, sources_count))

        # waveform branch (TasNet encoder / decoder)
        self.conv_encode = nn.Conv1d(channels, 2 * num_basis, segment_len, stride=overlap_len)
        self.basis_to_embed = nn.Sequential(nn.Conv1d(num_basis, dim, 1), ChannelsLast())
        self.to_waveform_masks = nn.Sequential(
            nn.RMSNorm(dim) if norm_before_mask_estimate else nn.Identity(),
            nn.Linear(dim, sources_count * num_basis),
            SplitSources(sources_count))
        self.conv_decode = WindowedDecoder(num_basis, channels, segment_len, stride=overlap_len)

        # masks start at identity, as the reference's: zero weights, unit bias, so every source begins as
        # the mix in each branch (the first step trains the mask heads; later ones reach the rest)
        for head in (self.to_spec_masks[1], self.to_waveform_masks[1]):
            nn.init.zeros_(head.weight)
            nn.init.constant_(head.bias, 1.0)

        # recurrent memory
        if rnn_klass is None:
            recurrent = nn.GRU if use_gru else nn.LSTM

            def rnn_klass(dim_in: int, dim_out: int, layers: int) -> nn.Module:
                return recurrent(dim_in, dim_out, layers, batch_first=True)

        layers = 1 if small else 2
        fusion = dim if small else 2 * dim
        self.pre_spec_branch = rnn_klass(dim, dim, layers)
        self.post_spec_branch = rnn_klass(dim, dim, layers)
        self.fusion_branch = rnn_klass(fusion, fusion, layers)
        self.pre_waveform_branch = rnn_klass(dim, dim, layers)
        self.post_waveform_branch = rnn_klass(dim, dim, layers)

    # ------------------------------------------------------------------------------ the network
    def _recur(self, rnn: nn.Module, x: torch.Tensor, hidden):
        out, hidden = rnn(x, hidden)
        return (out if self.small else x + out), hidden

    def separate_frames(self, audio: torch.Tensor, hiddens: Hiddens | None = None,
                        streaming: bool = False) -> tuple[torch.Tensor, Hiddens]:
        """The network on ``audio (B, C, (frames - 1) * overlap_len + segment_len)``, already padded, with
        the recurrent states ``hiddens`` (None: zeros) -> ``(B, S, C, same length)`` (the frames'
        overlap-add) and the next states. ``streaming`` normalizes the spectral inverse by its steady
        state (one frame at a time) rather than by the frames actually present."""
        mix_spec, spec_in = frame_spectrum(self.stft, audio, self.spec_branch_use_phase)
        masked, from_wave, hiddens = self.core(audio, spec_in, hiddens)
        return spectra_to_waveforms(self.stft, masked, mix_spec, streaming) + from_wave, hiddens

    def core(self, audio: torch.Tensor, spec_in: torch.Tensor,
             hiddens: Hiddens | None = None) -> tuple[torch.Tensor, torch.Tensor, Hiddens]:
        """The network proper on real tensors (what ``stemsep export`` traces, without ``hiddens``): the
        padded ``audio (B, C, L)`` and its frames' spectrum ``spec_in (B, C, freqs, frames, parts)``
        (:func:`frame_spectrum`) -> the masked spectra ``(B, S, C, freqs, frames, parts)``, the waveform
        branch's stems ``(B, S, C, L)`` and the next recurrent states."""
        batch, channels = audio.shape[:2]
        sources = self.num_sources
        pre_spec, pre_wave, fusion, post_spec, post_wave = hiddens if hiddens is not None else (None,) * 5
        spec_in = spec_in.flatten(0, 1)  # (B*C, freqs, frames, parts)

        # encoders
        spec_encoded = self.spec_encode(spec_in)  # (B, frames, dim)
        gate_in, gate = self.conv_encode(audio).chunk(2, dim=1)
        basis = gate_in.relu() * gate.sigmoid()  # (B, basis, frames), non-negative
        wave_encoded = self.basis_to_embed(basis)  # (B, frames, dim)

        # memory: per branch, fused, per branch again
        spec, pre_spec = self._recur(self.pre_spec_branch, spec_encoded, pre_spec)
        wave, pre_wave = self._recur(self.pre_waveform_branch, wave_encoded, pre_wave)
        fused, fusion = self._recur(self.fusion_branch, spec + wave if self.small else torch.cat((spec, wave), -1),
                                    fusion)
        fused_spec, fused_wave = (fused, fused) if self.small else fused.chunk(2, dim=-1)
        spec, post_spec = self._recur(self.post_spec_branch, fused_spec + spec_encoded, post_spec)
        wave, post_wave = self._recur(self.post_waveform_branch, fused_wave + wave_encoded, post_wave)

        # spectral masks on the mix's spectrum (inverted by the caller)
        spec_masks = self.to_spec_masks(spec)  # (B*C, freqs, frames, parts, S)
        masked = (spec_in.unsqueeze(-1) * spec_masks).movedim(-1, 1)  # (B*C, S, freqs, frames, parts)
        masked = masked.reshape(batch, channels, *masked.shape[1:]).transpose(1, 2)

        # waveform masks on the basis, decoded
        wave_masks = self.to_waveform_masks(wave)  # (B, frames, basis, S)
        masked_basis = basis.unsqueeze(1) * wave_masks.permute(0, 3, 2, 1)  # (B, S, basis, frames)
        from_wave = self.conv_decode(masked_basis.flatten(0, 1)).reshape(batch, sources, channels, -1)

        return masked, from_wave, (pre_spec, pre_wave, fusion, post_spec, post_wave)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise StemsepError(f"HSTasNet expects (batch, {self.audio_channels}, time), got {tuple(mix.shape)}")
        length = mix.shape[-1]
        out, _ = self.separate_frames(pad_to_frames(mix, self.overlap_len, self.causal_pad))
        return out[..., self.causal_pad:self.causal_pad + length]

    def export_parts(self) -> ExportParts:
        """Core and front end for ``stemsep export`` (see :func:`stemsep.contract.export_parts`)."""
        return ExportParts(core=HSTasNetCore(self), front_end=HSTasNetFrontEnd.of(self), input_names=["audio", "spec"],
                           output_names=["spec_out", "wave"])

    # ------------------------------------------------------------------------------- streaming
    @property
    def stream_hop(self) -> int | None:
        """Samples per :meth:`stream_step` (the stemsep streaming contract): ``overlap_len`` when the
        steps equal the offline forward (``segment_len == 2 * overlap_len``, the paper's framing), else
        None (the network is then streamed with windowed geometry)."""
        return self.overlap_len if self.segment_len == 2 * self.overlap_len else None

    @property
    def stream_latency(self) -> int | None:
        """Samples by which the steps' output lags the input (the stemsep streaming contract): the
        frame's look-ahead, ``overlap_len``; None when :attr:`stream_hop` is."""
        return self.stream_hop

    def stream_step(self, chunk: torch.Tensor, state: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        """One step of stateful streaming: ``chunk (B, audio_channels, overlap_len)`` (the next samples of
        the mix) and the state of the previous step (None at the start) -> ``(B, S, audio_channels,
        overlap_len)`` stems and the next state. The stems are those of the input ``overlap_len``
        samples earlier (the frame's look-ahead): step by step, the output is the offline ``forward``
        of the whole input delayed by ``overlap_len`` samples (the first ``overlap_len`` are the
        stems of silence before the start), equal to the reference's ``init_stateful_transform_fn``.
        The state holds the last ``segment_len - overlap_len`` input samples, the recurrent states
        and the overlap-add tail."""
        batch, channels, length = chunk.shape
        hop, width = self.overlap_len, self.segment_len
        if channels != self.audio_channels or length != hop:
            raise StemsepError(f"HSTasNet.stream_step takes (batch, {self.audio_channels}, {hop}) chunks, "
                               f"got {tuple(chunk.shape)}")
        if state is None:
            past = chunk.new_zeros(batch, channels, width - hop)
            hiddens, tail = None, chunk.new_zeros(batch, self.num_sources, channels, width - hop)
        else:
            past, hiddens, tail = state
        frame = torch.cat((past, chunk), dim=-1)
        out, hiddens = self.separate_frames(frame, hiddens, streaming=True)  # one frame: (B, S, C, width)
        out = out + F.pad(tail, (0, hop))
        return out[..., :hop], (frame[..., hop:], hiddens, out[..., hop:])
