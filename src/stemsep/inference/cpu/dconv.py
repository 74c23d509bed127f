"""DConv for CPU inference: each sub-block's tail fused into one matrix product.

In CPU inference on large float32 inputs each sub-block's tail -- 1x1 expansion, one-group
GroupNorm, GLU, LayerScale, residual add -- runs as :func:`expand_residual`: its modules are
read for their parameters, not called (forward hooks registered on them do not fire; keep the
plain network for that). :func:`stemsep.inference.cpu.optimize_for_cpu` makes a
:class:`~stemsep.models.dconv.DConv` a :class:`FusedDConv` only where every sub-block's tail is
exactly the modules folded here.
"""

from __future__ import annotations

import torch
from torch import nn

from stemsep.inference.cpu.predicates import channels_fastest, cpu_inference_path
from stemsep.models.dconv import DConv
from stemsep.models.layerscale import LayerScale

# Below this many input elements (the deep layers) the fused tail's extra small ops cost more
# than it saves.
FUSE_MIN_ELEMENTS = 1 << 20


class FusedDConv(DConv):
    """:class:`~stemsep.models.dconv.DConv` whose sub-block tails run fused in CPU inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if cpu_inference_path(x) and x.numel() >= FUSE_MIN_ELEMENTS:
                h = x
                for module in layer[:-4]:
                    h = module(h)
                x = expand_residual(x, h, *layer[-4:])
            else:
                x = x + layer(x)
        return x


def foldable_tail(layer: nn.Sequential) -> bool:
    """Whether ``layer`` ends in exactly the modules :func:`expand_residual` folds."""
    conv, norm, glu, scale = layer[-4:]
    return (isinstance(conv, nn.Conv1d) and conv.kernel_size == (1,) and conv.groups == 1
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
