"""``stemsep listen``: a MUSHRA listening test of separated stems, and its ratings aggregated.

    stemsep listen --mushra --references musdb18hq/test --systems A=sep_a/ B=sep_b/ -o mushra/
    stemsep listen --collect ratings/*.json -o results/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.evaluation.listening import listen

HELP = "Write a MUSHRA listening test (a web page) of separated stems, or aggregate its ratings."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--collect", nargs="+", type=Path, metavar="RATINGS",
                      help="ratings files (JSON) downloaded from the test page: screen and aggregate them")
    mode.add_argument("--mushra", action="store_true", help="write the test page and its audio into -o DIR")
    parser.add_argument("--references", type=Path, help="reference tracks (<track>/<stem>.<ext>, as stemsep score)")
    parser.add_argument("--systems", nargs="+", metavar="NAME=FOLDER", default=[],
                        help="each system's estimates (<track>/<stem>.<ext>, as stemsep separate writes)")
    parser.add_argument("--sources", nargs="+", help="stems to test (default: every stem of the references)")
    parser.add_argument("--duration", type=float, default=10.0, help="excerpt length in seconds (default 10)")
    parser.add_argument("--start", type=float, default=None,
                        help="excerpt start in seconds (default: the loudest window of each reference stem)")
    parser.add_argument("--max-size", dest="max_size", type=float, default=50.0,
                        help="size budget of all the audio files in MB (default 50); the MP3 bitrate follows")
    parser.add_argument("--title", default="MUSHRA listening test", help="the page's title")
    add_output(parser, "out", type=Path,
               help="--mushra: the test folder (required); --collect: results folder (default: the first file's)")


def run(args: argparse.Namespace) -> int:
    for line in listen(collect=args.collect, references=args.references, systems=args.systems, out=args.out,
                       sources=args.sources, duration=args.duration, start=args.start, max_size_mb=args.max_size,
                       title=args.title):
        print(line)
    return 0
