"""Separation metrics in torch.

``nsdr`` is the whole-track SDR of the MDX challenges:
``10 log10(sum(ref^2) / sum((ref - est)^2))`` with a small epsilon, per source, summed over
channels and time.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

EPS = 1e-8


def nsdr(estimates: torch.Tensor, references: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Whole-track SDR per source.

    ``estimates``/``references``: ``(..., sources, channels, time)``; returns ``(..., sources)``.
    """
    if estimates.shape != references.shape:
        raise ValueError(f"estimates {tuple(estimates.shape)} and references {tuple(references.shape)} differ")
    est, ref = estimates.double(), references.double()
    num = (ref**2).sum(dim=(-2, -1))
    den = ((ref - est) ** 2).sum(dim=(-2, -1))
    return (10 * torch.log10((num + eps) / (den + eps))).to(estimates.dtype)


class NSDR(Metric):
    """Mean whole-track nSDR per source over the tracks seen (synchronised under DDP)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_sources: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros(num_sources, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimates: torch.Tensor, references: torch.Tensor) -> None:
        """``(batch, sources, channels, time)`` each; every batch item counts as one track."""
        values = nsdr(estimates, references).double()
        self.total += values.reshape(-1, values.shape[-1]).sum(0)
        self.count += values.reshape(-1, values.shape[-1]).shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()
