"""Hybrid Transformer Demucs (Rouard, Massa, Défossez 2022, arXiv 2211.08553).

Hybrid Demucs' time and spectrogram U-Nets with their innermost layers replaced by a
cross-domain transformer: the branches never merge; at the bottleneck each attends to
itself and to the other. Constructor arguments, defaults and ``state_dict`` layout are
those of ``demucs.htdemucs.HTDemucs`` (demucs 4.x), plus ``attention`` to choose the
attention kernel.
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.contract import records_init_args
from stemsep.errors import StemsepError
from stemsep.models.attention.layer import BackendAttention, resolve_backend
from stemsep.models.hybrid import HybridBase
from stemsep.models.layers import rescale_convs
from stemsep.models.transformer import CrossDomainTransformer


@records_init_args
class HTDemucs(HybridBase):
    """HTDemucs: ``forward(mix (B, C, T)) -> (B, len(sources), C, T)``.

    The transformer runs at ``channels * growth ** (depth - 1)`` channels, or at
    ``bottom_channels`` when that is set (1x1 convs project in and out). ``t_*`` arguments
    configure it (layers, heads, FFN ``t_hidden_scale``, ``t_dropout``, positional ``t_emb``
    'sin' / 'cape' / 'scaled', norms, LayerScale). With ``use_train_segment`` the model
    remembers the training segment (``segment`` seconds; updated from the input length in
    training) and in eval pads shorter inputs to it, then trims the output back, because
    the transformer's positional statistics depend on the length it was trained on.

    ``attention`` (not in Demucs) names the attention kernel from
    :mod:`stemsep.models.attention.backends`; change it later with
    :meth:`set_attention_backend`. ``t_sparse_self_attn`` / ``t_sparse_cross_attn`` only
    select the parameter layout of Demucs' sparse checkpoints (separate q/k/v/proj); their
    masks (``t_mask_type``, ``t_sparse_attn_window``, ...) are not used: sparsity comes from
    the chosen backend. Not supported: ``multi_freqs`` and Wiener filtering.
    """

    def __init__(self, sources: list[str], audio_channels: int = 2, channels: int = 48,
                 channels_time: int | None = None, growth: float = 2, nfft: int = 4096, wiener_iters: int = 0,
                 end_iters: int = 0, wiener_residual: bool = False, cac: bool = True, depth: int = 4,
                 rewrite: bool = True, multi_freqs: list[float] | None = None, multi_freqs_depth: int = 3,
                 freq_emb: float = 0.2, emb_scale: float = 10, emb_smooth: bool = True, kernel_size: int = 8,
                 time_stride: int = 2, stride: int = 4, context: int = 1, context_enc: int = 0,
                 norm_starts: int = 4, norm_groups: int = 4, dconv_mode: int = 1, dconv_depth: int = 2,
                 dconv_comp: float = 8, dconv_init: float = 1e-3, bottom_channels: int = 0, t_layers: int = 5,
                 t_emb: str = "sin", t_hidden_scale: float = 4.0, t_heads: int = 8, t_dropout: float = 0.0,
                 t_max_positions: int = 10000, t_norm_in: bool = True, t_norm_in_group: bool = False,
                 t_group_norm: bool = False, t_norm_first: bool = True, t_norm_out: bool = True,
                 t_max_period: float = 10000.0, t_weight_decay: float = 0.0, t_lr: float | None = None,
                 t_layer_scale: bool = True, t_gelu: bool = True, t_weight_pos_embed: float = 1.0,
                 t_sin_random_shift: int = 0, t_cape_mean_normalize: bool = True, t_cape_augment: bool = True,
                 t_cape_glob_loc_scale: list[float] = [5000.0, 1.0, 1.4],  # noqa: B006 (Demucs' default)
                 t_sparse_self_attn: bool = False, t_sparse_cross_attn: bool = False, t_mask_type: str = "diag",
                 t_mask_random_seed: int = 42, t_sparse_attn_window: int = 500, t_global_window: int = 100,
                 t_sparsity: float = 0.95, t_auto_sparsity: bool = False, t_cross_first: bool = False,
                 rescale: float = 0.1, samplerate: int = 44100, segment: float | Fraction = 10,
                 use_train_segment: bool = True, attention: str = "dense"):
        super().__init__()
        self.hybrid = True
        self.hybrid_old = False
        resolve_backend(attention)
        self.bottom_channels = bottom_channels
        self.use_train_segment = use_train_segment
        self.attention = attention

        def dconv_kw(index: int) -> dict:
            return dict(depth=dconv_depth, compress=dconv_comp, init=dconv_init, gelu=True)

        # The transformer's width is that of the deepest encoder layer as built (an int), not
        # demucs' `channels * growth ** (depth - 1)`, which is a float whenever growth is one
        # (a config loader reads `growth: 2` as 2.0) and then fails in the 1x1 convolutions.
        width = self._init_hybrid(locals())
        if rescale:  # before the transformer exists: its layers keep their default init
            rescale_convs(self, reference=rescale)

        if bottom_channels:
            self.channel_upsampler = nn.Conv1d(width, bottom_channels, 1)
            self.channel_downsampler = nn.Conv1d(bottom_channels, width, 1)
            self.channel_upsampler_t = nn.Conv1d(width, bottom_channels, 1)
            self.channel_downsampler_t = nn.Conv1d(bottom_channels, width, 1)
            width = bottom_channels
        self.crosstransformer = None
        if t_layers > 0:
            self.crosstransformer = CrossDomainTransformer(
                dim=width, emb=t_emb, hidden_scale=t_hidden_scale, num_heads=t_heads, num_layers=t_layers,
                cross_first=t_cross_first, dropout=t_dropout, max_positions=t_max_positions, norm_in=t_norm_in,
                norm_in_group=t_norm_in_group, group_norm=t_group_norm, norm_first=t_norm_first,
                norm_out=t_norm_out, max_period=t_max_period, weight_decay=t_weight_decay, lr=t_lr,
                layer_scale=t_layer_scale, gelu=t_gelu, sin_random_shift=t_sin_random_shift,
                weight_pos_embed=t_weight_pos_embed, cape_mean_normalize=t_cape_mean_normalize,
                cape_augment=t_cape_augment, cape_glob_loc_scale=t_cape_glob_loc_scale,
                sparse_self_attn=t_sparse_self_attn, sparse_cross_attn=t_sparse_cross_attn,
                attention=attention)

    def set_attention_backend(self, name: str) -> None:
        """Run every attention layer with the kernel ``name`` (weights are unchanged)."""
        resolve_backend(name)
        for module in self.modules():
            if isinstance(module, BackendAttention):
                module.set_backend(name)
        self.attention = name

    def _bottleneck(self, x: torch.Tensor, xt: torch.Tensor | None):
        if self.crosstransformer is None:
            return x, xt
        if self.bottom_channels:
            b, c, f, t = x.shape
            x = self.channel_upsampler(x.reshape(b, c, f * t)).view(b, -1, f, t)
            xt = self.channel_upsampler_t(xt)
        x, xt = self.crosstransformer(x, xt)
        if self.bottom_channels:
            b, c, f, t = x.shape
            x = self.channel_downsampler(x.reshape(b, c, f * t)).view(b, -1, f, t)
            xt = self.channel_downsampler_t(xt)
        return x, xt

    def valid_length(self, length: int) -> int:
        """Length the model will actually process: the training segment in eval mode."""
        if not self.use_train_segment:
            return length
        training_length = int(self.segment * self.samplerate)
        if training_length < length:
            raise StemsepError(f"input of {length} samples is longer than the training segment "
                               f"({training_length} samples); split it into chunks")
        return training_length

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        if self.use_train_segment:
            if self.training:
                self.segment = Fraction(length, self.samplerate)
            else:
                training_length = int(self.segment * self.samplerate)
                if length < training_length:
                    mix = F.pad(mix, (0, training_length - length))
        out = self._separate(mix)
        return out[..., :length] if out.shape[-1] != length else out


