"""BSS-eval speed: stemsep.evaluation.bss_eval (torch) vs museval, same inputs, same run.

Both get the same number of threads (``--threads``, default: every core this process may use,
as a user's run would): museval's NumPy/BLAS as many, stemsep shares its windows among them
(``torch.set_num_threads``). ``--threads 1`` compares the algorithms on one core. Runs
alternate (ours, museval, ours, ...) so that a change of machine load hits both; the ratio is
best museval time over best ours time (wall clock). The CPU time of each (this process's,
all its threads) and its ratio are printed too: with one thread it is not inflated by other
processes sharing the cores, so on a loaded machine it is the one to compare. Prints the
largest difference between the two results per metric (dB), where museval's time goes (its
dense solves, its correlations, its per-window filtering), and the load average before and
after each length.

    python benchmarks/bench_eval.py --seconds 30 240 --repeats 3
    python benchmarks/bench_eval.py --seconds 30 240 --repeats 3 --threads 1
    python benchmarks/bench_eval.py --seconds 30 240 --signal music --spread
    python benchmarks/bench_eval.py --seconds 30 240 --signal music --threads 1

``--signal music``: music as people evaluate it (``tests/helpers/bss_signals.aac_music``): the
synthetic corpus' rendered drums, bass, other and vocals (tonal, band-limited, partly silent), each
channel with its own short room, through AAC (256 kbit/s, FFmpeg's 16 kHz cut-off, decoded to
float32) as MUSDB18's stems; estimates = 0.9 of the source + a copy 3 samples late + 0.1 of
another, through AAC at 96 kbit/s (codec artifacts). ``--spread`` also runs museval on the inputs
scaled by 3 and prints, per metric, the largest difference of per-source medians against the bound
``max(0.01 dB, 2 x museval's own spread)``.

``--signal broadband`` (default): white and integrated noise, a well-conditioned Gram matrix
(block Levinson). ``--signal bandlimited``: 1/f noise cut at 16 kHz and stored as 16-bit PCM, as
decoded MP3/AAC.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers.bss_signals


@contextlib.contextmanager
def _timed(module, names: list[str], totals: dict[str, float]):
    """Wrap ``module.<name>`` so that its calls add their time to ``totals[name]``."""
    originals = {name: getattr(module, name) for name in names}

    def wrap(name, func):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return timed

    for name, func in originals.items():
        setattr(module, name, wrap(name, func))
    try:
        yield
    finally:
        for name, func in originals.items():
            setattr(module, name, func)


def _signals(seconds: float, sources: int, samplerate: int, kind: str = "broadband"):
    import numpy as np

    rng = np.random.default_rng(0)
    length = int(seconds * samplerate)
    if kind == "music":
        from helpers.bss_signals import aac_music

        refs, ests = aac_music(seconds)
        return refs.transpose(0, 2, 1)[:sources].copy(), ests.transpose(0, 2, 1)[:sources].copy()
    if kind == "bandlimited":
        from scipy.signal import butter, sosfiltfilt

        spectrum = np.fft.rfft(rng.standard_normal((sources, 2, length)), axis=-1)
        freqs = np.fft.rfftfreq(length, 1 / samplerate)
        freqs[0] = freqs[1]
        pink = np.fft.irfft(spectrum / np.sqrt(freqs / 100), n=length, axis=-1)
        cut = sosfiltfilt(butter(8, 16000, fs=samplerate, output="sos"), pink / pink.std(), axis=-1)
        refs = (np.round(cut * 0.2 * 32768) / 32768).transpose(0, 2, 1).copy()
        ests = 0.9 * refs + 0.15 * refs[np.roll(np.arange(sources), 1)] + 0.01 * rng.standard_normal(refs.shape)
        return refs, ests
    # Correlated "music-like" references: filtered noise of different colours, stereo.
    refs = rng.standard_normal((sources, length, 2))
    for j in range(sources):
        refs[j] = np.cumsum(refs[j], axis=0) * 0.02 if j % 2 else refs[j] * 0.3
        refs[j] -= refs[j].mean(axis=0)
    ests = refs + 0.2 * refs[np.roll(np.arange(sources), 1)] + 0.1 * rng.standard_normal(refs.shape)
    return refs, ests


def bench_length(args, seconds: float) -> float:
    import museval
    import numpy as np
    import torch

    from stemsep.evaluation.bss_eval import bss_eval

    refs, ests = _signals(seconds, args.sources, args.samplerate, args.signal)
    ref_t = torch.from_numpy(refs).permute(0, 2, 1).contiguous()
    est_t = torch.from_numpy(ests).permute(0, 2, 1).contiguous()
    load_before = os.getloadavg()[0]
    ours_times, museval_times, sdr_times = [], [], []
    ours_cpu, museval_cpu = [], []  # process CPU time: what other processes' load does not inflate
    split: dict[str, float] = {}
    theirs = ours = None
    for rep in range(max(args.repeats, args.museval_repeats)):
        if rep < args.repeats:
            start, cpu = time.perf_counter(), time.process_time()
            ours = bss_eval(est_t, ref_t, samplerate=args.samplerate)
            ours_times.append(time.perf_counter() - start)
            ours_cpu.append(time.process_time() - cpu)
            if args.sdr_only:
                start = time.perf_counter()
                bss_eval(est_t, ref_t, samplerate=args.samplerate, metrics=("sdr",))
                sdr_times.append(time.perf_counter() - start)
        if rep < args.museval_repeats:
            totals: dict[str, float] = {}
            with _timed(np.linalg, ["solve"], totals), \
                    _timed(museval.metrics, ["_compute_reference_correlations", "fftconvolve"], totals):
                start, cpu = time.perf_counter(), time.process_time()
                theirs = museval.metrics.bss_eval(refs, ests, compute_permutation=False,
                                                  window=args.samplerate, hop=args.samplerate,
                                                  framewise_filters=False, bsseval_sources_version=False)
                museval_times.append(time.perf_counter() - start)
                museval_cpu.append(time.process_time() - cpu)
            if not split or museval_times[-1] == min(museval_times):
                split = totals
    scaled = None
    if args.spread:
        scaled = museval.metrics.bss_eval(3 * refs, 3 * ests, compute_permutation=False, window=args.samplerate,
                                          hop=args.samplerate, framewise_filters=False, bsseval_sources_version=False)
    for i, name in enumerate(("sdr", "isr", "sir", "sar")):
        diff = np.nanmax(np.abs(theirs[i] - ours[name].numpy()))
        medians = np.nanmedian(theirs[i], axis=1)
        med = np.max(np.abs(medians - np.nanmedian(ours[name].numpy(), axis=1)))
        line = f"  {name}: max |ours - museval| = {diff:.2e} dB per frame, {med:.2e} dB on medians"
        if scaled is not None:
            bound = max(0.01, 2 * float(np.max(np.abs(np.nanmedian(scaled[i], axis=1) - medians))))
            line += f" (bound {bound:.2e}: {'within' if med <= bound else 'OUTSIDE'})"
        print(line)
    ratio = min(museval_times) / min(ours_times)
    museval_time = min(museval_times)
    other = museval_time - sum(split.values())
    print(f"  ours (all four metrics): {min(ours_times):.3f} s (runs: {', '.join(f'{t:.3f}' for t in ours_times)})")
    if sdr_times:
        print(f"  ours SDR only:           {min(sdr_times):.4f} s")
    print(f"  museval:                 {museval_time:.3f} s (runs: {', '.join(f'{t:.3f}' for t in museval_times)})")
    print(f"    of which dense solves {split.get('solve', 0):.2f} s, reference correlations "
          f"{split.get('_compute_reference_correlations', 0):.2f} s, per-window filtering (fftconvolve) "
          f"{split.get('fftconvolve', 0):.2f} s, rest {other:.2f} s")
    print(f"  load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"  CPU time (process): ours {min(ours_cpu):.3f} s, museval {min(museval_cpu):.3f} s, "
          f"ratio {min(museval_cpu) / min(ours_cpu):.1f}x")
    print(f"  speed-up: {ratio:.1f}x")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0], help="track length(s)")
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--samplerate", type=int, default=44100)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument("--threads", type=int, default=cores,
                        help="threads for both (default: every core this process may use)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours (best counts)")
    parser.add_argument("--museval-repeats", type=int, default=1, help="runs of museval (best counts)")
    parser.add_argument("--sdr-only", action="store_true", help="also time the SDR-only path")
    parser.add_argument("--signal", choices=["broadband", "bandlimited", "music"], default="broadband",
                        help="test signal (bandlimited: 16 kHz cut, 16-bit PCM; music: rendered stems through "
                             "AAC, tonal and partly silent)")
    parser.add_argument("--spread", action="store_true",
                        help="also run museval on the inputs x3: compare medians with max(0.01 dB, 2 x its spread)")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from stemsep.evaluation.bss_eval import bss_eval

    refs = torch.randn(4, 2, args.samplerate * 2, dtype=torch.float64)
    bss_eval(refs + 0.1 * torch.randn_like(refs), refs, samplerate=args.samplerate)  # warm-up
    ratios = {}
    for seconds in args.seconds:
        print(f"track {seconds:g} s x {args.sources} stereo sources ({args.signal}), {args.threads} thread(s)")
        ratios[seconds] = bench_length(args, seconds)
    print("speed-up by length: " + ", ".join(f"{s:g} s: {r:.1f}x" for s, r in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
