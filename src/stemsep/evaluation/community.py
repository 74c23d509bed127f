"""The community's metrics: MSST's validation metrics, batched in torch, one registry for every tool.

The people who train separation models in the MSST / UVR / MVSEP community quote the metrics of
``utils/metrics.py`` of ZFTurbo/Music-Source-Separation-Training (MSST). This module computes each of
them as MSST defines it (the formulas re-derived from that file, our code; MSST's results are the
test oracle, ``tests/fixtures/make_msst_metrics_fixture.py``), on ``(batch, sources, channels, time)``
tensors on any device, so validation scores whole batches on the GPU and ``stemsep score`` scores
tracks with the same functions. Every metric gives one number per track and source, ``(batch,
sources)`` float64:

* ``usdr``: whole-track SDR, MSST's ``sdr`` (the SDX'23 challenge's): ``10 log10((Σ s² + ε) /
  (Σ (s − e)² + ε))`` over channels and samples, ε = 1e-8 -- the same number as stemsep's ``nSDR``.
  Named ``usdr`` ("utterance SDR") because stemsep's ``sdr`` is museval's framewise BSS-eval median.
* ``si_sdr``: MSST's scale-invariant SDR (its ε added to every product before the sums).
* ``l1_freq``: ``100 / (1 + 10 · mean |‖STFT e‖ − ‖STFT s‖|)``, 2048-point rectangular-window STFT, hop 1024.
* ``log_wmse``: the ``torch-log-wmse`` package's frequency-weighted log MSE, pooled over channel pairs
  as MSST's call pools them.
* ``aura_stft``, ``aura_mrstft``: ``100 / (1 + 10 · loss)`` of auraloss's STFT loss (spectral
  convergence + log magnitude) and of its mel-scaled, A-weighted multi-resolution STFT loss.
* ``bleedless``, ``fullness``: from the dB difference of 512-band mel spectrograms (4096-point STFT,
  hop 1024, 80 dB floor below the track's peak): ``100 / (1 + mean of the positive differences)``
  (energy the estimate has and the reference lacks: bleed) and ``100 / (1 + mean of the negative
  differences' magnitudes)`` (energy missing from the estimate).

Higher is better for all. ``usdr``/``si_sdr`` are dB, ``log_wmse`` is on its package's dB-like scale,
the others are 0-100 scores. MSST assumes 44.1 kHz for ``log_wmse``, ``aura_mrstft`` and
``bleedless``/``fullness`` (its mel filters and weighting curves); here they use the track's sample
rate, which is the same at 44.1 kHz.

Silent references (a song without that stem), as MSST computes them: ``usdr`` is ``10 log10(ε / (Σ
e² + ε))``, very negative unless the estimate is silent too (then 0 dB); ``si_sdr`` is −80 dB (the
scale is ~1, the scaled reference zero); ``l1_freq`` measures the estimate's magnitude alone;
``log_wmse`` stays finite (its error is relative to the mixture's level; both silent: its ceiling,
+73.68); ``aura_*`` are finite; ``fullness`` is 100 (nothing missing) and ``bleedless`` falls with
the estimate's level. A silent estimate of a non-silent reference: ``bleedless`` 100, ``fullness``
low, ``aura_*`` near 0 (spectral convergence divides by the estimate's norm).

:data:`COMMUNITY_METRICS` names them; :func:`community_metrics` computes any selection (shared
transforms once); :class:`CommunityMetrics` accumulates them over validation tracks (mean over tracks,
as MSST averages, synchronised under DDP).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torchmetrics import Metric

from stemsep.errors import StemsepError
from stemsep.evaluation.metrics import nsdr

EPS = 1e-8
# Samples (items x channels x time) transformed at once: bounds the STFT buffers of long tracks and
# big validation batches (a 4-minute stereo track, 4 sources, is 85 M samples: a few chunks).
CHUNK_SAMPLES = 1 << 24

Values = dict[str, torch.Tensor]
Compute = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], Values]


@dataclass(frozen=True)
class CommunityMetric:
    """One metric: its ``unit`` ("dB" or "score"), and the function computing it (with any metric
    sharing its transforms: ``bleedless`` and ``fullness`` come from one pass)."""

    name: str
    unit: str
    compute: Compute
    needs_mix: bool = False


def _require(module: str, package: str, metric: str):
    """Import ``module``, or a one-line error naming the package ``metric`` needs."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise StemsepError(f"the {metric} metric needs the {package} package, which is not installed: "
                           f"pip install {package}") from None


def _items(x: torch.Tensor) -> torch.Tensor:
    """``(batch, sources, channels, time)`` -> ``(batch * sources, channels, time)``."""
    if x.dim() != 4:
        raise ValueError(f"expected (batch, sources, channels, time), got {tuple(x.shape)}")
    return x.reshape(-1, *x.shape[-2:])


def _chunks(items: int, channels: int, length: int) -> Iterator[slice]:
    """Slices of the item axis holding at most ``CHUNK_SAMPLES`` samples (one item at least)."""
    step = max(1, CHUNK_SAMPLES // max(1, channels * length))
    for start in range(0, items, step):
        yield slice(start, min(items, start + step))


def _per_item(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], estimates: torch.Tensor,
              references: torch.Tensor) -> torch.Tensor:
    """``fn(est_items, ref_items) -> (items, k)`` over memory-bounded chunks; ``(batch, sources, k)``."""
    est, ref = _items(estimates), _items(references)
    parts = [fn(est[part], ref[part]).double() for part in _chunks(est.shape[0], est.shape[1], est.shape[2])]
    return torch.cat(parts).reshape(*estimates.shape[:2], -1)


def usdr(estimates: torch.Tensor, references: torch.Tensor, mixture: torch.Tensor | None = None,
         samplerate: int | None = None) -> Values:
    """Whole-track SDR (MSST's ``sdr``): :func:`stemsep.evaluation.metrics.nsdr` in float64."""
    return {"usdr": nsdr(estimates.double(), references.double(), eps=EPS)}


def si_sdr(estimates: torch.Tensor, references: torch.Tensor, mixture: torch.Tensor | None = None,
           samplerate: int | None = None) -> Values:
    """MSST's SI-SDR: its ε enters every product of the scale's sums (``n·ε`` in total)."""
    est, ref = estimates.double(), references.double()
    n = ref.shape[-1] * ref.shape[-2]
    scale = ((est * ref).sum((-2, -1)) + n * EPS) / ((ref * ref).sum((-2, -1)) + n * EPS)
    scaled = ref * scale[..., None, None]
    ratio = (scaled * scaled).sum((-2, -1)) / (((scaled - est) ** 2).sum((-2, -1)) + EPS)
    return {"si_sdr": 10 * torch.log10(ratio + EPS)}


def _magnitude(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, pad_mode: str = "reflect") -> torch.Tensor:
    """``|STFT|`` of ``(..., time)`` rows (centred frames, as ``torch.stft``'s defaults)."""
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, n_fft, hop, window=window.to(x.device, x.dtype), center=True, pad_mode=pad_mode,
                      return_complex=True).abs()
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:])


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def l1_freq(estimates: torch.Tensor, references: torch.Tensor, mixture: torch.Tensor | None = None,
            samplerate: int | None = None) -> Values:
    """MSST's ``L1Freq_metric``: its STFT has no window argument, i.e. a rectangular window."""
    window = torch.ones(2048)

    def one(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        diff = _magnitude(_float(est), 2048, 1024, window) - _magnitude(_float(ref), 2048, 1024, window)
        loss = 10 * diff.abs().mean(dim=(-3, -2, -1))
        return (100 / (1 + loss))[:, None]

    return {"l1_freq": _per_item(one, estimates, references)[..., 0]}


@lru_cache(maxsize=8)
def _log_wmse_filter(samplerate: int, device: torch.device) -> torch.nn.Module:
    """torch-log-wmse's hearing-sensitivity filter (it returns the weighted ENERGY of each row)."""
    return _require("torch_log_wmse", "torch-log-wmse", "log_wmse").LogWMSE(sample_rate=samplerate).filters.to(device)


def log_wmse(estimates: torch.Tensor, references: torch.Tensor, mixture: torch.Tensor,
             samplerate: int) -> Values:
    """torch-log-wmse's score ``-4 log(mse + 1e-8)`` (its ``per_element_mse`` and ``score_from_mse``),
    pooled as MSST's call pools it.

    MSST hands the package a mixture ``(1, C, T)`` and a source ``(1, 1, C, T)``; the package's
    ``[batch, channel, stem, time]`` broadcast then scales each source channel ``j`` by each mixture
    channel ``i``'s weighted level and averages the score over all ``(i, j)`` pairs. The same here.
    """
    if mixture is None:
        raise ValueError("log_wmse needs the mixture")
    filters = _log_wmse_filter(int(samplerate), estimates.device)
    from torch_log_wmse.metric import per_element_mse, score_from_mse, weighted_energy

    mix = _float(mixture)
    level = torch.cat([weighted_energy(mix[part, :, None, :], filters)
                       for part in _chunks(mix.shape[0], mix.shape[1], mix.shape[2])]) / mix.shape[-1]  # (B, C, 1)
    sources = estimates.shape[1]
    level = level[:, None].expand(-1, sources, -1, -1).reshape(-1, level.shape[1], 1)  # (items, C_mix, 1)
    est, ref = _items(_float(estimates)), _items(_float(references))
    parts = []
    for part in _chunks(est.shape[0], est.shape[1], est.shape[2]):
        mse = per_element_mse(level[part], filters, est[part, None], ref[part, None])  # (n, C_mix, C_src)
        parts.append(score_from_mse(mse).double().mean(dim=(-2, -1)))
    return {"log_wmse": torch.cat(parts).reshape(estimates.shape[:2])}


@lru_cache(maxsize=8)
def _aura(kind: str, samplerate: int, device: torch.device) -> tuple[torch.nn.Module, ...]:
    """MSST's auraloss settings: ``STFTLoss(w_log_mag=1, w_lin_mag=0, w_sc=1)`` (auraloss' other
    defaults), or the mel-scaled (128 bands), A-weighted 1024/2048/4096 ``MultiResolutionSTFTLoss``."""
    from auraloss.freq import MultiResolutionSTFTLoss, STFTLoss

    if kind != "stft":  # auraloss builds its mel bank with librosa (its optional dependency)
        _require("librosa", "librosa", "aura_mrstft")
    if kind == "stft":
        losses = (STFTLoss(w_log_mag=1.0, w_lin_mag=0.0, w_sc=1.0),)
    else:
        losses = tuple(MultiResolutionSTFTLoss(fft_sizes=[1024, 2048, 4096], hop_sizes=[256, 512, 1024],
                                               win_lengths=[1024, 2048, 4096], scale="mel", n_bins=128,
                                               sample_rate=samplerate, perceptual_weighting=True).stft_losses)
    return tuple(loss.to(device) for loss in losses)


def _weighted(losses: tuple[torch.nn.Module, ...], ref: torch.Tensor, est: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """auraloss' A-weighting of ``(items, C, T)``, once for all resolutions (their FIR filters are one
    filter: same rate, same taps), or the signals as they are."""
    if not losses[0].perceptual_weighting:
        return ref, est
    items, channels, length = ref.shape
    fir = losses[0].prefilter
    if any(not torch.equal(loss.prefilter.fir.weight, fir.fir.weight) for loss in losses[1:]):
        raise AssertionError("auraloss' resolutions weight differently")  # not with auraloss 0.4
    ref, est = fir(ref.reshape(-1, 1, length), est.reshape(-1, 1, length))  # auraloss filters mono rows
    return ref.reshape(items, channels, -1), est.reshape(items, channels, -1)


def _aura_magnitude(loss: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """auraloss' ``STFTLoss.stft`` magnitude (``sqrt(max(|X|², eps))``, its window and sizes) of
    ``(..., T)`` rows, mel-scaled where it scales, without the phase it also computes and no loss needs."""
    spec = torch.stft(x.reshape(-1, x.shape[-1]), loss.fft_size, loss.hop_size, loss.win_length,
                      loss.window.to(x.device), return_complex=True)
    magnitude = torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=loss.eps))
    return torch.matmul(loss.fb, magnitude) if loss.scale is not None else magnitude


def _aura_loss(loss: torch.nn.Module, ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """One auraloss ``STFTLoss(reference, estimate)`` per item of ``(items, C, T)`` signals (A-weighted
    already, :func:`_weighted`): its clamped magnitudes and mel bank, its terms reduced per item
    instead of over the whole batch."""
    items = ref.shape[0]
    x, y = _aura_magnitude(loss, ref).reshape(items, -1), _aura_magnitude(loss, est).reshape(items, -1)
    convergence = (y - x).norm(dim=1) / y.norm(dim=1)  # auraloss: ||Y - X|| / ||Y||, Y the estimate
    log_magnitude = (x.log() - y.log()).abs().mean(dim=1)
    return loss.w_sc * convergence + loss.w_log_mag * log_magnitude


def _aura_metric(kind: str, name: str) -> Compute:
    def compute(estimates: torch.Tensor, references: torch.Tensor, mixture: torch.Tensor | None = None,
                samplerate: int = 44100) -> Values:
        losses = _aura(kind, int(samplerate), estimates.device)

        def one(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            ref, est = _weighted(losses, ref.float(), est.float())  # MSST: .float() (auraloss' filters are float32)
            loss = sum(_aura_loss(part, ref, est) for part in losses) / len(losses)
            return (100 / (1 + 10 * loss))[:, None]

        return {name: _per_item(one, estimates, references)[..., 0]}

    compute.__name__ = name
    compute.__doc__ = f"MSST's ``{name}``: ``100 / (1 + 10 * loss)`` of auraloss' {kind.upper()} loss."
    return compute


aura_stft = _aura_metric("stft", "aura_stft")
aura_mrstft = _aura_metric("mrstft", "aura_mrstft")


@lru_cache(maxsize=8)
def _mel_bank(samplerate: int, n_fft: int, n_mels: int, device: torch.device) -> torch.Tensor:
    """librosa's mel filters (Slaney), as MSST's ``bleed_full`` and auraloss build them."""
    import warnings

    librosa = _require("librosa", "librosa", "bleedless/fullness and aura_mrstft")
    with warnings.catch_warnings():  # few bins per band at low rates: empty bands, as in MSST
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(librosa.filters.mel(sr=samplerate, n_fft=n_fft, n_mels=n_mels)).to(device)


def bleed_full(estimates: torch.Tensor, references: torch.Tensor, mixture: torch.Tensor | None = None,
               samplerate: int = 44100) -> Values:
    """MSST's ``bleed_full``: ``bleedless`` and ``fullness`` from one pair of mel spectrograms."""
    from torchaudio.functional import amplitude_to_DB

    bank = _mel_bank(int(samplerate), 4096, 512, estimates.device)
    window = torch.hann_window(4096)

    def decibels(x: torch.Tensor) -> torch.Tensor:  # (items, C, T) -> (items, C, mels, frames)
        mel = torch.matmul(bank, _magnitude(x.float(), 4096, 1024, window, pad_mode="constant"))
        return amplitude_to_DB(mel, multiplier=20.0, amin=1e-10, db_multiplier=0.0, top_db=80.0)

    def one(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        diff = (decibels(est) - decibels(ref)).reshape(est.shape[0], -1)
        positive, negative = diff.clamp(min=0), diff.clamp(max=0)
        above = (positive.sum(1) / (diff > 0).sum(1).clamp(min=1))  # mean of the positive ones, 0 if none
        below = (negative.sum(1) / (diff < 0).sum(1).clamp(min=1))
        return torch.stack([100 / (above + 1), 100 / (1 - below)], dim=1)

    values = _per_item(one, estimates, references)
    return {"bleedless": values[..., 0], "fullness": values[..., 1]}


COMMUNITY_METRICS: dict[str, CommunityMetric] = {
    metric.name: metric for metric in (
        CommunityMetric("usdr", "dB", usdr),
        CommunityMetric("si_sdr", "dB", si_sdr),
        CommunityMetric("l1_freq", "score", l1_freq),
        CommunityMetric("log_wmse", "score", log_wmse, needs_mix=True),
        CommunityMetric("aura_stft", "score", aura_stft),
        CommunityMetric("aura_mrstft", "score", aura_mrstft),
        CommunityMetric("bleedless", "score", bleed_full),
        CommunityMetric("fullness", "score", bleed_full),
    )
}


def check_community_metrics(names: Sequence[str], origin: str = "metrics") -> tuple[str, ...]:
    """The names, checked: a one-line error naming the unknown ones and the choices."""
    names = tuple(names)
    unknown = [n for n in names if n not in COMMUNITY_METRICS]
    if unknown:
        raise StemsepError(f"{origin}: unknown metric(s) {', '.join(map(repr, unknown))}; choose from "
                           f"{', '.join(COMMUNITY_METRICS)}")
    return tuple(dict.fromkeys(names))


# Shortest input each STFT-based metric takes: half its largest FFT plus one (the centred STFT's padding).
MIN_SAMPLES = {"l1_freq": 1025, "aura_stft": 1025, "aura_mrstft": 2049, "bleedless": 2049, "fullness": 2049}


def community_metrics(names: Sequence[str], estimates: torch.Tensor, references: torch.Tensor,
                      mixture: torch.Tensor | None, samplerate: int) -> Values:
    """``{name: (batch, sources) float64}`` for the named metrics, on the inputs' device.

    ``estimates``/``references``: ``(batch, sources, channels, time)`` (or one track without the batch
    dimension, then ``(sources,)`` each); ``mixture``: ``(batch, channels, time)``, needed by
    ``log_wmse`` (default: the sum of the references). Metrics sharing a transform compute it once.
    """
    names = check_community_metrics(names)
    if estimates.shape != references.shape:
        raise ValueError(f"estimates {tuple(estimates.shape)} and references {tuple(references.shape)} differ")
    for name in names:  # a centred STFT needs more samples than half its size
        if estimates.shape[-1] < MIN_SAMPLES.get(name, 0):
            raise StemsepError(f"{name}: needs at least {MIN_SAMPLES[name]} samples (its STFT), the audio has "
                               f"{estimates.shape[-1]}")
    single = estimates.dim() == 3
    if single:
        estimates, references = estimates[None], references[None]
        mixture = None if mixture is None else mixture[None]
    if mixture is None:
        mixture = references.sum(1)
    done: Values = {}
    with torch.no_grad():
        for name in names:
            if name not in done:
                done.update(COMMUNITY_METRICS[name].compute(estimates, references, mixture, samplerate))
    return {name: done[name][0] if single else done[name] for name in names}


class CommunityMetrics(Metric):
    """Mean over the tracks seen of each named metric, per source (MSST averages tracks).

    ``update(estimates, references, mixture, samplerate)``: ``(batch, sources, channels, time)`` each,
    every batch item one whole track, computed on the inputs' device. ``compute()``:
    ``{name: (sources,)}``. Sums and counts are synchronised under DDP.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, names: Sequence[str], num_sources: int, **kwargs):
        super().__init__(**kwargs)
        self.names = check_community_metrics(names)
        for name in self.names:
            self.add_state(f"total_{name}", default=torch.zeros(num_sources, dtype=torch.float64),
                           dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimates: torch.Tensor, references: torch.Tensor, mixture: torch.Tensor | None,
               samplerate: int) -> None:
        values = community_metrics(self.names, estimates, references, mixture, samplerate)
        for name, value in values.items():
            total = getattr(self, f"total_{name}")
            total += value.reshape(-1, value.shape[-1]).sum(0).to(total)
        self.count += math.prod(estimates.shape[:-3]) if estimates.dim() > 3 else 1

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: (getattr(self, f"total_{name}") / self.count.clamp(min=1)).float() for name in self.names}
