"""DConv: the residual branch inside every Demucs encoder/decoder layer.

Each of its ``depth`` sub-blocks squeezes the channels by ``compress``, applies a dilated
convolution (dilation doubling per sub-block, which grows the receptive field cheaply),
optionally a bidirectional LSTM and/or local attention, expands back with a GLU and adds
the result scaled by a :class:`LayerScale` started at ``init``.
Sub-module indices inside each ``nn.Sequential`` match Demucs so checkpoints load.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.models.layerscale import LayerScale


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
                nn.Conv1d(channels, hidden, kernel, dilation=dilation, padding=dilation * (kernel // 2)),
                norm_fn(hidden),
                act(),
            ]
            if lstm:
                mods.append(BLSTM(hidden, layers=2, max_steps=200, skip=True))
            if attn:
                mods.append(LocalState(hidden, heads=heads, ndecay=ndecay))
            mods += [
                nn.Conv1d(hidden, 2 * channels, 1),
                norm_fn(2 * channels),
                nn.GLU(1),
                LayerScale(channels, init),
            ]
            self.layers.append(nn.Sequential(*mods))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x
