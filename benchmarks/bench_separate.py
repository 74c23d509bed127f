"""Separation speed: stemsep (our model + batched apply_model) vs demucs (its model + apply_model).

Same weights (random, loaded into both), same settings (segment, overlap, shifts=0, no
split off). Prints both times, their ratio (ours / demucs: lower is better) and the largest
difference between the two outputs.

    python benchmarks/bench_separate.py --seconds 30                       # CPU
    python benchmarks/bench_separate.py --device cuda --seconds 300 --batch-size 16
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction

import torch

from stemsep.inference.separate import default_batch_size

SOURCES = ["drums", "bass", "other", "vocals"]
# The released htdemucs / hdemucs_mmi architectures (sizes as in demucs' pretrained models).
CONFIGS = {
    "htdemucs": dict(sources=SOURCES, channels=48, depth=4, nfft=4096, t_layers=5, bottom_channels=512,
                     segment=Fraction(39, 5)),
    "hdemucs": dict(sources=SOURCES, channels=48, depth=6, nfft=4096, segment=Fraction(44, 1)),
    # A few-second CPU dry run of this script (benchmarks/device_check.sh --dry-run); its times mean nothing.
    "htdemucs_tiny": dict(sources=SOURCES, channels=8, depth=4, nfft=2048, t_layers=1, segment=Fraction(1, 1)),
}


def _timed(fn, device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="htdemucs")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the (random) mix")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="our chunks per network call (default: 1 on CPU, where batching chunks is slower, 8 on GPU)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings for each")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.batch_size is None:
        args.batch_size = default_batch_size(device)
    from demucs.apply import apply_model as demucs_apply
    from demucs.hdemucs import HDemucs as DemucsHDemucs
    from demucs.htdemucs import HTDemucs as DemucsHTDemucs

    from stemsep.inference import apply_model, optimize_for_cpu
    from stemsep.models import HDemucs, HTDemucs

    theirs_cls, ours_cls = {"htdemucs": (DemucsHTDemucs, HTDemucs), "hdemucs": (DemucsHDemucs, HDemucs),
                            "htdemucs_tiny": (DemucsHTDemucs, HTDemucs)}[args.model]
    torch.manual_seed(0)
    theirs = theirs_cls(**CONFIGS[args.model]).eval().to(device)
    ours = ours_cls(**CONFIGS[args.model]).eval()
    ours.load_state_dict(theirs.state_dict())
    ours.to(device)
    if device.type == "cpu":  # what `stemsep separate` does after loading
        optimize_for_cpu(ours)
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    mix = torch.randn(1, 2, int(args.seconds * 44100), device=device) * 0.1

    warm = mix[..., :44100 * 9]
    with torch.inference_mode():
        demucs_apply(theirs, warm, shifts=0, overlap=args.overlap)
        apply_model(ours, warm, overlap=args.overlap, batch_size=args.batch_size)
        t_theirs = t_ours = float("inf")
        for _ in range(args.repeats):
            expected, elapsed = _timed(lambda: demucs_apply(theirs, mix, shifts=0, overlap=args.overlap), device)
            t_theirs = min(t_theirs, elapsed)
            got, elapsed = _timed(lambda: apply_model(ours, mix, overlap=args.overlap,
                                                      batch_size=args.batch_size), device)
            t_ours = min(t_ours, elapsed)
    diff = (got - expected).abs().max().item()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{args.model} ({params:.1f} M params), {args.seconds:g} s stereo mix, device {name}, "
          f"overlap {args.overlap}, shifts 0, our batch size {args.batch_size}")
    print(f"demucs apply_model: {t_theirs:.3f} s")
    print(f"stemsep apply_model: {t_ours:.3f} s")
    print(f"ratio ours/demucs: {t_ours / t_theirs:.3f}   max |difference|: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
