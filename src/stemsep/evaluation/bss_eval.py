"""BSS-eval v4 (museval) in torch: framewise SDR, ISR, SIR and SAR of multichannel estimates.

Kept as one module (over 400 lines): the definition below, the projections and the framewise
loop that computes it are checked against museval together; the linear algebra is in ``solver``.

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
builds and solves densely once per source. It is block Toeplitz, so only lag correlations
(lags ``< L``) are needed; one block-Levinson pass (:mod:`stemsep.evaluation.solver`) solves for
every estimate channel at once, and the own-source systems of all sources as one batch. The
system is museval's (``G + eps I``, ``eps`` absolute); where Levinson is not provably as accurate
as museval's LU (band-limited or tonal references: a nearly singular ``G``), museval's dense
solve is used instead, once per track. Where the solver keeps Levinson filters that are only a
rounding draw (music's nearly singular ``G``), the metrics are computed a second time with those
systems perturbed by ``2 eps``; if a median moves by more than :data:`DRAW_TOLERANCE`, the track is
solved as museval does (see :mod:`stemsep.evaluation.solver`).
museval then filters every window's references (``K^2`` full-length convolutions per window)
and sums energies. Those energies are quadratic forms in the window's signals: here they are
weighted sums of the window's own lag correlations, weighted by correlations of the filters.
The window correlations come from small block FFTs, and summed over the windows (plus the
few pairs straddling window cuts) they are the whole track's correlations: with hop = window
the track is transformed once, and no filtered signal is ever formed — except in windows where
large filters would make that expansion cancel beyond a bounded rounding: those are computed
from the filtered signals, as museval does (:func:`spectral_projection_metrics`).
See docs/evaluation.md for the numerics and what is and is not stable on band-limited input.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft
import torch

from stemsep.evaluation.solver import EPS, Solved, solve_system

METRICS = ("sdr", "isr", "sir", "sar")
FILTER_LENGTH = 512
_CORRELATION_FFT = 2048  # size of the block FFTs of the correlations (raised to >= 2 * filter length)
_FREQUENCY_TILE = 128  # frequencies whose cross-spectra are one batch of matrix products
_WINDOWS_PER_CHUNK = 32  # windows whose correlations are reduced at once
_KEPT_FRAMES_BYTES = 256 * 2 ** 20  # frame correlations kept between passes (beyond: computed twice)
_SPECTRAL_BYTES = 64 * 2 ** 20  # frame spectra held at once by spectral_projection_metrics
# Rounding of a window correlation relative to sqrt(E_k E_k'): the bound it gives on an energy was
# 10-20x the error measured where the expansion does cancel (tonal stems), and never below it.
_ROUNDING = 4 * 2.0 ** -52
DRAW_TOLERANCE = 3e-3
"""Largest move (dB) of a median when the systems whose Levinson filters were kept as rounding draws
are perturbed by :data:`JITTER` (relative, each entry) and solved again; beyond, museval's LU."""
JITTER = 2 * EPS
_ENERGY_TOLERANCE = 1e-5  # largest bound on an energy's relative rounding kept from the expansion (4e-5 dB)


def frame_starts(length: int, window: int, hop: int) -> tuple[list[int], int]:
    """Window starts and window length, as museval frames a track of ``length`` samples."""
    count = int(math.floor((length - window + hop) / hop))
    if count < 1:
        return [0], length
    return [i * hop for i in range(count)], window


def silent_frames(signals: torch.Tensor, starts: list[int], window: int) -> torch.Tensor:
    """``(frames,)`` bool: some source of ``signals (S, C, T)`` sums to exactly 0 over channels
    at every sample of the frame (museval leaves such frames NaN)."""
    return torch.stack([_silent(signals[:, :, s:s + window]) for s in starts])


def _silent(frame: torch.Tensor) -> torch.Tensor:
    if frame.device.type == "cpu":  # (on a GPU, the test would cost a synchronisation)
        # Usually every source has a non-zero channel sum at one of a few samples: then no
        # source is silent, without summing the whole frame.
        probe = frame[:, :, ::max(1, frame.shape[-1] // 32)].sum(dim=1)
        if bool((probe != 0).any(dim=-1).all()):
            return torch.tensor(False)
    return (frame.sum(dim=1) == 0).all(dim=-1).any()


def _safe_db(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den == 0, torch.full_like(num, math.inf), 10 * torch.log10(num / den))


def frame_energies(estimates: torch.Tensor, references: torch.Tensor, starts: list[int], window: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(||s||^2, ||e - s||^2, ||e||^2)`` per frame and channel, each ``(frames, S C)`` float64,
    for ``(sources, channels, time)`` inputs (dot products: no squared copies)."""
    return frame_statistics(estimates, references, starts, window)[:3]


def frame_statistics(estimates: torch.Tensor, references: torch.Tensor, starts: list[int], window: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`frame_energies` and which frames are silent (:func:`silent_frames` of either
    input), in one pass over the frames: a frame at a time, in float64, no track-long copies
    (torch's own threads share each frame's sums; Python threads calling torch only contend)."""
    ref_energy, err_energy, est_energy, silent = [], [], [], []
    err = None  # one buffer for every frame's error (a new one per frame doubled this loop's time)
    for s in starts:
        ref = references[:, :, s:s + window]
        est = estimates[:, :, s:s + window]
        silent.append(_silent(ref) | _silent(est))
        ref = ref.flatten(0, 1).double()
        est = est.flatten(0, 1).double()
        if err is None or err.shape != ref.shape:
            err = torch.empty_like(ref)
        torch.sub(est, ref, out=err)
        ref_energy.append(torch.linalg.vecdot(ref, ref))
        err_energy.append(torch.linalg.vecdot(err, err))
        est_energy.append(torch.linalg.vecdot(est, est))
    return torch.stack(ref_energy), torch.stack(err_energy), torch.stack(est_energy), torch.stack(silent)


def _per_source(energy: torch.Tensor, channels: int) -> torch.Tensor:
    """``(frames, S C)`` -> ``(S, frames)``, summed over each source's channels."""
    return energy.unflatten(-1, (-1, channels)).sum(-1).T


def window_correlations(references: torch.Tensor, estimates: torch.Tensor, starts: list[int],
                        window: int, max_lag: int, out: np.ndarray | None = None) -> torch.Tensor:
    """Lag correlations inside each window, ``(windows, 2 K, K, max_lag)`` float64.

    ``out[w, x, k, m] = sum_u x_sig[u + m] * references[k, u]`` over ``u`` and ``u + m`` both
    in the window ``[s, s + window)`` (signals zero outside it), for lags ``0 <= m < max_lag``;
    rows ``x`` are the ``K`` reference channels, then the ``K`` estimate channels (both
    ``(K, T)``). A window is cut into blocks; each block with the ``max_lag - 1`` samples that
    follow it inside the window is correlated with the block by small FFTs (NumPy's, faster
    than torch's for these batches on CPU, written into reused buffers). The cross-spectra
    summed over the window's blocks are, at each frequency, one small matrix product
    ``(2 K, blocks) @ (blocks, K)``: batched over a tile of frequencies at a time (BLAS, in
    cache), rather than one pass over memory per block; then inverted once per window.

    Windows are independent: with ``torch.get_num_threads() > 1`` they are shared among that
    many threads (NumPy releases the GIL), each with its own buffers, so the values do not
    depend on the number of threads. ``out``: a float64 array to write them into.
    """
    refs = references.detach().cpu().numpy()  # float32 rows are cast block by block, not copied whole
    ests = estimates.detach().cpu().numpy()
    if out is None:
        out = np.empty((len(starts), 2 * refs.shape[0], refs.shape[0], max_lag))

    threads = max(1, min(torch.get_num_threads(), len(starts)))
    bounds = [round(i * len(starts) / threads) for i in range(threads + 1)]
    parts = [(out[lo:hi], starts[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def run(part: tuple[np.ndarray, list[int]]) -> None:
        _window_correlations_into(part[0], refs, ests, part[1], window, max_lag)

    if threads == 1:
        run(parts[0])
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, parts))
    return torch.from_numpy(out).to(references.device)


def _window_correlations_into(out: np.ndarray, refs: np.ndarray, ests: np.ndarray, starts: list[int],
                              window: int, max_lag: int) -> None:
    """:func:`window_correlations` of ``starts`` into ``out``, on NumPy arrays, one thread.

    One zero-padded buffer of ``K`` rows serves the three transforms of a window, in turn:
    reference blocks with the samples that follow them, the same cut to the block, estimate
    blocks with the following samples."""
    k, length = refs.shape
    fft = max(_CORRELATION_FFT, 1 << (2 * max_lag - 1).bit_length())
    blocks = -(-window // (fft - max_lag + 1))
    block = -(-window // blocks)
    span = block + max_lag - 1
    bins = fft // 2 + 1
    # Buffers reused across windows (NumPy's FFTs write into them): they stay in cache, where
    # new arrays per window were cold (1.25x slower in all); the padding past `span` stays zero.
    padded = np.zeros((k, blocks, fft))
    ref_spec, blk_conj, est_spec = (np.empty((k, blocks, bins), dtype=np.complex128) for _ in range(3))
    cross = np.empty((2 * k, k, bins), dtype=np.complex128)
    lags = np.empty((2 * k, k, fft))
    for w, s in enumerate(starts):
        hi = min(length, s + window)
        _frame_blocks(padded, refs, s, hi, block, span)
        np.fft.rfft(padded, out=ref_spec)   # (K, blocks, F): block + following samples
        padded[..., block:span] = 0
        np.fft.rfft(padded, out=blk_conj)   # the block alone
        np.conjugate(blk_conj, out=blk_conj)
        _frame_blocks(padded, ests, s, hi, block, span)
        np.fft.rfft(padded, out=est_spec)
        for f in range(0, bins, _FREQUENCY_TILE):
            tile = slice(f, f + _FREQUENCY_TILE)
            conj_tile = np.ascontiguousarray(blk_conj[..., tile].transpose(2, 1, 0))  # (F, blocks, K)
            for rows, spec in ((slice(0, k), ref_spec), (slice(k, 2 * k), est_spec)):
                cross[rows, :, tile] = (np.ascontiguousarray(spec[..., tile].transpose(2, 0, 1))
                                        @ conj_tile).transpose(1, 2, 0)
        np.fft.irfft(cross, n=fft, out=lags)
        out[w] = lags[..., :max_lag]


def _frame_blocks(out: np.ndarray, signal: np.ndarray, start: int, stop: int, block: int, span: int) -> None:
    """``out[c, b, :span] = signal[c, start + b block : ... + span]``, zero from ``stop`` on (the
    window's end): overlapping blocks copied straight from the signal, no intermediate copy."""
    blocks = out.shape[1]
    inside = max(0, min(blocks, (stop - start - span) // block + 1))  # blocks that end inside
    if inside:
        row, step = signal.strides
        view = np.lib.stride_tricks.as_strided(signal[:, start:], (signal.shape[0], inside, span),
                                               (row, block * step, step), writeable=False)
        out[:, :inside, :span] = view
    for b in range(inside, blocks):
        lo = start + b * block
        size = max(0, min(stop, lo + span) - lo)
        out[:, b, :size] = signal[:, lo:lo + size]
        out[:, b, size:span] = 0


def boundary_correlations(references: torch.Tensor, estimates: torch.Tensor, ends: list[int],
                          max_lag: int) -> torch.Tensor:
    """What windows cut at ``ends`` miss of the track's lag correlations, ``(2 K, K, max_lag)``.

    ``sum_e sum_{E - m <= u < E} x_sig[u + m] * references[k, u]`` (rows ``x`` as in
    :func:`window_correlations`): the pairs straddling a cut, from the ``max_lag - 1``
    samples on either side of each cut (small FFTs, summed over cuts).
    """
    k = references.shape[0]
    span = max_lag - 1
    fft = 1 << (2 * max_lag).bit_length()
    cross = torch.zeros(2 * k, k, fft // 2 + 1, dtype=torch.complex128, device=references.device)
    for e in ends:
        after = torch.fft.rfft(_padded_slice([references, estimates], e, e + span), n=fft)
        before = torch.fft.rfft(_padded_slice([references], e - span, e), n=fft)
        cross.addcmul_(after[:, None], before[None].conj())
    corr = torch.fft.irfft(cross, n=fft)
    # Lag m pairs before[i] with after[i + m - span]: circular lag (m - span) mod fft.
    return corr[..., (torch.arange(max_lag) - span) % fft]


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


def track_correlations(references: torch.Tensor, estimates: torch.Tensor, starts: list[int],
                       window: int, max_lag: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lag correlations over the whole track ``(2 K, K, max_lag)`` and, when they come for
    free, in each frame ``(frames, 2 K, K, max_lag)`` (see :func:`window_correlations`).

    The track is cut into consecutive windows; their correlations plus the pairs straddling
    each cut give the whole track's. When the frames are those windows (hop = window, the
    usual case) and their correlations fit in ``_KEPT_FRAMES_BYTES``, they are kept, so the
    track is transformed once; otherwise the frames are ``None`` (to compute by chunks).
    """
    k, length = references.shape
    segment = max(window, max_lag)  # a pair of samples then straddles at most one cut
    segments = list(range(0, length, segment))
    track = boundary_correlations(references, estimates, segments[1:], max_lag)
    frame_bytes = 2 * k * k * max_lag * 8
    keep = (segment == window and starts == segments[:len(starts)]
            and len(starts) * frame_bytes <= _KEPT_FRAMES_BYTES)
    # Kept windows are written in place (no copy of a chunk's correlations, no second buffer).
    kept = np.empty((len(segments), 2 * k, k, max_lag)) if keep else None
    for first in range(0, len(segments), _WINDOWS_PER_CHUNK):
        part = segments[first:first + _WINDOWS_PER_CHUNK]
        chunk = window_correlations(references, estimates, part, segment, max_lag,
                                    out=None if kept is None else kept[first:first + len(part)])
        track += chunk.sum(0)
    frames = None if kept is None else torch.from_numpy(kept[:len(starts)]).to(track.device)
    return track, frames


def projection_filters(correlations: torch.Tensor, channels: int, *,
                       method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares distortion filters over the whole track (float64) from its lag
    correlations ``(2 K, K, L)`` (:func:`track_correlations`), ``K = sources x channels``.

    Returns ``(all_filters (K, K, L), own_filters (K, K, L))``:
    ``all_filters[k, o]`` filters reference channel ``k`` into estimate channel ``o`` for the
    projection onto every source; ``own_filters`` is the same for the projection of each
    estimate onto its own source only (zero across sources).

    The systems are museval's: the Gram matrix plus ``eps I`` (``eps`` the float64 machine
    epsilon, absolute), solved by :func:`stemsep.evaluation.solver.solve_system` (block Levinson
    where that is as accurate as an LU, else museval's dense LU; ``method`` as there).
    """
    return _filters(correlations, channels, method)[:2]


def _filters(correlations: torch.Tensor, channels: int, method: str, jitter: float = 0.0,
             base: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, list[Solved]]:
    """:func:`projection_filters` and the solver's reports (all-sources system, own systems).

    With ``base`` (an earlier call's result), only the systems that call kept as rounding draws
    are solved again, the others reused: ``method="levinson"`` by Levinson on the system perturbed
    by ``jitter`` (the probe), ``method="defined"`` as museval solves them (the dense LU: a draw's
    answer is not defined)."""
    k = correlations.shape[1]
    sources = k // channels
    gram = correlations[:k].permute(2, 0, 1).contiguous()  # Q_m[k, k'] = sum_u r_k(u + m) r_k'(u)
    rhs = correlations[k:].permute(2, 1, 0).contiguous()   # y_m[k, o] = sum_u e_o(u + m) r_k(u)
    # Own-source systems: source j's channels only, all sources in one batched recursion.
    per_source = [slice(j * channels, (j + 1) * channels) for j in range(sources)]
    gram_own = torch.stack([gram[:, c, c] for c in per_source])   # (S, L, C, C)
    rhs_own = torch.stack([rhs[:, c, c] for c in per_source])     # (S, L, C, C)
    reports = []
    for i, (g, r) in enumerate(((gram, rhs), (gram_own, rhs_own))):
        if base is None:
            reports.append(solve_system(g, r, method=method))
        else:
            reports.append(_redrawn(base[2][i], g, r, method, jitter))
    all_filters = reports[0].x.permute(1, 2, 0)  # (K, K, L)
    own_filters = torch.zeros_like(all_filters)
    for j, c in enumerate(per_source):
        own_filters[c, c] = reports[1].x[j].permute(1, 2, 0)
    return all_filters, own_filters, reports


def _redrawn(before: Solved, gram: torch.Tensor, rhs: torch.Tensor, method: str, jitter: float) -> Solved:
    """``before`` with its rounding draws solved again (see :func:`_filters`)."""
    drawn = before.drawn.reshape(-1)
    if not bool(drawn.any()):
        return before
    if method == "levinson":  # the whole batch, so the probe's perturbation does not depend on which drew
        again = solve_system(gram, rhs, method="levinson", jitter=jitter).x.reshape(-1, *rhs.shape[-3:])[drawn]
    elif method == "defined":
        again = solve_system(gram.reshape(-1, *gram.shape[-3:])[drawn], rhs.reshape(-1, *rhs.shape[-3:])[drawn],
                             method="lu").x
    else:
        raise ValueError(f"draws are solved again by levinson or defined, not {method!r}")
    x = before.x.reshape(-1, *rhs.shape[-3:]).clone()
    x[drawn] = again
    return Solved(x.reshape(before.x.shape), before.dense | before.drawn, before.drawn & (method == "levinson"))


def _filter_pair_weights(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Weights ``(O, K, K, L)`` such that ``<a_o * r, b_o * r> = sum R[k, k', m] w[o, k, k', m]``.

    ``first``/``second``: filters ``(K, O, L)`` (``a``, ``b``), ``a_o * r = sum_k a[k, o] * r_k``
    (full convolutions of the window's references ``r``) and ``R[k, k', m] = sum_u r_k(u + m)
    r_k'(u)``, the window's lag correlations (``m >= 0``; negative lags are the transposes).
    """
    taps = first.shape[-1]
    fft = 1 << (2 * taps).bit_length()
    a = torch.fft.rfft(first.transpose(0, 1), n=fft)   # (O, K, F)
    b = torch.fft.rfft(second.transpose(0, 1), n=fft)
    # x_ab[o, k, k', m] = sum_n a[k, o, n] b[k', o, n + m]
    x_ab = torch.fft.irfft(a.conj()[:, :, None] * b[:, None], n=fft)[..., :taps]
    x_ba = torch.fft.irfft(b.conj()[:, :, None] * a[:, None], n=fft)[..., :taps]
    weights = x_ab + x_ba
    weights[..., 0] = x_ab[..., 0]
    return weights


def framewise_projection_metrics(frame_correlations: torch.Tensor, est_energy: torch.Tensor,
                                 all_filters: torch.Tensor, own_filters: torch.Tensor,
                                 channels: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """ISR, SIR, SAR per ``(source, frame)`` from the whole-track filters, and which frames
    they are not accurate for, ``(frames,)`` bool (to compute by :func:`spectral_projection_metrics`).

    museval filters each window's references (full convolutions, ``W + L - 1`` samples) and
    sums energies. Every energy involved is a quadratic form in the window's references and
    estimate: expanded, they are weighted sums of the window's lag correlations
    ``frame_correlations (frames, 2 K, K, L)`` (:func:`window_correlations`), the weights
    being correlations of the filters, plus ``est_energy (frames, K)`` (``||e_o||^2``).

    The expansion cancels: ``||P e - P_j e||^2 = ||P e||^2 - 2 <P e, P_j e> + ||P_j e||^2``.
    With filters of moderate size that costs nothing, but where the references are nearly
    linearly dependent (band-limited, tonal) the filters can be large and the terms dwarf
    their difference. Each term's rounding is bounded (the correlations' rounding, relative to
    the channel energies, times the absolute filter weights); a frame where the bound exceeds
    :data:`_ENERGY_TOLERANCE` of some numerator or denominator is flagged.
    """
    frames, _, k, taps = frame_correlations.shape
    refs_corr = frame_correlations[:, :k]          # R[k, k', m]
    est_corr = frame_correlations[:, k:]           # C[o, k, m] = sum_u e_o(u + m) r_k(u)
    weights = torch.cat([_filter_pair_weights(all_filters, all_filters),   # ||P e||^2
                         _filter_pair_weights(own_filters, own_filters),   # ||P_j e||^2
                         _filter_pair_weights(all_filters, own_filters)])  # <P e, P_j e>
    quad = refs_corr.reshape(frames, -1) @ weights.reshape(3 * k, -1).T   # (frames, 3 K)
    yy, zz, yz = quad.unflatten(-1, (3, k)).unbind(-2)
    # Bilinear terms with the unfiltered signals: <s_o, P_j e_o> and <e_o, P e_o>.
    sz = torch.einsum("fokm,kom->fo", refs_corr, own_filters)
    ey = torch.einsum("fokm,kom->fo", est_corr, all_filters)
    ss = refs_corr.diagonal(dim1=1, dim2=2)[:, 0]  # R[o, o, 0]

    # Rounding bounds: a correlation R[k, k', m] is off by at most ~eps sqrt(E_k E_k').
    ref_rms = ss.clamp(min=0).sqrt()                                        # (frames, K)
    est_rms = est_energy.clamp(min=0).sqrt()
    quad_err = torch.einsum("fk,okl,fl->fo", ref_rms, weights.abs().sum(-1), ref_rms)
    yy_err, zz_err, yz_err = quad_err.unflatten(-1, (3, k)).unbind(-2)
    sz_err = ref_rms * (ref_rms @ own_filters.abs().sum(-1))
    ey_err = est_rms * (ref_rms @ all_filters.abs().sum(-1))
    terms = {"isr": (ss, zz - 2 * sz + ss, ss, zz_err + 2 * sz_err + ss),
             "sir": (zz, yy - 2 * yz + zz, zz_err, yy_err + 2 * yz_err + zz_err),
             "sar": (yy, est_energy - 2 * ey + yy, yy_err, est_energy + 2 * ey_err + yy_err)}
    out = {}
    inexact = torch.zeros(frames, dtype=torch.bool, device=frame_correlations.device)
    for name, (num, den, num_err, den_err) in terms.items():
        num, den = _per_source(num, channels), _per_source(den, channels)
        num_err, den_err = (_ROUNDING * _per_source(err, channels) for err in (num_err, den_err))
        inexact |= ((num_err > _ENERGY_TOLERANCE * num) | (den_err > _ENERGY_TOLERANCE * den)).any(0)
        # Differences of energies can round below zero where the true value is ~0.
        out[name] = _safe_db(num, den.clamp(min=0))
    return out, inexact


def spectral_projection_metrics(references: torch.Tensor, estimates: torch.Tensor, starts: list[int],
                                window: int, all_filters: torch.Tensor, own_filters: torch.Tensor,
                                channels: int) -> dict[str, torch.Tensor]:
    """ISR, SIR, SAR per ``(source, frame)`` for the frames at ``starts``, as museval forms them:
    each frame's references (``(K, T)`` rows, zero outside the frame) filtered in full, then
    the energies of the differences, here by Parseval from one FFT of each frame's signals
    (no cancelling expansion: accurate whatever the size of the filters)."""
    k, taps = all_filters.shape[0], all_filters.shape[-1]
    sources = k // channels
    size = scipy.fft.next_fast_len(window + taps - 1, real=True)
    bins = size // 2 + 1
    weight = torch.full((bins,), 2.0 / size, dtype=torch.float64, device=references.device)
    weight[0] = 1.0 / size
    if size % 2 == 0:
        weight[-1] = 1.0 / size
    all_spec = torch.fft.rfft(all_filters.double(), n=size)  # (K, O, B)
    # Own filters are block diagonal: (S, C in, C out, B).
    own_spec = torch.stack([torch.fft.rfft(own_filters[c, c].double(), n=size)
                            for c in (slice(j * channels, (j + 1) * channels) for j in range(sources))])

    def energy(spectrum: torch.Tensor) -> torch.Tensor:
        return (spectrum.real.square() + spectrum.imag.square()) @ weight

    out: dict[str, list[torch.Tensor]] = {"isr": [], "sir": [], "sar": []}
    per_chunk = max(1, _SPECTRAL_BYTES // (4 * k * bins * 16))
    for first in range(0, len(starts), per_chunk):
        chunk = starts[first:first + per_chunk]
        refs = torch.stack([references[:, s:s + window] for s in chunk]).double()   # (F, K, W)
        ref_spec = torch.fft.rfft(refs, n=size)                                    # (F, K, B)
        all_proj = all_spec[0] * ref_spec[:, 0, None]                              # P e (F, O, B)
        for i in range(1, k):
            all_proj.addcmul_(all_spec[i], ref_spec[:, i, None])
        by_source = ref_spec.unflatten(1, (sources, channels))                     # (F, S, C, B)
        own_proj = own_spec[:, 0] * by_source[:, :, 0, None]                       # P_j e (F, S, C, B)
        for c in range(1, channels):
            own_proj.addcmul_(own_spec[:, c], by_source[:, :, c, None])
        own_proj = own_proj.flatten(1, 2)
        ref_energy = torch.linalg.vecdot(refs, refs)
        del refs
        isr = (ref_energy, energy(own_proj - ref_spec))
        del ref_spec
        ests = torch.stack([estimates[:, s:s + window] for s in chunk]).double()
        values = {"isr": isr, "sir": (energy(own_proj), energy(all_proj - own_proj)),
                  "sar": (energy(all_proj), energy(torch.fft.rfft(ests, n=size) - all_proj))}
        for name, (num, den) in values.items():
            out[name].append(_safe_db(_per_source(num, channels), _per_source(den, channels)))
    return {name: torch.cat(parts, dim=-1) for name, parts in out.items()}


def _frame_correlation_chunks(references: torch.Tensor, estimates: torch.Tensor, starts: list[int],
                              window: int, max_lag: int, kept: torch.Tensor | None):
    """``(first frame, correlations)`` pairs: the kept ones, or computed a chunk at a time."""
    if kept is not None:
        yield 0, kept
        return
    for first in range(0, len(starts), _WINDOWS_PER_CHUNK):
        yield first, window_correlations(references, estimates, starts[first:first + _WINDOWS_PER_CHUNK],
                                         window, max_lag)


def _projection_metrics(refs: torch.Tensor, ests: torch.Tensor, starts: list[int], win: int, filter_length: int,
                        per_frame: torch.Tensor | None, est_energy: torch.Tensor, silent: torch.Tensor,
                        filters: tuple, channels: int) -> dict[str, torch.Tensor]:
    """ISR, SIR, SAR ``(sources, frames)`` with the filters of :func:`_filters`: by the expansion,
    and, in frames where it is not accurate enough, as museval, from the filtered signals."""
    all_filters, own_filters = filters[:2]
    parts = [framewise_projection_metrics(corr, est_energy[i:i + len(corr)], all_filters, own_filters, channels)
             for i, corr in _frame_correlation_chunks(refs, ests, starts, win, filter_length, per_frame)]
    values = {name: torch.cat([part[0][name] for part in parts], dim=-1) for name in ("isr", "sir", "sar")}
    redo = (torch.cat([part[1] for part in parts]) & ~silent).nonzero().flatten().tolist()
    if redo:
        exact = spectral_projection_metrics(refs, ests, [starts[i] for i in redo], win, all_filters,
                                            own_filters, channels)
        for name in values:
            values[name][:, redo] = exact[name]
    return values


def _median_gap(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], silent: torch.Tensor) -> float:
    """The largest difference (dB) of the per-source medians over non-silent frames of two sets of metrics."""
    gap = 0.0
    for name in first:
        a, b = (values[name].masked_fill(silent[None, :], math.nan).nanmedian(dim=-1).values
                for values in (first, second))
        same = (a == b) | (a.isnan() & b.isnan())
        if not bool(same.all()):
            gap = max(gap, float((a - b).abs()[~same].nan_to_num(nan=math.inf).max()))
    return gap


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
    channels = references.shape[1]
    ref_energy, err_energy, est_energy, silent = frame_statistics(estimates, references, starts, win)
    # SDR: in BSS-eval v4's image mode it reduces to framewise SNR (no filters).
    out = {"sdr": _safe_db(_per_source(ref_energy, channels), _per_source(err_energy, channels))}
    if set(metrics) & {"isr", "sir", "sar"}:
        refs = references.reshape(-1, length)
        ests = estimates.reshape(-1, length)
        track, per_frame = track_correlations(refs, ests, starts, win, filter_length)
        filters = _filters(track, channels, "auto")
        values = _projection_metrics(refs, ests, starts, win, filter_length, per_frame, est_energy, silent,
                                     filters, channels)
        if any(bool(report.drawn.any()) for report in filters[2]):
            # Filters kept as rounding draws (ill-conditioned systems): the metrics must not depend
            # on that rounding. Those systems solved again with every entry perturbed by JITTER; if
            # a median moves by more than DRAW_TOLERANCE, as museval solves them (dense LU).
            probe = _filters(track, channels, "levinson", jitter=JITTER, base=filters)
            moved = _projection_metrics(refs, ests, starts, win, filter_length, per_frame, est_energy, silent,
                                        probe, channels)
            if _median_gap(values, moved, silent) > DRAW_TOLERANCE:
                values = _projection_metrics(refs, ests, starts, win, filter_length, per_frame, est_energy,
                                             silent, _filters(track, channels, "defined", base=filters), channels)
        out.update({name: values[name] for name in ("isr", "sir", "sar") if name in metrics})
    for name in out:
        out[name] = out[name].masked_fill(silent[None, :], math.nan)
    return {name: out[name] for name in METRICS if name in metrics}
