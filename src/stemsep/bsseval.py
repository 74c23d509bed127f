"""BSS-eval v4 (museval) in torch: framewise SDR, ISR, SIR and SAR of multichannel estimates.

The mode is the one demucs and the Hybrid (Transformer) Demucs papers report: museval's
``bss_eval(references, estimates, compute_permutation=False, framewise_filters=False,
bsseval_sources_version=False)`` with 1 s windows and hops and 512-tap distortion filters.

For source ``j``, the estimate ``e`` (all its channels) is projected, with filters of
``L`` taps fitted by least squares over the *whole* track, onto

* ``P_j e``: the delayed copies of source ``j``'s own reference channels, and
* ``P e``: the delayed copies of every reference channel;

then, in each window, with ``s`` the reference of source ``j`` (filters applied to the
window's references, convolutions full length, so windows of ``W + L - 1`` samples):

* SDR = 10 log10(||s||^2 / ||e - s||^2)          (no filter involved: framewise SNR)
* ISR = 10 log10(||s||^2 / ||P_j e - s||^2)      (spatial / filtering distortion)
* SIR = 10 log10(||P_j e||^2 / ||P e - P_j e||^2)  (interference of other sources)
* SAR = 10 log10(||P e||^2 / ||e - P e||^2)        (artifacts)

As museval: frames are ``floor((T - W + H) / H)`` full windows (one frame of the whole track
when shorter than a window); a frame where any reference or estimated source is silent
(its channel sum is exactly zero throughout) is NaN for every source; a zero denominator
gives +inf.

Where the cost goes and how it is avoided: the least-squares filters need the Gram matrix
of all delayed reference channels (``(K L)^2`` with ``K`` = sources x channels), which museval
builds and solves densely once per source. It is block Toeplitz, so here correlations come
from block-wise FFTs (only lags ``< L`` are needed), and one block-Levinson pass
(:mod:`stemsep.block_toeplitz`) solves for every estimate channel at once; the own-source
systems of all sources are solved as one batch. Framewise projections are overlap-add FFT
convolutions with cache-sized (8192-point) FFTs.
"""

from __future__ import annotations

import math

import torch

from .block_toeplitz import solve_block_toeplitz

METRICS = ("sdr", "isr", "sir", "sar")
FILTER_LENGTH = 512
_CORRELATION_FFT = 8192  # block size of the correlation FFTs (must exceed 2 * filter length)
_BLOCKS_PER_GROUP = 64   # correlation blocks transformed at once (bounds memory on long tracks)


def frame_starts(length: int, window: int, hop: int) -> tuple[list[int], int]:
    """Window starts and window length, as museval frames a track of ``length`` samples."""
    count = int(math.floor((length - window + hop) / hop))
    if count < 1:
        return [0], length
    return [i * hop for i in range(count)], window


def silent_frames(signals: torch.Tensor, starts: list[int], window: int) -> torch.Tensor:
    """``(frames,)`` bool: some source of ``signals (S, C, T)`` sums to exactly 0 over channels
    at every sample of the frame (museval leaves such frames NaN)."""
    mono = signals.sum(dim=1)  # (S, T)
    frames = torch.stack([mono[:, s:s + window] for s in starts])  # (F, S, W)
    return (frames == 0).all(dim=-1).any(dim=-1)


def _safe_db(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den == 0, torch.full_like(num, math.inf), 10 * torch.log10(num / den))


def framewise_sdr(estimates: torch.Tensor, references: torch.Tensor, starts: list[int],
                  window: int) -> torch.Tensor:
    """SDR per ``(source, frame)``: in BSS-eval v4's image mode it reduces to framewise SNR."""
    ref_energy, err_energy = [], []
    for s in starts:  # a frame at a time in float64: no track-long float64 copies
        ref = references[..., s:s + window].double()
        ref_energy.append((ref ** 2).sum(dim=(-2, -1)))
        err_energy.append(((estimates[..., s:s + window].double() - ref) ** 2).sum(dim=(-2, -1)))
    return _safe_db(torch.stack(ref_energy, dim=-1), torch.stack(err_energy, dim=-1))


def lag_correlations(signals: list[torch.Tensor], references: torch.Tensor, max_lag: int) -> torch.Tensor:
    """``out[x, k, m] = sum_u x_sig[u + m] * references[k, u]`` for lags ``0 <= m < max_lag``.

    ``signals``: tensors ``(X_i, T)`` whose rows, concatenated, are the ``x`` index.
    Computed block-wise (FFT size 8192, cross-spectra summed over blocks, one inverse FFT per
    pair), so the cost is that of FFTs of the signals, not of ``X K`` track-long FFTs. Blocks
    are cut, padded and converted to float64 a group at a time: no track-long copies.
    """
    length = references.shape[-1]
    fft = max(_CORRELATION_FFT, 1 << (2 * max_lag - 1).bit_length())
    block = fft - (max_lag - 1)
    count = -(-length // block)
    rows = sum(sig.shape[0] for sig in signals)
    cross = torch.zeros(rows, references.shape[0], fft // 2 + 1, dtype=torch.complex128,
                        device=references.device)
    for first in range(0, count, _BLOCKS_PER_GROUP):
        blocks = min(_BLOCKS_PER_GROUP, count - first)
        start, stop = first * block, (first + blocks) * block
        # Each block of the signals with the (max_lag - 1) samples that follow it.
        ext = _padded_slice(signals, start, stop + max_lag - 1)
        ext = ext.unfold(-1, block + max_lag - 1, block)                        # (X, n, fft)
        ext_spec = torch.fft.rfft(ext, n=fft)
        blk = _padded_slice([references], start, stop).unflatten(-1, (blocks, block))
        blk_conj = torch.fft.rfft(blk, n=fft).conj().resolve_conj()
        # Sum over blocks one block at a time: elementwise products along frequency (a
        # batched complex matmul per frequency is several times slower on CPU).
        for b in range(blocks):  # fused multiply-add: no temporary per block
            cross.addcmul_(ext_spec[:, None, b, :], blk_conj[None, :, b, :])
    return torch.fft.irfft(cross, n=fft)[..., :max_lag]


def _padded_slice(signals: list[torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Rows of all ``signals`` over ``[start, stop)`` in float64, zeros outside them (one copy)."""
    rows = sum(sig.shape[0] for sig in signals)
    out = torch.zeros(rows, stop - start, dtype=torch.float64, device=signals[0].device)
    row = 0
    for sig in signals:
        lo, hi = max(0, start), min(sig.shape[-1], stop)
        if hi > lo:
            out[row:row + sig.shape[0], lo - start:hi - start] = sig[:, lo:hi]
        row += sig.shape[0]
    return out


def projection_filters(estimates: torch.Tensor, references: torch.Tensor,
                       filter_length: int = FILTER_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares distortion filters over the whole track (float64).

    Returns ``(all_filters (K, K, L), own_filters (K, K, L))`` with ``K = S * C``:
    ``all_filters[k, o]`` filters reference channel ``k`` into estimate channel ``o`` for the
    projection onto every source; ``own_filters`` is the same for the projection of each
    estimate onto its own source only (zero across sources).
    """
    sources, channels, _ = references.shape
    k = sources * channels
    refs = references.reshape(k, -1)
    ests = estimates.reshape(k, -1)
    corr = lag_correlations([refs, ests], refs, filter_length)
    gram = corr[:k].permute(2, 0, 1).contiguous()  # Q_m[k, k'] = sum_u r_k(u + m) r_k'(u)
    rhs = corr[k:].permute(2, 1, 0).contiguous()   # y_m[k, o] = sum_u e_o(u + m) r_k(u)
    # A tiny diagonal load keeps the recursion defined when reference channels are linearly
    # dependent (mono stems stored as stereo); the projections themselves do not change.
    scale = gram[0].diagonal().mean().clamp(min=torch.finfo(torch.float64).tiny)
    gram[0] += 1e-10 * scale * torch.eye(k, dtype=gram.dtype, device=gram.device)
    all_filters = solve_block_toeplitz(gram, rhs).permute(1, 2, 0)  # (K, K, L)
    # Own-source systems: source j's channels only, all sources in one batched recursion.
    per_source = [slice(j * channels, (j + 1) * channels) for j in range(sources)]
    gram_own = torch.stack([gram[:, c, c] for c in per_source])   # (S, L, C, C)
    rhs_own = torch.stack([rhs[:, c, c] for c in per_source])     # (S, L, C, C)
    solved_own = solve_block_toeplitz(gram_own, rhs_own)
    own_filters = torch.zeros_like(all_filters)
    for j, c in enumerate(per_source):
        own_filters[c, c] = solved_own[j].permute(1, 2, 0)
    return all_filters, own_filters


def framewise_projection_metrics(estimates: torch.Tensor, references: torch.Tensor,
                                 all_filters: torch.Tensor, own_filters: torch.Tensor,
                                 starts: list[int], window: int, frame_batch: int = 8
                                 ) -> dict[str, torch.Tensor]:
    """ISR, SIR, SAR per ``(source, frame)`` from the whole-track filters.

    Each window's references are filtered by overlap-add with 8192-point FFTs (small FFTs
    stay in cache: several times faster per sample than one window-long FFT); the energies
    are then summed in the time domain over the ``W + L - 1`` samples museval uses.
    """
    sources, channels, _ = references.shape
    k = sources * channels
    taps = all_filters.shape[-1]
    fft = max(_CORRELATION_FFT, 1 << (2 * taps - 1).bit_length())
    step = fft - taps + 1                       # input samples per overlap-add block
    blocks = -(-window // step)
    all_spec = torch.fft.rfft(all_filters, n=fft)  # (K, K, F)
    # Own-source filters are zero across sources: transform only each channel's own block.
    own_of = [slice(i // channels * channels, (i // channels + 1) * channels) for i in range(k)]
    own_spec = torch.fft.rfft(torch.stack([own_filters[i, own_of[i]] for i in range(k)]), n=fft)  # (K, C, F)
    refs = references.reshape(k, -1)
    ests = estimates.reshape(k, -1)
    span = (blocks + 1) * step                  # >= window + taps - 1, whole blocks
    parts: dict[str, list[torch.Tensor]] = {"isr": [], "sir": [], "sar": []}
    for first in range(0, len(starts), frame_batch):
        batch = starts[first:first + frame_batch]
        ref = torch.stack([refs[:, s:s + window] for s in batch]).double()      # (B, K, W)
        ref = torch.nn.functional.pad(ref, (0, span - window))
        est = torch.nn.functional.pad(torch.stack([ests[:, s:s + window] for s in batch]).double(),
                                      (0, span - window))
        ref_spec = torch.fft.rfft(ref[..., :blocks * step].unflatten(-1, (blocks, step)), n=fft)  # (B,K,n,F)
        # Filtered references summed per estimate channel: elementwise products along
        # frequency, one reference channel at a time (own-source filters: own channels only).
        proj_all = torch.zeros_like(ref_spec)
        proj_own = torch.zeros_like(ref_spec)
        for i in range(k):
            proj_all.addcmul_(ref_spec[:, i, None], all_spec[i, :, None])
            proj_own[:, own_of[i]].addcmul_(ref_spec[:, i, None], own_spec[i, :, None])
        p_all, p_own = (_overlap_add(torch.fft.irfft(p, n=fft), step, span) for p in (proj_all, proj_own))

        def energy(signal: torch.Tensor) -> torch.Tensor:  # (B, K, T) -> (S, B), summed over channels
            return signal.square().sum(-1).reshape(-1, sources, channels).sum(-1).T

        parts["isr"].append(_safe_db(energy(ref), energy(p_own - ref)))
        parts["sir"].append(_safe_db(energy(p_own), energy(p_all - p_own)))
        parts["sar"].append(_safe_db(energy(p_all), energy(est - p_all)))
    return {name: torch.cat(values, dim=-1) for name, values in parts.items()}


def _overlap_add(blocks: torch.Tensor, step: int, span: int) -> torch.Tensor:
    """``(..., n, fft)`` block outputs, block ``j`` starting at ``j * step`` -> ``(..., span)``."""
    *lead, count, fft = blocks.shape
    out = blocks.new_zeros(*lead, span)
    out[..., :count * step] = blocks[..., :step].flatten(-2)
    tail = fft - step  # each block spills this many samples into the next ones
    spill = out[..., step:step + count * step].unflatten(-1, (count, step))
    spill[..., :tail] += blocks[..., step:]
    return out


def bss_eval(estimates: torch.Tensor, references: torch.Tensor, samplerate: int = 44100,
             window: float = 1.0, hop: float = 1.0, metrics: tuple[str, ...] = METRICS,
             filter_length: int = FILTER_LENGTH) -> dict[str, torch.Tensor]:
    """Framewise BSS-eval v4 of ``estimates`` against ``references``, both ``(sources, channels, time)``.

    Returns ``{metric: (sources, frames)}`` float64 tensors for the requested ``metrics``
    (any of ``sdr``, ``isr``, ``sir``, ``sar``). ``metrics=("sdr",)`` is the cheap path
    (no filters: cost of a few passes over the track) fit for every validation.
    """
    if estimates.shape != references.shape or estimates.dim() != 3:
        raise ValueError(f"estimates {tuple(estimates.shape)} and references {tuple(references.shape)} "
                         "must both be (sources, channels, time)")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {METRICS}")
    length = references.shape[-1]
    starts, win = frame_starts(length, int(window * samplerate), int(hop * samplerate))
    silent = silent_frames(references, starts, win) | silent_frames(estimates, starts, win)
    out: dict[str, torch.Tensor] = {}
    if "sdr" in metrics:
        out["sdr"] = framewise_sdr(estimates, references, starts, win)
    if set(metrics) & {"isr", "sir", "sar"}:
        all_filters, own_filters = projection_filters(estimates, references, filter_length)
        values = framewise_projection_metrics(estimates, references, all_filters, own_filters, starts, win)
        out.update({name: values[name] for name in ("isr", "sir", "sar") if name in metrics})
    for name in out:
        out[name] = out[name].masked_fill(silent[None, :], math.nan)
    return {name: out[name] for name in METRICS if name in out}
