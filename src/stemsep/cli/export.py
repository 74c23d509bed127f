"""``stemsep export``: write a checkpoint's network as ONNX or TorchScript.

    stemsep export model.ckpt --format onnx -o model.onnx
    stemsep separate song.wav --model model.onnx --backend onnxruntime -o separated/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.inference.export import FORMATS, export_checkpoint

HELP = "Export a model to ONNX or TorchScript."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="stemsep checkpoint (HDemucs or HTDemucs)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torchscript")
    add_output(parser, "out", required=True, type=Path, help="output file (.onnx / .pt)")
    parser.add_argument("--segment", type=float, default=None,
                        help="fixed segment in seconds (not for HT Demucs; default the model's)")


def run(args: argparse.Namespace) -> int:
    meta = export_checkpoint(args.checkpoint, args.out, format=args.format, segment=args.segment)
    backend = "onnxruntime" if args.format == "onnx" else "torchscript"
    print(f"exported {meta['class_path'].rsplit('.', 1)[-1]} core ({meta['segment_samples']} samples, "
          f"dynamic batch) to {args.out}; run it with `stemsep separate --backend {backend} --model {args.out}`")
    return 0
