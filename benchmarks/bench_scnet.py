"""SCNet speed next to HT Demucs of the same size, in the same run.

There is no reference package to time SCNet against, so the figures are absolute (seconds of
audio per second of compute) beside HT Demucs networks of about the same parameter count:

* ``scnet`` (configs/model/scnet.yaml, 10,578,768 parameters) next to ``htdemucs_10m``, HT Demucs
  with 24 channels and its transformer at 256 (``channels=24, bottom_channels=256,
  dconv_mode=3``, 10,541,488 parameters; ours, not a published configuration);
* ``scnet_large`` (configs/model/scnet_large.yaml, 42,181,232) next to ``htdemucs``, the
  released HT Demucs (configs/model/htdemucs.yaml, 41,984,456).

Steps: forward (eval, no grad; on CPU with the inference rewrites `stemsep separate` applies,
which touch HT Demucs only) and training step (train mode, forward + L1 loss on the waveforms +
backward). Repetitions alternate between the networks of a pair so machine load hits both alike;
medians are reported, as seconds per call and seconds of audio per second (``batch x segment /
time``), with the ratio SCNet / HT Demucs (< 1: SCNet faster). The paper reports SCNet's CPU
inference time at 48 % of HT Demucs'.

Run (CPU; a few minutes on 2 busy cores)::

    /work/venv/bin/python benchmarks/bench_scnet.py --segment 4 --batch 1 --reps 3

GPU, bf16 autocast::

    python benchmarks/bench_scnet.py --device cuda --dtype bf16 --segment 11 --batch 4 --reps 10
"""

from __future__ import annotations

import argparse
import json

import torch
from _timing import alternating_medians, forward_step, l1_train_step

from stemsep import DEFAULT_SOURCES
from stemsep.inference.cpu import optimize_for_cpu, restore_plain
from stemsep.models import HTDemucs, SCNet
from stemsep.training.sparse_dropout import apply_sparse_dropout

SR = 44100
PAIRS = {"scnet": "htdemucs_10m", "scnet_large": "htdemucs"}


def build(name: str, segment: float) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "scnet":
        return SCNet(DEFAULT_SOURCES, segment=segment)
    if name == "scnet_large":
        return SCNet(DEFAULT_SOURCES, dims=[4, 64, 128, 256], segment=segment)
    if name == "htdemucs_10m":
        return HTDemucs(DEFAULT_SOURCES, channels=24, bottom_channels=256, dconv_mode=3, segment=segment)
    if name == "htdemucs":
        return HTDemucs(DEFAULT_SOURCES, bottom_channels=512, dconv_mode=3, t_dropout=0.02, segment=segment)
    raise ValueError(name)


def bench(args, device: torch.device) -> list[dict]:
    rows = []
    length = int(args.segment * SR)
    audio = args.batch * args.segment
    for scnet_name in args.configs:
        names = (scnet_name, PAIRS[scnet_name])
        models = {name: build(name, args.segment).to(device) for name in names}
        params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
        torch.manual_seed(1)
        mix = torch.randn(args.batch, 2, length, device=device)
        target = torch.randn(args.batch, len(DEFAULT_SOURCES), 2, length, device=device)
        for step_name, step in (("forward", forward_step), ("train step", l1_train_step)):
            for model in models.values():
                (optimize_for_cpu if step_name == "forward" and device.type == "cpu" else restore_plain)(model)
                if step_name == "train step" and device.type == "cpu":
                    apply_sparse_dropout(model)  # as stemsep fit trains on CPU (SeparationModule.on_fit_start)
            med = alternating_medians(models, step, reps=args.reps, mix=mix, target=target, device=device,
                                      dtype=args.dtype)
            row = {"step": step_name, "segment_s": args.segment, "batch": args.batch,
                   **{f"{name}_s": med[name] for name in names},
                   **{f"{name}_audio_s_per_s": audio / med[name] for name in names},
                   **{f"{name}_params": params[name] for name in names},
                   "ratio": med[names[0]] / med[names[1]]}
            rows.append(row)
            print(f"  {step_name:10s} {names[0]:11s} ({params[names[0]] / 1e6:5.2f} M) {med[names[0]]:7.3f} s "
                  f"= {audio / med[names[0]]:6.2f} audio-s/s   {names[1]:12s} ({params[names[1]] / 1e6:5.2f} M) "
                  f"{med[names[1]]:7.3f} s = {audio / med[names[1]]:6.2f} audio-s/s   "
                  f"SCNet/HTDemucs {row['ratio']:.3f}", flush=True)
        del models
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--segment", type=float, default=4.0, help="input length in seconds")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    parser.add_argument("--configs", nargs="+", choices=sorted(PAIRS), default=sorted(PAIRS))
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"SCNet vs HT Demucs of the same size: {args.device} {args.dtype}, {torch.get_num_threads()} threads, "
          f"batch {args.batch} x {args.segment:g} s, median of {args.reps}")
    rows = bench(args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
