"""``stemsep audit``: find songs to leave out of training — silent stems and bleeding stems.

    stemsep audit --shards shards/train.json --out keep.json [--model htdemucs.ckpt]
"""

from __future__ import annotations

import argparse

from stemsep.cli.common import add_output
from stemsep.data.shards.audit import audit_shards

HELP = "Filter songs: silent stems and bleeding between stems."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="manifest of the split to audit (<split>.json)")
    parser.add_argument("--shard-urls", nargs="+", default=None, help="shard URLs (default: beside the manifest)")
    parser.add_argument("--model", default=None, help="separator checkpoint for the bleeding test")
    add_output(parser, "out", required=True, help="keep-list JSON to write")
    parser.add_argument("--silence-db", type=float, default=-40.0, help="frames below this are silent")
    parser.add_argument("--silent-fraction", type=float, default=0.5, help="drop when more frames are silent")
    parser.add_argument("--threshold-db", type=float, default=-10.0, help="V(y) - V(x) above this counts")
    parser.add_argument("--own-min", type=float, default=0.7, help="keep when P_ii exceeds this ...")
    parser.add_argument("--other-max", type=float, default=0.3, help="... and every P_ij (i != j) is below this")
    parser.add_argument("--segment", type=float, default=None, help="model chunk length in seconds")


def run(args: argparse.Namespace) -> int:
    audit = audit_shards(args.shards, args.out, shard_urls=args.shard_urls, model=args.model,
                         silence_db=args.silence_db, silent_fraction=args.silent_fraction,
                         threshold_db=args.threshold_db, own_min=args.own_min, other_max=args.other_max,
                         segment=args.segment)
    print(audit.table())
    print(f"kept {len(audit.keep)} of {len(audit.songs)} songs -> {args.out}")
    return 0
