"""Hybrid Demucs (v3; Défossez 2021, arXiv 2111.03600).

A time-domain U-Net and a spectrogram U-Net whose encoders merge into one shared stack
once the time branch's stride equals the STFT hop, and split again in the decoder; the two
outputs are summed. Constructor arguments, defaults and ``state_dict`` layout are those of
``demucs.hdemucs.HDemucs`` (demucs 4.x) so its checkpoints load as they are.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from stemsep.contract import records_init_args
from stemsep.models.hybrid import HybridBase
from stemsep.models.layers import rescale_convs


@records_init_args
class HDemucs(HybridBase):
    """Hybrid Demucs: ``forward(mix (B, C, T)) -> (B, len(sources), C, T)`` for any ``T``.

    Notable arguments (the rest mirror Demucs): ``channels`` width of the first layer,
    multiplied by ``growth`` per layer; ``depth`` number of layers; ``nfft`` STFT size (the
    hop is ``nfft // 4`` and must equal ``stride ** (number of frequency layers)`` for the
    branches to merge); ``dconv_mode`` 1 = DConv in encoder, 2 = decoder, 3 = both;
    ``dconv_lstm``/``dconv_attn``: layer index from which DConv gets a BiLSTM / local
    attention; ``cac`` complex-as-channels output (otherwise a magnitude mask with the
    mixture phase: ``wiener_iters=-1``); ``hybrid=False`` gives a spectrogram-only model.
    Not supported: ``multi_freqs`` band splitting and Wiener filtering.
    """

    def __init__(self, sources: list[str], audio_channels: int = 2, channels: int = 48,
                 channels_time: int | None = None, growth: float = 2, nfft: int = 4096, wiener_iters: int = 0,
                 end_iters: int = 0, wiener_residual: bool = False, cac: bool = True, depth: int = 6,
                 rewrite: bool = True, hybrid: bool = True, hybrid_old: bool = False,
                 multi_freqs: list[float] | None = None, multi_freqs_depth: int = 2, freq_emb: float = 0.2,
                 emb_scale: float = 10, emb_smooth: bool = True, kernel_size: int = 8, time_stride: int = 2,
                 stride: int = 4, context: int = 1, context_enc: int = 0, norm_starts: int = 4,
                 norm_groups: int = 4, dconv_mode: int = 1, dconv_depth: int = 2, dconv_comp: float = 4,
                 dconv_attn: int = 4, dconv_lstm: int = 4, dconv_init: float = 1e-4, rescale: float = 0.1,
                 samplerate: int = 44100, segment: float | Fraction = 4 * 10):
        super().__init__()
        self.hybrid = hybrid
        self.hybrid_old = hybrid_old
        if hybrid_old and not hybrid:
            raise ValueError("hybrid_old=True needs hybrid=True")

        def dconv_kw(index: int) -> dict:
            return dict(lstm=index >= dconv_lstm, attn=index >= dconv_attn, depth=dconv_depth,
                        compress=dconv_comp, init=dconv_init, gelu=True)

        self._init_hybrid(locals())
        if rescale:
            rescale_convs(self, reference=rescale)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self._separate(mix)
