"""``stemsep ensemble``: combine one stem separated by several models (MSST's ``ensemble.py`` workflow).

    stemsep ensemble --files a/vocals.wav b/vocals.wav --type avg_wave --weights 2 1 -o vocals.wav

The modes and their definitions: :mod:`stemsep.inference.ensemble`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.inference.ensemble import MODES, ensemble_files

HELP = "Combine separations of one stem by several models (avg/median/min/max, waveform or STFT)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", nargs="+", required=True, type=Path, metavar="FILE",
                        help="the same stem of the same input, separated by each model")
    parser.add_argument("--type", "--mode", dest="mode", default="avg_wave", choices=MODES,
                        help="how to combine (default avg_wave; MSST's names)")
    parser.add_argument("--weights", nargs="+", type=float, metavar="W",
                        help="one weight per file (avg_wave and avg_fft only; default equal)")
    add_output(parser, "output", required=True, type=Path, metavar="OUT.wav", help="combined stem (WAV or FLAC)")
    parser.add_argument("--bits", type=int, default=32, choices=(16, 24, 32),
                        help="sample format of OUT (32: float, as MSST writes; default)")


def run(args: argparse.Namespace) -> int:
    out = ensemble_files(args.files, args.output, args.mode, args.weights, bits=args.bits)
    print(f"{args.mode} of {len(args.files)} file(s) -> {out}")
    return 0
