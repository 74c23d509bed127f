"""DConv: the residual branch inside every Demucs encoder/decoder layer.

Each of its ``depth`` sub-blocks squeezes the channels by ``compress``, applies a dilated
convolution (dilation doubling per sub-block, which grows the receptive field cheaply),
optionally a bidirectional LSTM and/or local attention, expands back with a GLU and adds
the result scaled by a :class:`LayerScale` started at ``init``.
Sub-module indices inside each ``nn.Sequential`` match Demucs so checkpoints load.

In CPU inference on large float32 inputs (see :mod:`stemsep.models.cpu_fast`) each sub-block's tail -- 1x1
expansion, one-group GroupNorm, GLU, LayerScale, residual add -- runs fused as
:func:`expand_residual`; the modules are read for their parameters, not called.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.models.cpu_fast import channels_fastest, cpu_inference_path
from stemsep.models.layerscale import LayerScale
from stemsep.models.pointwise import PointwiseConv1d
from stemsep.models.tapconv import TapConv1d


class BLSTM(nn.Module):
    """Bidirectional 2-layer LSTM with a linear projection back to ``dim`` channels.

    Inputs longer than ``max_steps`` are cut in half-overlapping windows processed as one
    batch; each window keeps its central half (the outer windows keep their outer edge),
    which bounds the sequential LSTM cost and memory on long inputs.
    """

    def __init__(self, dim: int, layers: int = 1, max_steps: int | None = None, skip: bool = False):
        super().__init__()
        if max_steps is not None and max_steps % 4:
            raise ValueError("BLSTM max_steps must be a multiple of 4")
        self.max_steps = max_steps
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)
        self.skip = skip

    def _run(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, T) -> (N, C, T)
        y = self.lstm(x.permute(2, 0, 1))[0]
        return self.linear(y).permute(1, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        if self.max_steps is None or length <= self.max_steps:
            out = self._run(x)
        else:
            width = self.max_steps
            hop = width // 2
            n = math.ceil(length / hop)
            padded = F.pad(x, (0, (n - 1) * hop + width - length))
            frames = padded.unfold(-1, width, hop)  # (B, C, n, width)
            frames = frames.permute(0, 2, 1, 3).reshape(batch * n, channels, width)
            y = self._run(frames).view(batch, n, channels, width)
            cut = hop // 2
            pieces = [y[:, 0, :, :width - cut]]
            pieces += [y[:, k, :, cut:width - cut] for k in range(1, n - 1)]
            pieces.append(y[:, n - 1, :, cut:])
            out = torch.cat(pieces, -1)[..., :length]
        return out + x if self.skip else out


class LocalState(nn.Module):
    """Content-based attention over time with a learnt, per-head exponential distance decay.

    There is no positional embedding: locality comes from the decay penalty, and a position
    never attends to itself.
    """

    def __init__(self, channels: int, heads: int = 4, ndecay: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"LocalState channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.ndecay = ndecay
        self.content = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        if ndecay:
            self.query_decay = nn.Conv1d(channels, heads * ndecay, 1)
            with torch.no_grad():  # start with decays near zero: widest window
                self.query_decay.weight.mul_(0.01)
                self.query_decay.bias.fill_(-2.0)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        h = self.heads
        queries = self.query(x).view(b, h, -1, t)
        keys = self.key(x).view(b, h, -1, t)
        # scores[b, h, key, query]
        scores = torch.einsum("bhck,bhcq->bhkq", keys, queries) / math.sqrt(keys.shape[2])
        if self.ndecay:
            pos = torch.arange(t, device=x.device, dtype=x.dtype)
            dist = (pos[:, None] - pos[None, :]).abs()
            rates = torch.arange(1, self.ndecay + 1, device=x.device, dtype=x.dtype)
            kernel = -rates.view(-1, 1, 1) * dist / math.sqrt(self.ndecay)
            gate = torch.sigmoid(self.query_decay(x).view(b, h, -1, t)) / 2
            scores = scores + torch.einsum("fkq,bhfq->bhkq", kernel, gate)
        steps = torch.arange(t, device=x.device)
        eye = steps[:, None] == steps[None, :]  # not torch.eye: ONNX Runtime lacks a boolean EyeLike
        weights = torch.softmax(scores.masked_fill(eye, -100.0), dim=2)
        content = self.content(x).view(b, h, -1, t)
        result = torch.einsum("bhkq,bhck->bhcq", weights, content).reshape(b, -1, t)
        return x + self.proj(result)


class DConv(nn.Module):
    """Residual stack of compressed dilated convolutions (see module docstring).

    A negative ``depth`` means ``abs(depth)`` sub-blocks without dilation.
    """

    def __init__(self, channels: int, compress: float = 4, depth: int = 2, init: float = 1e-4,
                 norm: bool = True, attn: bool = False, heads: int = 4, ndecay: int = 4,
                 lstm: bool = False, gelu: bool = True, kernel: int = 3, dilate: bool = True):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError("DConv kernel must be odd")
        self.channels = channels
        self.compress = compress
        self.depth = abs(depth)
        dilate = depth > 0
        hidden = int(channels / compress)
        act = nn.GELU if gelu else nn.ReLU

        def norm_fn(dim: int) -> nn.Module:
            return nn.GroupNorm(1, dim) if norm else nn.Identity()

        self.layers = nn.ModuleList()
        for d in range(self.depth):
            dilation = 2 ** d if dilate else 1
            mods: list[nn.Module] = [
                TapConv1d(channels, hidden, kernel, dilation=dilation),
                norm_fn(hidden),
                act(),
            ]
            if lstm:
                mods.append(BLSTM(hidden, layers=2, max_steps=200, skip=True))
            if attn:
                mods.append(LocalState(hidden, heads=heads, ndecay=ndecay))
            mods += [
                PointwiseConv1d(hidden, 2 * channels),
                norm_fn(2 * channels),
                nn.GLU(1),
                LayerScale(channels, init),
            ]
            self.layers.append(nn.Sequential(*mods))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if cpu_inference_path(x) and x.numel() >= FUSE_MIN_ELEMENTS and _foldable_tail(layer):
                h = x
                for module in layer[:-4]:
                    h = module(h)
                x = expand_residual(x, h, *layer[-4:])
            else:
                x = x + layer(x)
        return x


# Below this many input elements (the deep layers) the fused tail's extra small ops cost more
# than it saves.
FUSE_MIN_ELEMENTS = 1 << 20


def _foldable_tail(layer: nn.Sequential) -> bool:
    """Whether ``layer`` ends in exactly the modules :func:`expand_residual` folds, none hooked."""
    conv, norm, glu, scale = layer[-4:]
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in (conv, norm, glu, scale))
    return (not hooked and not nn.modules.module._global_forward_hooks
            and not nn.modules.module._global_forward_pre_hooks
            and type(conv) in (nn.Conv1d, PointwiseConv1d) and conv.kernel_size == (1,) and conv.groups == 1
            and (type(norm) is nn.Identity or (type(norm) is nn.GroupNorm and norm.num_groups == 1))
            and type(glu) is nn.GLU and glu.dim in (1, -2)
            and type(scale) is LayerScale and not scale.channel_last)


def expand_residual(x: torch.Tensor, h: torch.Tensor, conv: nn.Conv1d, norm: nn.Module, glu: nn.GLU,
                    scale: LayerScale) -> torch.Tensor:
    """``x + scale(glu(norm(conv(h))))`` for a 1x1 ``conv`` and ``GroupNorm(1, .)`` (or no) ``norm``,
    as one matrix product with weights shared by all examples and one fused multiply-add.

    With one group, the norm's statistics of ``z = W h + b`` over (channels, time) follow from
    the first and second moments of the few hidden channels ``h``, taken in float64 (the
    cancellation in E[z^2] - E[z]^2 is then harmless at audio scales). Normalising is
    ``gamma * r * (W h + b - mean) + beta`` with one scalar ``r`` per example: ``r`` scales
    ``h``, and the bias terms ride along as three extra input channels (``r``, ``-mean * r``, 1)
    against the columns ``gamma * b``, ``gamma``, ``beta``; the LayerScale scales the GLU's
    value rows. ``z`` is never normalised in a separate pass. Same values as the unfused
    modules up to float rounding; differentiable. ``glu`` is the GLU being folded (its split
    is the one done here).
    """
    n, k, t = h.shape
    weight = conv.weight[:, :, 0]  # (2C, K)
    bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[0])
    channels = weight.shape[0] // 2
    if isinstance(norm, nn.GroupNorm):
        if norm.num_groups != 1:
            raise ValueError("expand_residual handles GroupNorm with one group only")
        h64, w64, b64 = h.double(), weight.double(), bias.double()
        mean_h = h64.mean(-1)  # (N, K)
        second = torch.bmm(h64, h64.transpose(1, 2)) / t  # (N, K, K)
        mean = mean_h @ w64.mean(0) + b64.mean()  # (N,)
        square = ((second * (w64.T @ w64)).sum((1, 2)) + 2 * mean_h @ (w64.T @ b64) + b64 @ b64) / weight.shape[0]
        inv = torch.rsqrt(square - mean * mean + norm.eps)  # (N,)
        gamma = norm.weight if norm.affine else torch.ones_like(bias)
        beta = norm.bias if norm.affine else torch.zeros_like(bias)
        columns = [gamma[:, None] * weight, (gamma * bias)[:, None], gamma[:, None], beta[:, None]]
        extra = torch.stack([inv, -mean * inv, torch.ones_like(inv)], 1).to(h.dtype)  # (N, 3)
        h_scale = inv.to(h.dtype)[:, None, None]
    elif isinstance(norm, nn.Identity):
        columns = [weight, bias[:, None]]
        extra = h.new_ones(n, 1)
        h_scale = None
    else:
        raise ValueError(f"expand_residual cannot fold {type(norm).__name__}")
    rows = torch.cat([scale.scale, scale.scale.new_ones(channels)])[:, None]
    w_all = torch.cat(columns, 1) * rows  # (2C, K + extra)
    hs = h if h_scale is None else h * h_scale
    if channels_fastest(x):  # channels-last views (frequency branch): time-major product
        inputs = torch.cat([hs.transpose(1, 2), extra[:, None].expand(-1, t, -1)], 2)  # (N, T, K + extra)
        y = torch.matmul(inputs, w_all.T).transpose(1, 2)  # (N, 2C, T), channels fastest like x
    else:
        inputs = torch.cat([hs, extra[:, :, None].expand(-1, -1, t)], 1)  # (N, K + extra, T)
        y = torch.matmul(w_all, inputs)
    return torch.addcmul(x, y[:, :channels], torch.sigmoid(y[:, channels:]))
