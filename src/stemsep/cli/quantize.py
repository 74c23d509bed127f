"""``stemsep quantize``: dynamic int8 quantization of a checkpoint's Linear, LSTM and GRU layers (CPU inference;
causal networks such as HS-TasNet: per-frame activations, so they stream as they separate offline).

    stemsep quantize model.ckpt -o model-int8.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.io.quantize import quantize_checkpoint

HELP = "Dynamic int8 quantization of a checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="float32 stemsep checkpoint (a path, a URL or a released model's name)")
    add_output(parser, "out", required=True, type=Path, help="int8 checkpoint to write")


def run(args: argparse.Namespace) -> int:
    out = quantize_checkpoint(args.checkpoint, args.out)
    after = out.stat().st_size
    source = Path(args.checkpoint)
    before = source.stat().st_size if source.is_file() else None  # not a URL or a model name
    compared = f" ({after / before:.2f} x {args.checkpoint}'s {before / 1e6:.2f} MB)" if before else ""
    print(f"wrote {out}: {after / 1e6:.2f} MB{compared}")
    return 0
