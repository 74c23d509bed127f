"""Separation metrics in torch.

``nsdr`` is the whole-track SDR of the MDX challenges:
``10 log10(sum(ref^2) / sum((ref - est)^2))`` with a small epsilon, per source, summed over
channels and time.

``bss_eval`` (museval's BSS-eval v4, framewise SDR/ISR/SIR/SAR) lives in
:mod:`stemsep.evaluation.bss_eval`; :class:`BSSEval` / :class:`BSSEvalSDR` aggregate it over tracks as
the paper and museval do: median over a track's frames, then median over tracks.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from stemsep.evaluation.bss_eval import METRICS, bss_eval  # noqa: F401 - re-exported: metrics live here

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


def nanmedian(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Median ignoring NaN, averaging the two middle values (NumPy/pandas, not torch's lower one).

    All-NaN slices give NaN. This is how museval aggregates frames into a track score.
    """
    if values.shape[dim] == 0:
        shape = list(values.shape)
        del shape[dim]
        return values.new_full(shape, float("nan"))
    ordered, _ = torch.sort(values, dim=dim)  # NaN sorts last
    count = (~torch.isnan(values)).sum(dim=dim, keepdim=True)
    last = ordered.shape[dim] - 1
    low = ordered.gather(dim, ((count - 1) // 2).clamp(0, last))
    high = ordered.gather(dim, (count // 2).clamp(0, last))
    median = torch.where(count % 2 == 1, low, (low + high) / 2)
    median = torch.where(count == 0, torch.full_like(median, float("nan")), median)
    return median.squeeze(dim)


class BSSEval(Metric):
    """Per-source median over tracks of each track's median framewise BSS-eval metrics.

    Every batch item of ``update`` is one whole track. Per-track values are kept (one row of
    ``sources`` numbers per track and metric) and gathered across processes under DDP, so
    the median over tracks is exact. ``compute`` returns ``{metric: (sources,)}``.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_sources: int, samplerate: int = 44100, metrics: tuple[str, ...] = ("sdr",),
                 window: float = 1.0, hop: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {METRICS}")
        self.num_sources = num_sources
        self.samplerate = samplerate
        self.metrics = tuple(metrics)
        self.window, self.hop = window, hop
        for name in self.metrics:
            self.add_state(f"track_{name}", default=[], dist_reduce_fx="cat")

    def update(self, estimates: torch.Tensor, references: torch.Tensor) -> None:
        """``(batch, sources, channels, time)`` each (or one track without the batch dim)."""
        if estimates.dim() == 3:
            estimates, references = estimates[None], references[None]
        for est, ref in zip(estimates, references, strict=True):
            scores = bss_eval(est, ref, samplerate=self.samplerate, window=self.window, hop=self.hop,
                              metrics=self.metrics)
            for name in self.metrics:
                getattr(self, f"track_{name}").append(nanmedian(scores[name], dim=-1)[None].to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.metrics:
            rows = getattr(self, f"track_{name}")
            if isinstance(rows, list):
                rows = torch.cat(rows) if rows else torch.full((0, self.num_sources), float("nan"),
                                                               dtype=torch.float64, device=self.device)
            out[name] = nanmedian(rows.reshape(-1, self.num_sources), dim=0).float()
        return out


class BSSEvalSDR(BSSEval):
    """Median over tracks of per-track median framewise SDR, per source (the paper's SDR).

    Cheap (no distortion filters): fit for every validation epoch.
    """

    def __init__(self, num_sources: int, samplerate: int = 44100, **kwargs):
        super().__init__(num_sources, samplerate=samplerate, metrics=("sdr",), **kwargs)

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        return super().compute()["sdr"]
