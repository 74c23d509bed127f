"""``stemsep bag``: assemble trained models into one bag checkpoint.

    stemsep bag --models drums.ckpt bass.ckpt other.ckpt vocals.ckpt --per-source -o ft.ckpt
    stemsep bag --model a.ckpt --model b.ckpt --weights 1,1,1,0 0,0,0,1 -o bag.ckpt   (as `separate`)
    stemsep bag --model vocals_roformer.ckpt --model htdemucs.ckpt --ensemble avg_wave --weights 2 1 \
        --pick vocals=0 --derive instrumental -o mix.ckpt   (any families: stemsep.inference.ensemble)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_ensemble_options, add_output, weight_rows
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
    add_ensemble_options(parser)
    add_output(parser, "output", required=True, type=Path, metavar="OUT.ckpt", help="bag checkpoint")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.ckpt if it exists")


def run(args: argparse.Namespace) -> int:
    bag = make_bag(args.models, args.output, per_source=args.per_source, weights=args.weights, force=args.force,
                   ensemble=args.ensemble, pick=args.pick, derive=args.derive)
    if args.ensemble:
        print(f"ensemble ({args.ensemble}) of {len(args.models)} model(s) -> {args.output} (sources {bag.sources})")
        return 0
    table = "; ".join(f"{path.name}: " + ",".join(f"{w:g}" for w in row)
                      for path, row in zip(args.models, bag.weights, strict=True))
    print(f"bag of {len(args.models)} model(s) -> {args.output} (sources {bag.sources}; weights {table})")
    return 0
