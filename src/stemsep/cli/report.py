"""``stemsep report``: the HTML report of a results folder (``stemsep score -o`` or ``stemsep test``).

    stemsep report runs/x/test_results -o report/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.evaluation.report import report_from_results

HELP = "Write an HTML report with figures from per-track results (score -o or test)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, help="folder of <track>.json results")
    add_output(parser, "out", type=Path, help="report folder (default: RESULTS/report)")
    parser.add_argument("--title", help="page title (default: from the folder name)")


def run(args: argparse.Namespace) -> int:
    page = report_from_results(args.results, args.out, title=args.title)
    print(f"report: {page}")
    return 0
