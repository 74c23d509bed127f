"""``stemsep import-demucs``: convert an official demucs checkpoint without running pickled code.

    stemsep import-demucs 955717e8-8726e21a.th -o htdemucs.ckpt
"""

from __future__ import annotations

import argparse
import sys

from stemsep.cli.common import add_output
from stemsep.io.import_demucs import import_demucs

HELP = "Convert an official demucs checkpoint safely."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="FILE.th", help="demucs model file (e.g. 955717e8-8726e21a.th)")
    add_output(parser, "output", required=True, metavar="OUT.ckpt", help="stemsep checkpoint to write")
    parser.add_argument("--attention", default=None, metavar="NAME",
                        help="attention backend to record for HTDemucs (dense, lsh, fast_transformers; "
                             "default: dense)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.ckpt if it exists")


def run(args: argparse.Namespace) -> int:
    summary = import_demucs(args.checkpoint, args.output, attention=args.attention, force=args.force)
    if summary["dropped_kwargs"]:
        print(f"stemsep: warning: ignored constructor arguments {summary['dropped_kwargs']}", file=sys.stderr)
    print(f"{args.checkpoint} ({summary['klass']}) -> {args.output}: {summary['class_path']}, "
          f"{summary['parameters']:,} parameters, sources {summary['sources']}")
    return 0
