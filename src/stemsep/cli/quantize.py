"""``stemsep quantize``: dynamic int8 quantization of a checkpoint's Linear layers (CPU inference).

    stemsep quantize model.ckpt -o model-int8.ckpt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.io.quantize import quantize_checkpoint

HELP = "Dynamic int8 quantization of a checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="float32 stemsep checkpoint")
    add_output(parser, "out", required=True, type=Path, help="int8 checkpoint to write")


def run(args: argparse.Namespace) -> int:
    out = quantize_checkpoint(args.checkpoint, args.out)
    before, after = args.checkpoint.stat().st_size, out.stat().st_size
    print(f"wrote {out}: {after / 1e6:.2f} MB ({after / before:.2f} x {args.checkpoint}'s {before / 1e6:.2f} MB)")
    return 0
