"""Encoder/decoder layers of the hybrid U-Nets, the frequency embedding, and the init trick.

One layer class serves both branches: with ``freq=True`` convolutions are 2D with kernels
``(k, 1)`` that stride over frequency only (time context comes from the DConv branch);
with ``freq=False`` they are 1D over time. Attribute names match Demucs so its checkpoints
load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.models.dconv import DConv


def rescale_convs(module: nn.Module, reference: float) -> None:
    """Scale every conv's initial weights (and bias) so its weight std moves toward ``reference``.

    Empirically helps Demucs train (the default init is too large for these deep stacks):
    weights are divided by ``sqrt(std / reference)``.
    """
    kinds = (nn.Conv1d, nn.ConvTranspose1d, nn.Conv2d, nn.ConvTranspose2d)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, kinds):
                factor = (sub.weight.std() / reference) ** 0.5
                sub.weight.div_(factor)
                if sub.bias is not None:
                    sub.bias.div_(factor)


class ScaledEmbedding(nn.Module):
    """Frequency embedding whose effective learning rate is ``scale`` times larger.

    The stored weight is divided by ``scale`` and the output multiplied back. With
    ``smooth`` the initial table is a normalized random walk along frequency, so that
    neighbouring bins start with similar embeddings.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, scale: float = 10.0, smooth: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        with torch.no_grad():
            weight = self.embedding.weight
            if smooth:
                walk = weight.cumsum(0)
                walk = walk / torch.arange(1, num_embeddings + 1, dtype=walk.dtype).sqrt()[:, None]
                weight.copy_(walk)
            weight.div_(scale)
        self.scale = scale

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight * self.scale

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embedding(idx) * self.scale


def _norm(enabled: bool, groups: int, channels: int) -> nn.Module:
    return nn.GroupNorm(groups, channels) if enabled else nn.Identity()


class _HybridLayer(nn.Module):
    """What encoder and decoder layers share: the branch (``freq``: 2D over frequency, else 1D
    over time), the strided conv's ``kernel_size``, ``stride`` and ``pad`` (``kernel_size // 4``
    when padding), ``empty`` and whether the layer normalizes (``norm``)."""

    def __init__(self, kernel_size: int, stride: int, empty: bool, freq: bool, norm: bool, pad: bool):
        super().__init__()
        self.freq = freq
        self.kernel_size = kernel_size
        self.stride = stride
        self.empty = empty
        self.norm = norm
        self.pad = kernel_size // 4 if pad else 0

    def _strided_conv(self, conv2d: type[nn.Module], conv1d: type[nn.Module], chin: int, chout: int,
                      padding: int) -> nn.Module:
        """The layer's strided (or transposed) conv: kernel ``(kernel_size, 1)`` over frequency, or 1D."""
        if self.freq:
            return conv2d(chin, chout, (self.kernel_size, 1), (self.stride, 1), (padding, 0))
        return conv1d(chin, chout, self.kernel_size, self.stride, padding)


class EncoderLayer(_HybridLayer):
    """Strided conv -> (inject) -> norm -> GELU -> DConv -> 1x1 "rewrite" conv with GLU.

    ``empty`` keeps only the strided conv: it is the last time-branch layer, whose output
    is injected into the frequency branch where both branches merge. ``pad`` pads by
    ``kernel_size // 4`` so the output length is exactly ``input / stride``.
    """

    def __init__(self, chin: int, chout: int, kernel_size: int = 8, stride: int = 4, norm_groups: int = 1,
                 empty: bool = False, freq: bool = True, dconv: bool = True, norm: bool = True,
                 context: int = 0, dconv_kw: dict | None = None, pad: bool = True, rewrite: bool = True):
        super().__init__(kernel_size, stride, empty, freq, norm, pad)
        self.conv = self._strided_conv(nn.Conv2d, nn.Conv1d, chin, chout, self.pad)
        if empty:
            return
        conv_cls = nn.Conv2d if freq else nn.Conv1d
        self.norm1 = _norm(norm, norm_groups, chout)
        self.rewrite = None
        if rewrite:
            self.rewrite = conv_cls(chout, 2 * chout, 1 + 2 * context, 1, context)
            self.norm2 = _norm(norm, norm_groups, 2 * chout)
        self.dconv = DConv(chout, **(dconv_kw or {})) if dconv else None

    def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x if self.freq else self.time_input(x))
        if self.empty:
            return y
        y = F.gelu(self.norm1(self.add_inject(y, inject)))
        if self.dconv is not None:
            y = dconv_over_time(self.dconv, y)
        if self.rewrite is not None:
            y = F.glu(self.norm2(self.rewrite(y)), dim=1)
        return y

    def time_input(self, x: torch.Tensor) -> torch.Tensor:
        """A time layer's input as ``(B, C, T)`` (from ``(B, C, 1, T)`` after the last frequency
        layer), zero-padded to a multiple of the stride."""
        if x.dim() == 4:
            x = x.flatten(1, 2)
        rest = x.shape[-1] % self.stride
        return F.pad(x, (0, self.stride - rest)) if rest else x

    @staticmethod
    def add_inject(y: torch.Tensor, inject: torch.Tensor | None) -> torch.Tensor:
        """``y`` plus the time branch's output where the branches merge (broadcast over frequency)."""
        if inject is None:
            return y
        if inject.shape[-1] != y.shape[-1]:
            raise RuntimeError(f"time/frequency branches misaligned: {inject.shape} vs {y.shape}")
        if inject.dim() == 3 and y.dim() == 4:
            inject = inject[:, :, None]
        return y + inject


def dconv_over_time(dconv: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Apply a 1D DConv over time to ``(B, C, T)`` or, per frequency bin, to ``(B, C, F, T)``."""
    if y.dim() == 3:
        return dconv(y)
    b, c, f, t = y.shape
    flat = y.permute(0, 2, 1, 3).reshape(b * f, c, t)
    return dconv(flat).view(b, f, c, t).permute(0, 2, 1, 3)


class DecoderLayer(_HybridLayer):
    """(+ skip) -> rewrite conv with GLU -> DConv -> transposed strided conv -> norm -> GELU.

    Returns the output and the tensor just before the transposed conv; the latter is what
    feeds the time branch where the two branches split again. ``empty`` layers only hold
    the transposed conv. The last layer (``last``) has no final GELU.
    """

    def __init__(self, chin: int, chout: int, last: bool = False, kernel_size: int = 8, stride: int = 4,
                 norm_groups: int = 1, empty: bool = False, freq: bool = True, dconv: bool = True,
                 norm: bool = True, context: int = 1, dconv_kw: dict | None = None, pad: bool = True,
                 context_freq: bool = True, rewrite: bool = True):
        super().__init__(kernel_size, stride, empty, freq, norm, pad)
        self.last = last
        self.chin = chin
        self.context_freq = context_freq
        self.conv_tr = self._strided_conv(nn.ConvTranspose2d, nn.ConvTranspose1d, chin, chout, 0)
        self.norm2 = _norm(norm, norm_groups, chout)
        if empty:
            return
        self.rewrite = None
        if rewrite:
            if not freq:
                self.rewrite = nn.Conv1d(chin, 2 * chin, 1 + 2 * context, 1, context)
            elif context_freq:
                self.rewrite = nn.Conv2d(chin, 2 * chin, 1 + 2 * context, 1, context)
            else:
                self.rewrite = nn.Conv2d(chin, 2 * chin, (1, 1 + 2 * context), 1, (0, context))
            self.norm1 = _norm(norm, norm_groups, 2 * chin)
        self.dconv = DConv(chin, **(dconv_kw or {})) if dconv else None

    def forward(self, x: torch.Tensor | None, skip: torch.Tensor | None,
                length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``x=None`` stands for a zero input (the bottom of a U-Net without a bottleneck)."""
        if self.empty:
            y = x
        else:
            y = self.add_skip(x, skip)
            if self.rewrite is not None:
                y = F.glu(self.norm1(self.rewrite(y)), dim=1)
            if self.dconv is not None:
                y = dconv_over_time(self.dconv, y)
        y = self.freq_view(y)
        return self.output(self.norm2(self.conv_tr(y)), length), y

    def add_skip(self, x: torch.Tensor | None, skip: torch.Tensor) -> torch.Tensor:
        """The layer's input plus the encoder's skip (``x=None``: the skip alone)."""
        if x is None:
            return skip
        return self.freq_view(x) + skip

    def freq_view(self, y: torch.Tensor) -> torch.Tensor:
        """A frequency layer's ``(B, C, F*..., T)`` input seen as ``(B, chin, F, T)``."""
        if self.freq and y.dim() == 3:
            return y.view(y.shape[0], self.chin, -1, y.shape[-1])
        return y

    def output(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """The transposed conv's (normalised) output trimmed of its padding (time: to ``length``),
        then GELU unless ``last``."""
        if self.freq:
            if self.pad:
                z = z[..., self.pad:-self.pad, :]
        else:
            z = z[..., self.pad:self.pad + length]
            if z.shape[-1] != length:
                raise RuntimeError(f"decoder output has {z.shape[-1]} steps, expected {length}")
        return z if self.last else F.gelu(z)
