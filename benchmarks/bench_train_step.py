"""Training step per model family, from its config: time (median) and peak memory.

Builds each ``configs/model/<name>.yaml`` (its ``segment`` set to ``--segment`` so that every family
sees the same input), then times the training step stemsep's benchmarks share
(:func:`_timing.l1_train_step`: train mode, forward, L1 loss on the waveforms, backward; bf16 autocast
with ``--dtype bf16``) and measures the peak memory of one more step: on CUDA
``max_memory_allocated`` above what the network and its gradients already hold; on CPU the growth
of the resident set's high-water mark (reset per family; Linux). The other benchmarks compare
ours to reference packages; this one covers every family, HS-TasNet included, in one run
(benchmarks/device_check.sh calls it on the GPU).

    python benchmarks/bench_train_step.py --device cuda --dtype bf16 --segment 6 --batch 4 --reps 5
    python benchmarks/bench_train_step.py --configs htdemucs_small hstasnet_small --segment 1 --reps 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml
from _timing import alternating_medians, bench_device, l1_train_step
from bench_models import _proc_status_kib, _reset_peak_rss

from stemsep.io.checkpoint import build_from_config
from stemsep.training.sparse_dropout import apply_sparse_dropout

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
FAMILIES = ["htdemucs", "hdemucs", "bs_roformer", "mel_band_roformer", "scnet", "hstasnet"]


def build(name: str, segment: float) -> torch.nn.Module:
    """The network of ``configs/model/<name>.yaml`` with its training segment set to ``segment``."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    config["init_args"]["segment"] = segment
    torch.manual_seed(0)
    return build_from_config(config, origin=f"configs/model/{name}.yaml")


def peak_mib(step, device: torch.device) -> float:
    """Peak memory (MiB) ``step()`` adds to what is allocated (CUDA) or resident (CPU) before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    base = _proc_status_kib("VmRSS")
    if not _reset_peak_rss():
        return float("nan")  # no per-step high-water mark on this system
    step()
    return max(0.0, (_proc_status_kib("VmHWM") - base) / 1024)


def bench(name: str, args, device: torch.device) -> dict:
    net = build(name, args.segment).to(device)
    if device.type == "cpu":
        apply_sparse_dropout(net)  # what stemsep fit trains with on CPU (SeparationModule.on_fit_start)
    length = int(args.segment * net.samplerate)
    torch.manual_seed(1)
    mix = torch.randn(args.batch, net.audio_channels, length, device=device)
    target = torch.randn(args.batch, len(net.sources), net.audio_channels, length, device=device)
    seconds = alternating_medians({name: net}, l1_train_step, reps=args.reps, mix=mix, target=target, device=device,
                                  dtype=args.dtype)[name]
    peak = peak_mib(lambda: l1_train_step(net, mix=mix, target=target, device=device, dtype=args.dtype), device)
    return {"config": name, "parameters": sum(p.numel() for p in net.parameters()), "train_step_s": seconds,
            "audio_s_per_s": args.batch * args.segment / seconds, "peak_mib": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast")
    parser.add_argument("--configs", nargs="+", default=FAMILIES, help="configs/model names (default: one per family)")
    parser.add_argument("--segment", type=float, default=4.0, help="input seconds (default 4)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    device, where = bench_device(args.device, args.threads)
    print(f"training step per family: {where}, {args.dtype}, batch {args.batch} x {args.segment:g} s, "
          f"median of {args.reps}", flush=True)
    rows, failed = [], []
    for name in args.configs:
        try:
            row = bench(name, args, device)
        except Exception as err:  # one family failing must not hide the others' figures
            failed.append(name)
            print(f"  {name:24s} FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                  flush=True)
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(f"  {name:24s} ({row['parameters'] / 1e6:6.2f} M) train step {row['train_step_s']:8.3f} s "
              f"= {row['audio_s_per_s']:7.2f} audio-s/s   peak {row['peak_mib']:9.1f} MiB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
