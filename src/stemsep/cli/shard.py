"""``stemsep shard``: pack a multitrack dataset into WebDataset tar shards plus a manifest per split.

    stemsep shard --layout musdb --root musdb18hq --out shards/ --max-shard-size 1GB
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.contract import DEFAULT_SOURCES
from stemsep.data.corpus.layouts import LAYOUTS
from stemsep.data.shards.shard import shard_dataset

HELP = "Pack a multitrack dataset into WebDataset tar shards."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=LAYOUTS, required=True, help="dataset layout of --root")
    parser.add_argument("--root", required=True, help="dataset root folder")
    add_output(parser, "out", required=True, help="output folder for shards and manifests")
    parser.add_argument("--sources", nargs="+", default=None,
                        help=f"stems to store, in order (default {' '.join(DEFAULT_SOURCES)}); moisesdb: 'all' keeps "
                             "every stem type, grouped at load time with data.init_args.stem_groups")
    parser.add_argument("--split", nargs="+", default=None,
                        help="splits to write (default musdb: train valid test; moisesdb: train valid; folder: train)")
    parser.add_argument("--valid-songs", nargs="+", default=None,
                        help="song names of the validation split (musdb default: the 14 standard ones)")
    parser.add_argument("--max-shard-size", default="1GB", help="shard size bound, e.g. 1GB, 256MB")
    parser.add_argument("--workers", type=int, default=1, help="processes encoding songs in parallel")


def run(args: argparse.Namespace) -> int:
    manifests = shard_dataset(args.root, args.out, layout=args.layout, sources=args.sources, splits=args.split,
                              valid_songs=args.valid_songs, max_shard_size=args.max_shard_size,
                              workers=args.workers, progress=True)
    for split, manifest in manifests.items():
        if manifest is None:
            print(f"split {split}: no songs, skipped")
        else:
            print(f"split {split}: {len(manifest['songs'])} songs, {manifest['total_seconds'] / 3600:.2f} h, "
                  f"{len(manifest['shards'])} shard(s) -> {Path(args.out) / (split + '.json')}")
    return 0
