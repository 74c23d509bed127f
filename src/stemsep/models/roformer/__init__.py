"""Building blocks shared by the band-split RoFormers (:mod:`stemsep.models.bs_roformer`,
:mod:`stemsep.models.mel_band_roformer`): RMSNorm, rotary position embeddings, gated
attention and transformer blocks, band split and mask estimators, and the common network
(STFT, axial time/frequency transformers, complex masks, ISTFT, export parts).

Parameter names follow the ``bs-roformer`` package (0.5.x) and the copy of it in
Music-Source-Separation-Training (MSST), so their ``state_dict`` loads with ``strict=True``.
"""

from stemsep.models.roformer.bands import BandSplit, MaskEstimator, mel_band_layout
from stemsep.models.roformer.base import RoFormerBase, RoFormerFrontEnd
from stemsep.models.roformer.rope import RotaryEmbedding
from stemsep.models.roformer.transformer import Attention, FeedForward, LinearAttention, RMSNorm, Transformer

__all__ = ["Attention", "BandSplit", "FeedForward", "LinearAttention", "MaskEstimator", "RMSNorm", "RoFormerBase",
           "RoFormerFrontEnd", "RotaryEmbedding", "Transformer", "mel_band_layout"]
