"""Cross-domain transformer at the bottom of HTDemucs (Rouard et al. 2022, arXiv 2211.08553).

Two token sequences run side by side, the spectral branch (one token per (frequency, time)
cell) and the waveform branch (one token per time step). Layers alternate between
self-attention within each branch and cross-attention where each branch queries the other.
Every sub-block is pre-norm, with LayerScale on the residual and an optional GroupNorm over
the whole sequence at the end of the layer. Names and layout follow Demucs so its weights load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stemsep.models.attention.layer import BackendAttention
from stemsep.models.layers import ScaledEmbedding
from stemsep.models.layerscale import LayerScale
from stemsep.models.positional import cape_embedding, sin_embedding, sin_embedding_2d


class SequenceGroupNorm(nn.GroupNorm):
    """GroupNorm for ``(B, T, C)`` sequences, i.e. statistics over time and channel groups.

    With a single group this is a layer norm over ``(T, C)`` followed by the per-channel
    affine, computed without transposing the sequence.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_groups == 1:
            y = F.layer_norm(x, x.shape[1:], eps=self.eps)
            return y * self.weight + self.bias if self.affine else y
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class TransformerEmbedding(ScaledEmbedding):
    """Learnt positional table with a ``boost`` learning-rate multiplier (``t_emb='scaled'``):
    initial weights scaled by ``scale``, stored divided by ``boost`` and multiplied back on use."""

    def __init__(self, num_embeddings: int, embedding_dim: int, scale: float = 1.0, boost: float = 3.0):
        super().__init__(num_embeddings, embedding_dim, scale=boost)
        with torch.no_grad():
            self.embedding.weight.mul_(scale)


def _norm(group_norm: int, dim: int, eps: float) -> nn.Module:
    return SequenceGroupNorm(int(group_norm), dim, eps=eps) if group_norm else nn.LayerNorm(dim, eps=eps)


class _Layer(nn.Module):
    """What the self- and cross-attention layers share: feed-forward, scales, out norm, and their
    attention (named ``attn_name``) and pre/post norms ``norm1`` .. ``norm<norms>``, which each
    subclass sets as class attributes. ``sparse`` gives the attention Demucs' separate q/k/v/proj
    parameter layout; ``attention`` names its kernel."""

    attn_name: str
    norms: int

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation=F.relu, group_norm: int = 0, norm_first: bool = False, norm_out: bool = False,
                 layer_norm_eps: float = 1e-5, layer_scale: bool = False, init_values: float = 1e-4,
                 sparse: bool = False, attention: str = "dense"):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation
        self.norm_first = norm_first
        self.norm_out = SequenceGroupNorm(int(norm_out), d_model) if (norm_first and norm_out) else None
        self.gamma_1 = LayerScale(d_model, init_values, True) if layer_scale else nn.Identity()
        self.gamma_2 = LayerScale(d_model, init_values, True) if layer_scale else nn.Identity()
        setattr(self, self.attn_name,
                BackendAttention(d_model, nhead, dropout, separate_proj=sparse, attention=attention))
        for index in range(1, self.norms + 1):
            setattr(self, f"norm{index}", _norm(group_norm, d_model, layer_norm_eps))

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class SelfAttentionLayer(_Layer):
    """Pre-norm (or post-norm) transformer encoder layer on a ``(B, T, C)`` sequence."""

    attn_name = "self_attn"
    norms = 2

    def _sa_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout1(self.self_attn(x, x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.gamma_1(self._sa_block(self.norm1(x)))
            x = x + self.gamma_2(self._ff_block(self.norm2(x)))
            if self.norm_out is not None:
                x = self.norm_out(x)
            return x
        x = self.norm1(x + self.gamma_1(self._sa_block(x)))
        return self.norm2(x + self.gamma_2(self._ff_block(x)))


class CrossAttentionLayer(_Layer):
    """Layer where the ``q`` sequence attends to the other branch's sequence ``k``."""

    attn_name = "cross_attn"
    norms = 3

    def _ca_block(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.dropout1(self.cross_attn(q, k))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = q + self.gamma_1(self._ca_block(self.norm1(q), self.norm2(k)))
            x = x + self.gamma_2(self._ff_block(self.norm3(x)))
            if self.norm_out is not None:
                x = self.norm_out(x)
            return x
        x = self.norm1(q + self.gamma_1(self._ca_block(q, k)))
        return self.norm2(x + self.gamma_2(self._ff_block(x)))


class CrossDomainTransformer(nn.Module):
    """Alternating self/cross-attention stacks over the spectral and waveform bottlenecks.

    ``forward(x (B, C, F, T1), xt (B, C, T2))`` returns tensors of the same shapes.
    Layer ``i`` is self-attention when ``i % 2 == (1 if cross_first else 0)``.
    """

    def __init__(self, dim: int, emb: str = "sin", hidden_scale: float = 4.0, num_heads: int = 8,
                 num_layers: int = 6, cross_first: bool = False, dropout: float = 0.0,
                 max_positions: int = 1000, norm_in: bool = True, norm_in_group: bool = False,
                 group_norm: int = False, norm_first: bool = False, norm_out: bool = False,
                 max_period: float = 10000.0, weight_decay: float = 0.0, lr: float | None = None,
                 layer_scale: bool = False, gelu: bool = True, sin_random_shift: int = 0,
                 weight_pos_embed: float = 1.0, cape_mean_normalize: bool = True, cape_augment: bool = True,
                 cape_glob_loc_scale: list | tuple = (5000.0, 1.0, 1.4), sparse_self_attn: bool = False,
                 sparse_cross_attn: bool = False, attention: str = "dense"):
        super().__init__()
        if emb not in ("sin", "cape", "scaled"):
            raise ValueError(f"t_emb must be 'sin', 'cape' or 'scaled', got {emb!r}")
        if dim % num_heads:
            raise ValueError(f"transformer width {dim} is not divisible by t_heads={num_heads}")
        self.num_layers = num_layers
        self.classic_parity = 1 if cross_first else 0
        self.emb = emb
        self.max_period = max_period
        self.weight_decay = weight_decay
        self.lr = lr
        self.weight_pos_embed = weight_pos_embed
        self.sin_random_shift = sin_random_shift
        self.cape_mean_normalize = cape_mean_normalize
        self.cape_augment = cape_augment
        self.cape_glob_loc_scale = list(cape_glob_loc_scale)
        if emb == "scaled":
            self.position_embeddings = TransformerEmbedding(max_positions, dim, scale=0.2)
        if norm_in:
            self.norm_in, self.norm_in_t = nn.LayerNorm(dim), nn.LayerNorm(dim)
        elif norm_in_group:
            self.norm_in = SequenceGroupNorm(int(norm_in_group), dim)
            self.norm_in_t = SequenceGroupNorm(int(norm_in_group), dim)
        else:
            self.norm_in, self.norm_in_t = nn.Identity(), nn.Identity()
        common = dict(d_model=dim, nhead=num_heads, dim_feedforward=int(dim * hidden_scale), dropout=dropout,
                      activation=F.gelu if gelu else F.relu, group_norm=group_norm, norm_first=norm_first,
                      norm_out=norm_out, layer_scale=layer_scale, attention=attention)
        self.layers = nn.ModuleList()
        self.layers_t = nn.ModuleList()
        for idx in range(num_layers):
            if idx % 2 == self.classic_parity:
                make = lambda: SelfAttentionLayer(sparse=sparse_self_attn, **common)  # noqa: E731
            else:
                make = lambda: CrossAttentionLayer(sparse=sparse_cross_attn, **common)  # noqa: E731
            self.layers.append(make())
            self.layers_t.append(make())

    def attention_modules(self) -> list[BackendAttention]:
        return [m for m in self.modules() if isinstance(m, BackendAttention)]

    def _time_embedding(self, length: int, batch: int, dim: int, device: torch.device) -> torch.Tensor:
        """Positional embedding of the waveform branch, ``(length, batch or 1, dim)``."""
        if self.emb == "sin":
            shift = 0
            if self.training and self.sin_random_shift:
                shift = int(torch.randint(self.sin_random_shift + 1, ()).item())
            return sin_embedding(length, dim, shift=shift, device=device, max_period=self.max_period)
        if self.emb == "cape":
            g, loc, s = self.cape_glob_loc_scale
            return cape_embedding(length, dim, batch, mean_normalize=self.cape_mean_normalize,
                                  augment=self.training and self.cape_augment, max_global_shift=g,
                                  max_local_shift=loc, max_scale=s, device=device, max_period=self.max_period)
        return self.position_embeddings(torch.arange(length, device=device))[:, None]

    def forward(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, fr, t1 = x.shape
        pos2d = sin_embedding_2d(c, fr, t1, x.device, self.max_period).to(x.dtype)
        # tokens ordered time-major: token index = t * F + f
        pos2d = pos2d.permute(0, 3, 2, 1).reshape(1, t1 * fr, c)
        x = x.permute(0, 3, 2, 1).reshape(b, t1 * fr, c)
        x = self.norm_in(x) + self.weight_pos_embed * pos2d
        t2 = xt.shape[-1]
        xt = xt.transpose(1, 2)
        pos = self._time_embedding(t2, b, c, x.device).to(xt.dtype).transpose(0, 1)
        xt = self.norm_in_t(xt) + self.weight_pos_embed * pos
        for idx in range(self.num_layers):
            if idx % 2 == self.classic_parity:
                x = self.layers[idx](x)
                xt = self.layers_t[idx](xt)
            else:
                x, xt = self.layers[idx](x, xt), self.layers_t[idx](xt, x)
        x = x.view(b, t1, fr, c).permute(0, 3, 2, 1)
        return x, xt.transpose(1, 2)

    def make_optim_group(self) -> dict:
        """Optimizer param group honouring ``t_weight_decay`` / ``t_lr``."""
        group: dict = {"params": list(self.parameters()), "weight_decay": self.weight_decay}
        if self.lr is not None:
            group["lr"] = self.lr
        return group
