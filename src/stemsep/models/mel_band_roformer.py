"""Mel-Band RoFormer (Wang, Lu, Kong, Hung 2023, arXiv 2310.01809).

BS-RoFormer (:mod:`stemsep.models.bs_roformer`) with the fixed bands replaced by ``num_bands``
overlapping bands on the mel scale: the support of a mel filter bank (triangular filters on
Slaney's mel scale, as ``librosa.filters.mel``) says which STFT bins each band takes, so
neighbouring bands share bins. Each band's bins are gathered into its token; the masks the
bands estimate for a shared bin are averaged. Every axial transformer ends with an RMSNorm
(no final norm).

Our own code, interchangeable with the ``bs-roformer`` package's ``MelBandRoformer`` in the
layout of version 0.5.x as copied in Music-Source-Separation-Training (MSST), the code the
community checkpoints (e.g. Kimberley Jensen's vocal model) are trained and run with: same
constructor keywords, same ``state_dict`` keys. Defaults are MSST's; ``bs-roformer`` 0.5.1
itself is ``linear_transformer_depth=1, zero_dc=False`` (and its ``state_dict`` of a model
without linear transformers, which numbers the block's transformers 1 and 2, loads too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch

from stemsep.contract import records_init_args
from stemsep.models.roformer.bands import BandSplit, MaskEstimator, mel_band_layout
from stemsep.models.roformer.base import RoFormerBase

_REFERENCE_SLOT = re.compile(r"^layers\.(\d+)\.([12])\.")


@records_init_args
class MelBandRoFormer(RoFormerBase):
    """Mel-Band RoFormer: ``forward(mix (B, C, T)) -> (B, len(sources), C, T)``.

    Keywords as :class:`stemsep.models.BSRoFormer`, with ``num_bands`` (mel bands) and
    ``sample_rate`` (for the mel scale; also the contract's ``samplerate``) instead of
    ``freqs_per_bands``; ``linear_flash_attn`` (default ``flash_attn``) and
    ``match_input_audio_length`` (accepted: the output always has the input's length) as in
    the reference. ``mask_estimator_depth`` counts hidden layers here (the reference's MLP).
    The ``multi_stft_*`` loss settings are accepted and have no effect, as in BSRoFormer (the
    loss is ``model.loss``).
    """

    def __init__(self, dim: int, *, depth: int, stereo: bool = False, num_stems: int | None = None,
                 time_transformer_depth: int = 2, freq_transformer_depth: int = 2, linear_transformer_depth: int = 0,
                 num_bands: int = 60, dim_head: int = 64, heads: int = 8, attn_dropout: float = 0.1,
                 ff_dropout: float = 0.1, flash_attn: bool = True, linear_flash_attn: bool | None = None,
                 dim_freqs_in: int = 1025, sample_rate: int = 44100, stft_n_fft: int = 2048,
                 stft_hop_length: int = 512, stft_win_length: int = 2048, stft_normalized: bool = False,
                 stft_window_fn: Any = None, zero_dc: bool = True, mask_estimator_depth: int = 1,
                 multi_stft_resolution_loss_weight: float = 1.0,
                 multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
                 multi_stft_hop_size: int = 147, multi_stft_normalized: bool = False, multi_stft_window_fn: Any = None,
                 match_input_audio_length: bool = False, mlp_expansion_factor: int = 4,
                 use_torch_checkpoint: bool = False, skip_connection: bool = False, use_pope: bool = False,
                 sage_attention: bool = False, sources: list[str] | None = None,
                 segment: float | Fraction | None = 8, checkpoint_blocks: bool = False):
        super().__init__()
        self._init_common("MelBandRoFormer", stereo=stereo, sources=sources, num_stems=num_stems,
                          samplerate=sample_rate, segment=segment, stft_n_fft=stft_n_fft,
                          stft_hop_length=stft_hop_length, stft_win_length=stft_win_length,
                          stft_normalized=stft_normalized, stft_window_fn=stft_window_fn, zero_dc=zero_dc,
                          multi_stft_window_fn=multi_stft_window_fn, use_pope=use_pope,
                          checkpoint_blocks=checkpoint_blocks, use_torch_checkpoint=use_torch_checkpoint,
                          skip_connection=skip_connection,
                          unused_loss_settings=dict(
                              multi_stft_resolution_loss_weight=multi_stft_resolution_loss_weight,
                              multi_stft_resolutions_window_sizes=multi_stft_resolutions_window_sizes,
                              multi_stft_hop_size=multi_stft_hop_size, multi_stft_normalized=multi_stft_normalized))
        self.linear_transformer_depth = linear_transformer_depth
        self._build_layers(dim=dim, depth=depth, time_transformer_depth=time_transformer_depth,
                           freq_transformer_depth=freq_transformer_depth,
                           linear_transformer_depth=linear_transformer_depth, dim_head=dim_head, heads=heads,
                           attn_dropout=attn_dropout, ff_dropout=ff_dropout, flash_attn=flash_attn,
                           linear_flash_attn=flash_attn if linear_flash_attn is None else linear_flash_attn,
                           norm_output=True, value_residual=False)

        layout = mel_band_layout(sample_rate, stft_n_fft, num_bands)  # (bands, freqs)
        channels = self.audio_channels
        indices = torch.arange(layout.shape[1]).expand_as(layout)[layout]  # band after band
        indices = (indices[:, None] * channels + torch.arange(channels)).flatten()  # (freq, channel) rows
        self.register_buffer("freq_indices", indices, persistent=False)
        self.register_buffer("num_bands_per_freq", layout.sum(dim=0).repeat_interleave(channels), persistent=False)
        dim_inputs = tuple(2 * int(n) * channels for n in layout.sum(dim=1))
        self.band_split = BandSplit(dim, dim_inputs)
        self.mask_estimators = torch.nn.ModuleList(
            MaskEstimator(dim, dim_inputs, hidden_layers=mask_estimator_depth,
                          mlp_expansion_factor=mlp_expansion_factor) for _ in self.sources)
        self.register_load_state_dict_pre_hook(_accept_reference_numbering)

    def _band_input(self, spec: torch.Tensor) -> torch.Tensor:
        batch, _, frames, _ = spec.shape
        return spec[:, self.freq_indices].transpose(1, 2).reshape(batch, frames, -1)

    def _band_output(self, masks: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        batch, stems, frames, _ = masks.shape
        masks = masks.float().view(batch, stems, frames, -1, 2)  # (B, S, frames, selected bins, 2)
        summed = masks.new_zeros(batch, stems, frames, spec.shape[1], 2).index_add(3, self.freq_indices, masks)
        return summed / self.num_bands_per_freq.to(summed.dtype)[:, None]


def _accept_reference_numbering(module: MelBandRoFormer, state_dict: dict, prefix: str, *args) -> None:
    """bs-roformer 0.5.x keeps an empty slot 0 for the linear transformer in every block when
    ``linear_transformer_depth`` is 0 (time, frequency transformers at 1, 2); MSST (and we)
    number them 0, 1. Renumber such a ``state_dict`` while it loads."""
    if module.linear_transformer_depth > 0:
        return
    keys = [k for k in state_dict if k.startswith(prefix)]
    if not any(_REFERENCE_SLOT.match(k[len(prefix):]) and k[len(prefix):].split(".")[2] == "2" for k in keys):
        return
    for key in keys:
        local = key[len(prefix):]
        match = _REFERENCE_SLOT.match(local)
        if match:
            renamed = f"layers.{match.group(1)}.{int(match.group(2)) - 1}." + local[match.end():]
            state_dict[prefix + renamed] = state_dict.pop(key)
