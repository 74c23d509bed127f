"""What HDemucs and HTDemucs share: the two-branch U-Net and the spectrogram plumbing.

The frequency branch works on the complex spectrogram given as channels (CaC) or on its
magnitude; the time branch on the waveform. In HDemucs the branches merge where the time
branch's stride equals the STFT hop (the "empty" time layer injects into the frequency
layer) and split again symmetrically in the decoder. HTDemucs keeps them apart and puts
a cross-domain transformer between encoder and decoder instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from stemsep.contract import ExportParts
from stemsep.errors import StemsepError
from stemsep.models import spectral
from stemsep.models.layers import DecoderLayer, EncoderLayer, ScaledEmbedding

Bottleneck = Callable[[torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor | None, torch.Tensor | None]"]


class HybridBase(nn.Module):
    """Builds the encoder/decoder stacks and runs them; subclasses define the bottleneck."""

    hybrid: bool = True
    hybrid_old: bool = False

    def _init_hybrid(self, args: Mapping[str, Any]) -> int:
        """:meth:`_init_common`, then :meth:`_build_unet`, each given its keyword parameters by
        name from ``args``: the subclass constructor's ``locals()`` (its own arguments and its
        ``dconv_kw``), so the settings both architectures share are listed here, once.
        Returns the channel count of the deepest encoder layer (what :meth:`_build_unet` returns)."""
        width = 0
        for method in (self._init_common, self._build_unet):
            width = method(**{name: args[name] for name in inspect.signature(method).parameters})
        return width

    def _init_common(self, *, cac: bool, wiener_iters: int, end_iters: int, multi_freqs, wiener_residual: bool,
                     audio_channels: int, sources, kernel_size: int, context: int, stride: int, depth: int,
                     channels: int, samplerate: int, segment, nfft: int) -> None:
        """Check and store the settings both hybrid architectures share (``self.hybrid`` set first)."""
        self._check_common(cac, wiener_iters, end_iters, multi_freqs)
        self.cac, self.wiener_residual, self.audio_channels = cac, wiener_residual, audio_channels
        self.sources = list(sources)
        self.kernel_size, self.context, self.stride, self.depth = kernel_size, context, stride, depth
        self.channels, self.samplerate, self.segment = channels, samplerate, segment
        self.nfft, self.hop_length = nfft, nfft // 4
        self.wiener_iters, self.end_iters = wiener_iters, end_iters

    def _check_common(self, cac: bool, wiener_iters: int, end_iters: int, multi_freqs) -> None:
        if multi_freqs:
            raise StemsepError(f"multi_freqs: frequency band splitting is not supported, got {multi_freqs!r}")
        if self.hybrid and wiener_iters != end_iters:
            raise StemsepError(f"wiener_iters ({wiener_iters}) must equal end_iters ({end_iters})")
        if not cac and wiener_iters >= 0:
            raise StemsepError("cac=False needs wiener_iters=-1 (masking); Wiener filtering is not supported")

    def _build_unet(self, *, audio_channels: int, channels: int, channels_time: int | None, growth: float,
                    nfft: int, cac: bool, depth: int, rewrite: bool, freq_emb: float, emb_scale: float,
                    emb_smooth: bool, kernel_size: int, time_stride: int, stride: int, context: int,
                    context_enc: int, norm_starts: int, norm_groups: int, dconv_mode: int,
                    dconv_kw: Callable[[int], dict]) -> int:
        """Create ``encoder``, ``decoder``, ``tencoder``, ``tdecoder`` and ``freq_emb``; return the
        channel count of the deepest encoder layer (an ``int`` whatever the type of ``growth``).

        Frequency layers stride over the ``nfft // 2`` bins until at most ``kernel_size``
        remain; that last one convolves the remaining bins away (no padding) and, in a
        hybrid model, is where the time branch is injected. Deeper layers are 1D over time
        with ``time_stride``. The time branch exists when ``self.hybrid``; the output layers
        have one group of ``audio_channels`` per source in ``self.sources``.
        """
        hybrid, n_sources = self.hybrid, len(self.sources)
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        if hybrid:
            self.tencoder = nn.ModuleList()
            self.tdecoder = nn.ModuleList()
        self.freq_emb = None
        cac_factor = 2 if cac else 1
        chin, chin_z = audio_channels, audio_channels * cac_factor
        chout, chout_z = channels_time or channels, channels
        freqs = nfft // 2
        for index in range(depth):
            freq = freqs > 1
            ker, stri, pad, last_freq = kernel_size, stride, True, False
            if not freq:
                ker, stri = 2 * time_stride, time_stride
            elif freqs <= kernel_size:
                ker, pad, last_freq = freqs, False, True
            common = dict(norm=index >= norm_starts, rewrite=rewrite, norm_groups=norm_groups,
                          dconv_kw=dconv_kw(index))
            time_kw = dict(kernel_size=kernel_size, stride=stride, freq=False, pad=True, **common)
            enc_dconv, dec_dconv = bool(dconv_mode & 1), bool(dconv_mode & 2)
            if last_freq:
                chout_z = max(chout, chout_z)
                chout = chout_z
            self.encoder.append(EncoderLayer(chin_z, chout_z, kernel_size=ker, stride=stri, freq=freq,
                                             pad=pad, dconv=enc_dconv, context=context_enc, **common))
            if hybrid and freq:
                self.tencoder.append(EncoderLayer(chin, chout, dconv=enc_dconv, context=context_enc,
                                                  empty=last_freq, **time_kw))
            if index == 0:
                chin = audio_channels * n_sources
                chin_z = chin * cac_factor
            self.decoder.insert(0, DecoderLayer(chout_z, chin_z, dconv=dec_dconv, last=index == 0,
                                                context=context, kernel_size=ker, stride=stri, freq=freq,
                                                pad=pad, **common))
            if hybrid and freq:
                self.tdecoder.insert(0, DecoderLayer(chout, chin, dconv=dec_dconv, empty=last_freq,
                                                     last=index == 0, context=context, **time_kw))
            chin, chin_z = chout, chout_z
            chout, chout_z = int(growth * chout), int(growth * chout_z)
            if freq:
                freqs = 1 if freqs <= kernel_size else freqs // stride
            if index == 0 and freq_emb:
                self.freq_emb = ScaledEmbedding(freqs, chin_z, smooth=emb_smooth, scale=emb_scale)
                self.freq_emb_scale = freq_emb
        return chin_z

    # -- spectrogram plumbing -------------------------------------------------------------
    @property
    def front_end(self) -> spectral.FrontEnd:
        """STFT before and masking / ISTFT after :meth:`core` (also used by exported models)."""
        return spectral.FrontEnd(self.nfft, hybrid=self.hybrid, reflect=not self.hybrid_old, cac=self.cac)

    def export_parts(self) -> ExportParts:
        """:meth:`core` and :attr:`front_end` for ``stemsep export`` (:func:`stemsep.contract.export_parts`)."""
        return ExportParts(core=HybridCore(self), front_end=self.front_end, input_names=["mix", "spec"],
                           output_names=["spec_out", "time_out"] if self.hybrid else ["spec_out"])

    # -- the network ------------------------------------------------------------------------
    def _bottleneck(self, x: torch.Tensor, xt: torch.Tensor | None):
        """Transform the deepest encodings; ``None`` means "start the decoder from zeros"."""
        return None, None

    def _separate(self, mix: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, S, C, T)`` at the input's own length."""
        front = self.front_end
        z = front.spectrogram(mix)
        spec_out, time_out = self.core(mix, front.channels(z))
        return front.waveforms(z, spec_out, time_out, mix.shape[-1])

    def core(self, mix: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network proper, real tensors only (what ``stemsep export`` traces).

        ``mix (B, C, T)`` and its spectrogram as channels ``x (B, C', F, frames)``
        (``front_end.channels(front_end.spectrogram(mix))``) -> the frequency branch's output
        ``(B, S, C', F, frames)`` (CaC spectrogram or magnitude mask) and the time branch's
        waveforms ``(B, S, C, T)`` (``None`` for a spectrogram-only model).
        """
        length = mix.shape[-1]
        batch, _, n_freqs, n_frames = x.shape
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        xt = None
        if self.hybrid:
            meant = mix.mean(dim=(1, 2), keepdim=True)
            stdt = mix.std(dim=(1, 2), keepdim=True)
            xt = (mix - meant) / (1e-5 + stdt)

        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if self.hybrid and idx < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = self.tencoder[idx]
                xt = tenc(xt)
                if tenc.empty:
                    inject = xt  # same stride as the frequency branch now: merge
                else:
                    saved_t.append(xt)
            x = encode(x, inject)
            if idx == 0 and self.freq_emb is not None:
                bins = torch.arange(x.shape[-2], device=x.device)
                x = x + self.freq_emb_scale * self.freq_emb(bins).t()[None, :, :, None]
            saved.append(x)

        x, xt = self._bottleneck(x, xt if self.hybrid else None)

        offset = self.depth - len(self.tdecoder) if self.hybrid else self.depth
        for idx, decode in enumerate(self.decoder):
            x, pre = decode(x, saved.pop(), lengths.pop())
            if idx >= offset:
                tdec = self.tdecoder[idx - offset]
                length_t = lengths_t.pop()
                if tdec.empty:
                    xt, _ = tdec(pre[:, :, 0], None, length_t)  # the branches split here
                else:
                    xt, _ = tdec(xt, saved_t.pop(), length_t)

        n_sources = len(self.sources)
        x = torch.addcmul(mean[:, None], x.view(batch, n_sources, -1, n_freqs, n_frames), std[:, None])
        if not self.hybrid:
            return x, None
        return x, torch.addcmul(meant[:, None], xt.view(batch, n_sources, -1, length), stdt[:, None])


class HybridCore(nn.Module):
    """``(mix, spec) -> (spec_out, time_out)`` of a hybrid model, ``time_out`` left out when absent."""

    def __init__(self, net: HybridBase):
        super().__init__()
        self.net = net

    def forward(self, mix: torch.Tensor, spec: torch.Tensor):
        spec_out, time_out = self.net.core(mix, spec)
        return (spec_out,) if time_out is None else (spec_out, time_out)
