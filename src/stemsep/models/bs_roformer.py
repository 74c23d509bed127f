"""BS-RoFormer: band-split RoPE transformer (Lu, Wang, Kong, Hung 2023, arXiv 2309.02612).

The complex STFT (2048 points, hop 512, stereo channels folded into frequency) is cut into 62
fixed bands of consecutive bins (``freqs_per_bands``; 2 bins per band at the bottom up to 128 at
the top); each band becomes a ``dim``-wide token per frame. ``depth`` blocks each run a time
transformer along the frames of every band, then a frequency transformer across the bands of
every frame (rotary position embeddings, RMSNorm, gated attention). Per stem an MLP + GLU per
band estimates a complex mask, which multiplies the mixture's STFT before the inverse STFT.

Our own code, interchangeable with the ``bs-roformer`` package's ``BSRoformer`` in the layout
of version 0.5.x as copied in Music-Source-Separation-Training (MSST), the code the community
checkpoints are trained and run with: same constructor keywords, same ``state_dict`` keys.
Defaults are MSST's; ``bs-roformer`` 0.5.1 itself is ``value_residual=True, zero_dc=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch

from stemsep.contract import records_init_args
from stemsep.errors import StemsepError
from stemsep.models.roformer.bands import BandSplit, MaskEstimator
from stemsep.models.roformer.base import RoFormerBase
from stemsep.models.roformer.transformer import RMSNorm

# The paper's band layout for a 2048-point STFT (1025 bins): 24 x 2, 12 x 4, 8 x 12, 8 x 24, 8 x 48, 128, 129.
DEFAULT_FREQS_PER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)


@records_init_args
class BSRoFormer(RoFormerBase):
    """BS-RoFormer: ``forward(mix (B, C, T)) -> (B, len(sources), C, T)``; ``C`` is 2 with ``stereo``, else 1.

    Reference keywords (bs-roformer 0.5.x / MSST): ``dim``, ``depth`` (blocks), ``stereo``,
    ``num_stems``, ``time_transformer_depth`` / ``freq_transformer_depth`` (layers per axial
    transformer), ``linear_transformer_depth`` (MSST: a linear-attention transformer over all
    tokens first in each block), ``freqs_per_bands`` (must sum to ``stft_n_fft // 2 + 1``),
    ``dim_head``, ``heads``, ``attn_dropout``, ``ff_dropout``, ``flash_attn`` (SDPA kernels, else
    plain attention), ``stft_*``, ``zero_dc`` (MSST: drop the DC bin of the output),
    ``mask_estimator_depth``, ``mlp_expansion_factor``, ``skip_connection`` (MSST: each block
    adds the outputs of all earlier blocks to its input), ``use_torch_checkpoint`` (same as
    ``checkpoint_blocks``), ``sage_attention`` (accepted; attention runs through SDPA).
    ``dim_freqs_in`` is unused, as in the reference. ``stft_window_fn`` / ``multi_stft_window_fn``:
    the Hann window only; ``use_pope`` is refused.

    Unused, accepted for compatibility (configs and ``stemsep import-checkpoint`` pass them):
    ``multi_stft_resolution_loss_weight``, ``multi_stft_resolutions_window_sizes``,
    ``multi_stft_hop_size``, ``multi_stft_normalized``, ``multi_stft_window_fn``, the settings of
    the multi-resolution STFT loss the reference computes in its forward when given a target. They
    have **no effect** here: the loss is the LightningModule's ``model.loss``, e.g.
    ``stemsep.training.losses.MultiResolutionL1Loss`` with ``weight``, ``window_sizes``,
    ``hop_length``, ``normalized`` (and ``min_n_fft``: the reference's ``stft_n_fft``). A value
    other than the reference's default emits one ``UserWarning``.

    Ours: ``value_residual`` (bs-roformer 0.5.1's learned value residual mix in blocks after the
    first: ``to_value_residual_mix`` weights; MSST and the community checkpoints have none),
    ``sources`` (stem names; ``num_stems`` defaults to their number), ``samplerate``,
    ``segment`` (seconds per chunk at inference), ``checkpoint_blocks`` (recompute each
    transformer, the band split and the mask estimators in the backward pass to save memory).
    """

    def __init__(self, dim: int, *, depth: int, stereo: bool = False, num_stems: int | None = None,
                 time_transformer_depth: int = 2, freq_transformer_depth: int = 2, linear_transformer_depth: int = 0,
                 freqs_per_bands: Sequence[int] = DEFAULT_FREQS_PER_BANDS, dim_head: int = 64, heads: int = 8,
                 attn_dropout: float = 0.0, ff_dropout: float = 0.0, flash_attn: bool = True,
                 dim_freqs_in: int = 1025, stft_n_fft: int = 2048, stft_hop_length: int = 512,
                 stft_win_length: int = 2048, stft_normalized: bool = False, stft_window_fn: Any = None,
                 zero_dc: bool = True, mask_estimator_depth: int = 2, multi_stft_resolution_loss_weight: float = 1.0,
                 multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
                 multi_stft_hop_size: int = 147, multi_stft_normalized: bool = False, multi_stft_window_fn: Any = None,
                 mlp_expansion_factor: int = 4, use_torch_checkpoint: bool = False, skip_connection: bool = False,
                 use_pope: bool = False, sage_attention: bool = False, value_residual: bool = False,
                 sources: list[str] | None = None, samplerate: int = 44100, segment: float | Fraction | None = 8,
                 checkpoint_blocks: bool = False):
        super().__init__()
        self._init_common("BSRoFormer", stereo=stereo, sources=sources, num_stems=num_stems, samplerate=samplerate,
                          segment=segment, stft_n_fft=stft_n_fft, stft_hop_length=stft_hop_length,
                          stft_win_length=stft_win_length, stft_normalized=stft_normalized,
                          stft_window_fn=stft_window_fn, zero_dc=zero_dc, multi_stft_window_fn=multi_stft_window_fn,
                          use_pope=use_pope, checkpoint_blocks=checkpoint_blocks,
                          use_torch_checkpoint=use_torch_checkpoint, skip_connection=skip_connection,
                          unused_loss_settings=dict(
                              multi_stft_resolution_loss_weight=multi_stft_resolution_loss_weight,
                              multi_stft_resolutions_window_sizes=multi_stft_resolutions_window_sizes,
                              multi_stft_hop_size=multi_stft_hop_size, multi_stft_normalized=multi_stft_normalized))
        freqs = stft_n_fft // 2 + 1
        bands = tuple(int(f) for f in freqs_per_bands)
        if len(bands) < 2 or sum(bands) != freqs:
            raise StemsepError(f"BSRoFormer: freqs_per_bands must be at least 2 bands summing to {freqs} "
                               f"(stft_n_fft {stft_n_fft} // 2 + 1), got {len(bands)} bands summing to {sum(bands)}")
        self.freqs_per_bands = bands
        self._build_layers(dim=dim, depth=depth, time_transformer_depth=time_transformer_depth,
                           freq_transformer_depth=freq_transformer_depth,
                           linear_transformer_depth=linear_transformer_depth, dim_head=dim_head, heads=heads,
                           attn_dropout=attn_dropout, ff_dropout=ff_dropout, flash_attn=flash_attn,
                           linear_flash_attn=flash_attn, norm_output=False, value_residual=value_residual)
        self.final_norm = RMSNorm(dim)
        dim_inputs = tuple(2 * f * self.audio_channels for f in bands)
        self.band_split = BandSplit(dim, dim_inputs)
        self.mask_estimators = torch.nn.ModuleList(
            MaskEstimator(dim, dim_inputs, hidden_layers=mask_estimator_depth - 1,
                          mlp_expansion_factor=mlp_expansion_factor) for _ in self.sources)

    def _band_input(self, spec: torch.Tensor) -> torch.Tensor:
        batch, _, frames, _ = spec.shape
        return spec.transpose(1, 2).reshape(batch, frames, -1)

    def _band_output(self, masks: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
        batch, stems, frames, _ = masks.shape
        return masks.view(batch, stems, frames, -1, 2)
