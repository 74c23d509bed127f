"""``stemsep bag``: assemble trained models into one bag checkpoint.

    stemsep bag --models drums.ckpt bass.ckpt other.ckpt vocals.ckpt --per-source -o ft.ckpt
    stemsep bag --model a.ckpt --model b.ckpt --weights 1,1,1,0 0,0,0,1 -o bag.ckpt   (as `separate`)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output, weight_rows
from stemsep.inference.bag import make_bag

HELP = "Assemble fine-tuned models into one bag checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "--models", dest="models", action="extend", nargs="+", required=True, type=Path,
                        metavar="CKPT", help="stemsep checkpoints of the members (same sources, sample rate and "
                                             "channels): --model A --model B, or --models A B")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--per-source", action="store_true",
                      help="model i supplies source i (as many models as sources, in source order)")
    mode.add_argument("--weights", nargs="+", type=weight_rows, metavar="W,W,...",
                      help="per-source weights of each model (one comma-separated list per model)")
    add_output(parser, "output", required=True, type=Path, metavar="OUT.ckpt", help="bag checkpoint")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.ckpt if it exists")


def run(args: argparse.Namespace) -> int:
    bag = make_bag(args.models, args.output, per_source=args.per_source, weights=args.weights, force=args.force)
    table = "; ".join(f"{path.name}: " + ",".join(f"{w:g}" for w in row)
                      for path, row in zip(args.models, bag.weights, strict=True))
    print(f"bag of {len(args.models)} model(s) -> {args.output} (sources {bag.sources}; weights {table})")
    return 0
