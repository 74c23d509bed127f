"""What BS-RoFormer and Mel-Band RoFormer share: the stemsep contract, the STFT front end, the
axial time / frequency transformer stack, complex masking and the export split.

A mixture ``(B, C, T)`` becomes the complex STFT as real values ``(B, F * C, frames, 2)``
(frequency-major, channels interleaved, as the reference's ``b (f s) t c``). The network core
(:meth:`RoFormerBase.core`) turns it into one complex mask per stem, ``(B, S, frames, F * C, 2)``;
the mask multiplies the mixture's STFT and the inverse STFT gives the stems ``(B, S, C, T)``.
STFT, complex multiplication and ISTFT are the front end (:class:`RoFormerFrontEnd`), which is
what ``stemsep export`` leaves outside the exported graph (:meth:`RoFormerBase.export_parts`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from stemsep.contract import DEFAULT_SOURCES, ExportParts
from stemsep.errors import StemsepError
from stemsep.models.roformer.rope import RotaryEmbedding
from stemsep.models.roformer.transformer import Transformer
from stemsep.models.spectral import SpectralCore

# The reference's multi-resolution STFT loss settings, which its forward applies when given a target,
# with their defaults: our constructors accept them (configs pass them) and nothing reads them; the
# loss is the LightningModule's ``model.loss``. Key -> (default, ``MultiResolutionL1Loss`` init arg).
UNUSED_LOSS_SETTINGS = {
    "multi_stft_resolution_loss_weight": (1.0, "weight"),
    "multi_stft_resolutions_window_sizes": ((4096, 2048, 1024, 512, 256), "window_sizes"),
    "multi_stft_hop_size": (147, "hop_length"),
    "multi_stft_normalized": (False, "normalized"),
}


def _is_default(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        try:
            return tuple(value) == default
        except TypeError:
            return False
    return value == default


def warn_unused_loss_settings(name: str, settings: dict[str, Any]) -> None:
    """One ``UserWarning`` naming the ``multi_stft_*`` settings given other values than the
    reference's defaults: they have no effect here (the loss is ``model.loss``)."""
    changed = {key: value for key, value in settings.items() if not _is_default(value, UNUSED_LOSS_SETTINGS[key][0])}
    if changed:
        given = ", ".join(f"{key}={value!r}" for key, value in changed.items())
        loss = ", ".join(f"{UNUSED_LOSS_SETTINGS[key][1]}: {value!r}" for key, value in changed.items())
        verb = "has" if len(changed) == 1 else "have"
        warnings.warn(f"{name}: {given} {verb} no effect (the reference's training loss settings; stemsep's loss is "
                      f"model.loss, e.g. stemsep.training.losses.MultiResolutionL1Loss with {loss})",
                      UserWarning, stacklevel=5)  # the caller of the (records_init_args-wrapped) constructor


def resolve_sources(name: str, sources: Sequence[str] | None, num_stems: int | None) -> list[str]:
    """The stems' names from ``sources`` and/or the reference's ``num_stems`` (which must agree)."""
    if sources is not None:
        sources = [str(s) for s in sources]
        if not sources:
            raise StemsepError(f"{name}: sources is empty")
        if num_stems is not None and num_stems != len(sources):
            raise StemsepError(f"{name}: num_stems {num_stems} disagrees with the {len(sources)} sources {sources}")
        return sources
    num_stems = 1 if num_stems is None else int(num_stems)
    if num_stems == 1:
        return ["vocals"]
    if num_stems == len(DEFAULT_SOURCES):
        return list(DEFAULT_SOURCES)
    raise StemsepError(f"{name}: num_stems {num_stems} needs sources (a list of {num_stems} stem names)")


@dataclass(frozen=True)
class RoFormerFrontEnd:
    """STFT before and complex masking + ISTFT after the RoFormer core (also for exported models).

    Implements :class:`stemsep.contract.ExportFrontEnd`: ``prepare`` gives the core its input,
    ``finish`` turns the masks into waveforms; ``config()`` rebuilds it.
    """

    audio_channels: int
    n_fft: int
    hop_length: int
    win_length: int
    normalized: bool = False
    zero_dc: bool = True

    def config(self) -> dict[str, Any]:
        return asdict(self)

    def _stft_kwargs(self, device: torch.device) -> dict[str, Any]:
        return dict(n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                    normalized=self.normalized, window=torch.hann_window(self.win_length, device=device))

    def spectrogram(self, mix: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> real ``(B, F * C, frames, 2)``, float32."""
        batch, channels, length = mix.shape
        flat = mix.reshape(batch * channels, length).float()
        z = torch.view_as_real(torch.stft(flat, **self._stft_kwargs(mix.device), return_complex=True))
        z = z.view(batch, channels, *z.shape[1:])  # (B, C, F, frames, 2)
        return z.transpose(1, 2).reshape(batch, -1, *z.shape[3:])

    def waveforms(self, spec: torch.Tensor, masks: torch.Tensor, length: int) -> torch.Tensor:
        """Mixture STFT ``(B, F * C, frames, 2)`` times the core's masks ``(B, S, frames, F * C, 2)``,
        inverted to ``(B, S, C, length)``."""
        mixture = torch.view_as_complex(spec.transpose(1, 2).contiguous())  # (B, frames, F * C)
        if self.zero_dc:  # the output's DC bin is zero: zero it in the (S times smaller) mixture
            mixture = torch.cat([torch.zeros_like(mixture[..., :self.audio_channels]),
                                 mixture[..., self.audio_channels:]], dim=-1)
        z = torch.view_as_complex(masks.float().contiguous()) * mixture[:, None]  # (B, S, frames, F * C)
        batch, stems, frames, _ = z.shape
        channels = self.audio_channels
        z = z.view(batch, stems, frames, -1, channels)
        z = z.permute(0, 1, 4, 3, 2).reshape(batch * stems * channels, -1, frames)
        out = torch.istft(z, **self._stft_kwargs(z.device), length=length)
        return out.view(batch, stems, channels, length)

    # -- stemsep.contract.ExportFrontEnd -------------------------------------------------------
    def prepare(self, mix: torch.Tensor) -> tuple[tuple[torch.Tensor], torch.Tensor]:
        spec = self.spectrogram(mix)
        return (spec,), spec

    def finish(self, outputs: tuple[torch.Tensor, ...], state: torch.Tensor, length: int) -> torch.Tensor:
        return self.waveforms(state, outputs[0], length)


class RoFormerBase(nn.Module):
    """The shared network. Subclasses build ``band_split`` and ``mask_estimators`` and define
    :meth:`_band_input` (STFT values -> band-ordered features) and :meth:`_band_output`
    (stacked band masks -> masks over the full STFT)."""

    @property
    def zero_dc(self) -> bool:
        """Whether the output's DC bin is zeroed (MSST's ``zero_dc``)."""
        return self.front_end.zero_dc

    # -- construction ------------------------------------------------------------------------
    def _init_common(self, name: str, *, stereo: bool, sources, num_stems, samplerate: int, segment,
                     stft_n_fft: int, stft_hop_length: int, stft_win_length: int, stft_normalized: bool,
                     stft_window_fn, zero_dc: bool, multi_stft_window_fn, use_pope: bool,
                     checkpoint_blocks: bool, use_torch_checkpoint: bool, skip_connection: bool,
                     unused_loss_settings: dict[str, Any]) -> None:
        if stft_window_fn is not None:
            raise StemsepError(f"{name}: stft_window_fn: only the default Hann window is supported, got "
                               f"{stft_window_fn!r}")
        if multi_stft_window_fn not in (None, torch.hann_window):
            raise StemsepError(f"{name}: multi_stft_window_fn: only the default Hann window is supported")
        if use_pope:
            raise StemsepError(f"{name}: use_pope: PoPE position embeddings are not supported (rotary only)")
        warn_unused_loss_settings(name, unused_loss_settings)
        self.stereo = bool(stereo)
        self.audio_channels = 2 if stereo else 1
        self.sources = resolve_sources(name, sources, num_stems)
        self.num_stems = len(self.sources)
        self.samplerate = int(samplerate)
        self.segment = segment
        self.front_end = RoFormerFrontEnd(self.audio_channels, int(stft_n_fft), int(stft_hop_length),
                                          int(stft_win_length), bool(stft_normalized), bool(zero_dc))
        self.checkpoint_blocks = bool(checkpoint_blocks or use_torch_checkpoint)
        self.skip_connection = bool(skip_connection)

    def _build_layers(self, *, dim: int, depth: int, time_transformer_depth: int, freq_transformer_depth: int,
                      linear_transformer_depth: int, dim_head: int, heads: int, attn_dropout: float,
                      ff_dropout: float, flash_attn: bool, linear_flash_attn: bool, norm_output: bool,
                      value_residual: bool) -> None:
        """``layers``: per block ``[linear transformer (if any), time transformer, freq transformer]``."""
        common = dict(dim=dim, heads=heads, dim_head=dim_head, attn_dropout=attn_dropout, ff_dropout=ff_dropout,
                      norm_output=norm_output)
        time_rope, freq_rope = RotaryEmbedding(dim_head), RotaryEmbedding(dim_head)
        self.layers = nn.ModuleList()
        for index in range(depth):
            mix_values = value_residual and index > 0
            block = []
            if linear_transformer_depth > 0:
                block.append(Transformer(depth=linear_transformer_depth, linear_attn=True,
                                         flash_attn=linear_flash_attn, **common))
            block.append(Transformer(depth=time_transformer_depth, rotary_embed=time_rope, flash_attn=flash_attn,
                                     value_residual=mix_values, **common))
            block.append(Transformer(depth=freq_transformer_depth, rotary_embed=freq_rope, flash_attn=flash_attn,
                                     value_residual=mix_values, **common))
            self.layers.append(nn.ModuleList(block))

    # -- the network ---------------------------------------------------------------------------
    def _band_input(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, F * C, frames, 2)`` -> ``(B, frames, features)`` in band order."""
        raise NotImplementedError

    def _band_output(self, masks: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        """``(B, S, frames, features)`` -> ``(B, S, frames, F * C, 2)``."""
        raise NotImplementedError

    def _run(self, module: nn.Module, *args):
        if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def core(self, spec: torch.Tensor) -> torch.Tensor:
        """The network proper, real tensors only (what ``stemsep export`` traces): the mixture's
        STFT ``(B, F * C, frames, 2)`` -> complex masks ``(B, S, frames, F * C, 2)`` (time-major, as
        the mask estimators produce them)."""
        dtype = self.band_split.to_features[0][0].gamma.dtype
        x = self._run(self.band_split, self._band_input(spec).to(dtype))  # (B, T, bands, D)
        batch, frames, bands, dim = x.shape
        time_values = freq_values = None
        previous: list[torch.Tensor] = []
        for block in self.layers:
            *linear, time_transformer, freq_transformer = block
            if linear:
                x = self._run(linear[0], x.reshape(batch, frames * bands, dim))[0].view(batch, frames, bands, dim)
            if self.skip_connection:
                for earlier in previous:
                    x = x + earlier
            x = x.transpose(1, 2).reshape(batch * bands, frames, dim)
            x, values = self._run(time_transformer, x, time_values)
            time_values = values if time_values is None else time_values
            x = x.view(batch, bands, frames, dim).transpose(1, 2).reshape(batch * frames, bands, dim)
            x, values = self._run(freq_transformer, x, freq_values)
            freq_values = values if freq_values is None else freq_values
            x = x.view(batch, frames, bands, dim)
            if self.skip_connection:
                previous.append(x)
        final_norm = getattr(self, "final_norm", None)  # BS-RoFormer's; Mel-Band RoFormer has none
        if final_norm is not None:
            x = final_norm(x)
        masks = torch.stack([self._run(estimate, x) for estimate in self.mask_estimators], dim=1)
        return self._band_output(masks, spec)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, S, C, T)`` (also for one stem)."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise StemsepError(f"{type(self).__name__}: expected a mixture (batch, {self.audio_channels}, time), "
                               f"got shape {tuple(mix.shape)} (stereo={self.stereo})")
        length = mix.shape[-1]
        shortest = self.front_end.n_fft // 2 + 1  # the STFT's reflect padding needs this many samples
        padded = F.pad(mix, (0, shortest - length)) if length < shortest else mix
        spec = self.front_end.spectrogram(padded)
        masks = self.core(spec)
        if self.checkpoint_blocks and self.training and torch.is_grad_enabled():  # ISTFT recomputed too
            out = checkpoint(self.front_end.waveforms, spec, masks, padded.shape[-1], use_reentrant=False)
        else:
            out = self.front_end.waveforms(spec, masks, padded.shape[-1])
        return out[..., :length].to(mix.dtype)

    def export_parts(self):
        """Core and front end for ``stemsep export`` (:func:`stemsep.contract.export_parts`)."""
        return ExportParts(core=SpectralCore(self), front_end=self.front_end, input_names=["spec"],
                           output_names=["masks"])
