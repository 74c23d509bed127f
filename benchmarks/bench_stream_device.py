"""Streaming on a device (GPU or CPU): per-push compute and real-time factor of ``StreamingSeparator``.

benchmarks/bench_stream.py measures live streaming on one CPU thread in depth; this one runs the
same engine on ``--device`` (benchmarks/device_check.sh calls it on the GPU): a random stereo mix of
``--seconds`` is pushed in blocks of each ``--blocks`` size, every push timed with the device
synchronised (a stem block is only useful once computed). Networks, from configs/model with random
weights (the time does not depend on their values): HS-TasNet streamed causally (one
``stream_step`` per hop) and HT Demucs windowed (chunks of ``--window`` seconds, overlap 0.25).
Prints the latency, p50 / p99 / max ms per push, p99 as a fraction of the block's duration (at most
1 keeps up with a live input) and the real-time factor (compute / audio).

    python benchmarks/bench_stream_device.py --device cuda --seconds 20
    python benchmarks/bench_stream_device.py --configs hstasnet_tiny htdemucs_small --seconds 2 --blocks 4096
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from _timing import bench_device, timed
from bench_train_step import build

from stemsep.contract import stream_step_of
from stemsep.inference import StreamingSeparator, optimize_for_cpu


def separator_for(net: torch.nn.Module, window: float) -> StreamingSeparator:
    """Step by step where the network declares the causal contract, else windowed chunks of ``window`` s."""
    if stream_step_of(net) is not None:
        return StreamingSeparator(net, causal=True)
    return StreamingSeparator(net, segment=window, overlap=0.25)


def push_times(separator: StreamingSeparator, mix: torch.Tensor, block: int, device: torch.device) -> list[float]:
    """Seconds of each push of ``mix`` in ``block``-sample blocks (after one warm-up pass, reset)."""
    blocks = list(mix.split(block, -1))
    for chunk in blocks[: max(1, len(blocks) // 4)]:  # allocator, kernel plans
        separator.push(chunk)
    separator.reset()
    return [timed(lambda chunk=chunk: separator.push(chunk), device) for chunk in blocks]


def bench(name: str, args, device: torch.device) -> list[dict]:
    net = build(name, args.segment).eval().to(device)
    if device.type == "cpu":
        optimize_for_cpu(net)  # as stemsep loads a network for CPU inference
    separator = separator_for(net, args.window)
    torch.manual_seed(1)
    mix = 0.3 * torch.randn(net.audio_channels, int(args.seconds * net.samplerate), device=device)
    rows = []
    for block in args.blocks:
        times = torch.tensor(push_times(separator, mix, block, device), dtype=torch.float64)
        p50, p99, worst = (1e3 * torch.quantile(times, q).item() for q in (0.5, 0.99, 1.0))
        duration = 1e3 * block / net.samplerate
        row = {"config": name, "latency_samples": separator.latency,
               "latency_ms": 1e3 * separator.latency / net.samplerate, "block": block, "p50_ms": p50,
               "p99_ms": p99, "max_ms": worst, "p99_over_block": p99 / duration,
               "rtf": times.sum().item() / (mix.shape[-1] / net.samplerate)}
        rows.append(row)
        print(f"  {name:16s} latency {row['latency_ms']:7.1f} ms  block {block:5d}: p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
              f"  max {worst:7.2f} ms  p99/block {row['p99_over_block']:5.2f}  RTF {row['rtf']:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["hstasnet_small", "htdemucs_small"],
                        help="configs/model names (default hstasnet_small htdemucs_small)")
    parser.add_argument("--segment", type=float, default=2.0, help="the networks' training segment (s)")
    parser.add_argument("--window", type=float, default=1.0, help="windowed chunk length (s; default 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the streamed mix")
    parser.add_argument("--blocks", type=int, nargs="+", default=[512, 4096], help="samples per push")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    device, where = bench_device(args.device, args.threads)
    print(f"streaming on {where}: {args.seconds:g} s random stereo mix, fp32", flush=True)
    rows = []
    with torch.no_grad():
        for name in args.configs:
            rows += bench(name, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
