"""``stemsep report``: the HTML report of a results folder (``stemsep score -o`` or ``stemsep test``).

    stemsep report runs/x/test_results -o report/
    stemsep report scores/ --references musdb18hq/test --estimates separated/ -o report/   # + listening pages
    stemsep report scores_a/ scores_b/ --names A B -o cmp/    # a comparison (+ --references, --estimates A B)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.evaluation.track_pages import report

HELP = "Write an HTML report with figures from per-track results (score -o or test)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, nargs="+",
                        help="folder of <track>.json results; several: a comparison of systems")
    parser.add_argument("--names", nargs="+", help="the systems' names, one per results folder (default: folder names)")
    add_output(parser, "out", type=Path, help="report folder (default: RESULTS/report)")
    parser.add_argument("--title", help="page title (default: from the folder name)")
    parser.add_argument("--references", type=Path,
                        help="the scored references: adds a listening page per track (with --estimates)")
    parser.add_argument("--estimates", type=Path, nargs="+",
                        help="the scored estimates, one folder per results folder (with --references)")
    parser.add_argument("--audio-max-size", dest="audio_max_size", type=float, default=500.0,
                        help="size budget of the listening pages' MP3 files in MB (default 500)")


def run(args: argparse.Namespace) -> int:
    page = report(args.results, args.out, title=args.title, names=args.names, references=args.references,
                  estimates=args.estimates, audio_max_size_mb=args.audio_max_size)
    print(f"report: {page}")
    return 0
