"""``stemsep synth``: generate a synthetic multitrack corpus (MUSDB18-HQ layout).

    stemsep synth --out data/synth --songs 8 --seconds 10
"""

from __future__ import annotations

import argparse

from stemsep.cli.common import add_output
from stemsep.data.corpus.synth import SAMPLERATE, generate_corpus

HELP = "Generate a synthetic multitrack corpus (MUSDB18-HQ layout)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output(parser, "out", required=True, help="output root (MUSDB18-HQ layout)")
    parser.add_argument("--songs", type=int, default=8, help="number of training songs")
    parser.add_argument("--test-songs", type=int, default=None, help="number of test songs (default songs // 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each song")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samplerate", type=int, default=SAMPLERATE)


def run(args: argparse.Namespace) -> int:
    root = generate_corpus(args.out, songs=args.songs, seconds=args.seconds, seed=args.seed,
                           test_songs=args.test_songs, samplerate=args.samplerate, progress=True)
    test_songs = args.test_songs if args.test_songs is not None else max(1, args.songs // 4)
    print(f"wrote {args.songs} train and {test_songs} test songs to {root}")
    return 0
