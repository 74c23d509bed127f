"""Improved clustered attention from pytorch-fast-transformers, behind the backend interface.

Why this kernel: fast-transformers' ``reformer`` attention shares queries and keys (it ignores
the keys) and needs ``Lq == Lk``, so it cannot run Hybrid Transformer Demucs' cross-attention
between the time and frequency branches. *Improved clustered* attention (Vyas et al., 2020)
takes separate queries and keys of any lengths: it clusters the queries with hashed k-means,
attends each cluster centroid to all keys, then recomputes exact attention of every query to
its cluster's top-k keys. Cost O(Lq·C + C·Lk + Lq·topk) instead of O(Lq·Lk).

The package is optional (extra ``sparse``; build it with ``scripts/install_sparse.sh``) and
imported only when the backend is first called. Its clustering draws random hash planes from
torch's global RNG and its initial centroids from numpy's global RNG; we seed both with
``seed`` for the call and restore them afterwards, so the kernel is deterministic and leaves
the caller's random streams untouched. Attention dropout is off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from stemsep.errors import StemsepError

INSTALL_HINT = "install it with scripts/install_sparse.sh (pip install --no-build-isolation pytorch-fast-transformers==0.4.0)"


def fast_transformers_available() -> bool:
    try:
        import fast_transformers.attention  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class FastTransformersAttention:
    """Callable kernel ``(q, k, v) -> out`` on ``(B, H, L, D)`` tensors."""

    clusters: int = 128
    topk: int = 32
    iterations: int = 10
    bits: int = 63
    seed: int = 0
    _module: object = field(default=None, repr=False, compare=False)

    def _attention(self):
        if self._module is None:
            try:
                from fast_transformers.attention import ImprovedClusteredAttention
            except ImportError:
                raise StemsepError("attention backend 'fast_transformers' needs pytorch-fast-transformers, "
                                   f"which is not installed: {INSTALL_HINT}") from None
            self._module = ImprovedClusteredAttention(clusters=self.clusters, iterations=self.iterations,
                                                      bits=self.bits, topk=self.topk, attention_dropout=0.0)
        return self._module

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        attention = self._attention()  # first: a one-line error when the package is absent
        from fast_transformers.masking import FullMask, LengthMask

        b, _, lq, _ = q.shape
        lk = k.shape[2]
        if self.clusters > lq:
            raise ValueError(f"fast_transformers attention: {self.clusters} clusters for only {lq} queries")
        # fast-transformers works on (B, L, H, D) and on float32 (its C++/CUDA kernels).
        dtype = q.dtype
        q, k, v = (x.transpose(1, 2).float() for x in (q, k, v))
        devices = [q.device] if q.device.type == "cuda" else []
        np_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)
                np.random.seed(self.seed)
                out = attention(q, k, v, FullMask(lq, lk, device=q.device),
                                LengthMask(torch.full((b,), lq, device=q.device), max_len=lq),
                                LengthMask(torch.full((b,), lk, device=q.device), max_len=lk))
        finally:
            np.random.set_state(np_state)
        return out.transpose(1, 2).to(dtype)
