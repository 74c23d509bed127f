"""``stemsep models``: the pretrained models stemsep knows by name, and the local model cache.

    stemsep models list                          name, family, sources, size, reported SDR, cached?
    stemsep models info htdemucs_ft              URLs, hashes, license, the authors' figure, the cache entry
    stemsep models download htdemucs_ft          fetch, check, convert and cache now (else on first use)
    stemsep models download htdemucs -o htdemucs.ckpt    ... and write a copy of the converted checkpoint
    stemsep models add 955717e8-8726e21a.th --name htdemucs    install files downloaded by hand (offline)
    stemsep models remove htdemucs               delete its cache entry

Any command taking a checkpoint takes these names: ``stemsep separate song.mp3 --model htdemucs_ft -o out/``.
"""

from __future__ import annotations

import argparse

from stemsep.cli.common import add_output
from stemsep.io.pretrained import ACTIONS, models

HELP = "List, download, add or remove pretrained models (used by name: --model htdemucs)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="list; info NAME; download NAME; add FILE... --name NAME; "
                                                        "remove NAME")
    parser.add_argument("target", nargs="*", metavar="NAME|FILE",
                        help="the model's name (info, download, remove) or the files fetched by hand (add)")
    parser.add_argument("--name", default=None, help="add: the registry name the files are installed as")
    add_output(parser, "out", default=None, metavar="FILE.ckpt",
               help="download, add: also write the converted checkpoint to FILE.ckpt")
    parser.add_argument("--trust-unverified", action="store_true",
                        help="download: fetch a model whose publisher gives no sha256 (its first download is "
                             "then pinned by the cache)")


def run(args: argparse.Namespace) -> int:
    for line in models(args.action, args.target, name=args.name, trust_unverified=args.trust_unverified,
                       out=args.out):
        print(line)
    return 0
