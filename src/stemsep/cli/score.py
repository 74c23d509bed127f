"""``stemsep score``: BSS-eval any system's separated stems against references (museval-compatible).

    stemsep score --references musdb18hq/test --estimates separated/ -o scores/ [--report report/]
    stemsep score --references musdb18hq/test --estimates separated/ --metrics usdr bleedless fullness
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stemsep.cli.common import add_output
from stemsep.evaluation.bss_eval import METRICS
from stemsep.evaluation.results import SCORE_METRICS
from stemsep.evaluation.score import score

HELP = "Score estimated stems against references (museval-compatible)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--references", required=True, type=Path, help="root of the reference stems")
    parser.add_argument("--estimates", required=True, type=Path, help="root of the estimated stems")
    parser.add_argument("--layout", choices=["musdb"], default="musdb", help="directory layout (default: musdb)")
    parser.add_argument("--sources", nargs="+", help="sources to score (default: those of the references)")
    add_output(parser, "out", type=Path, help="directory for per-track and summary files")
    parser.add_argument("--metrics", nargs="+", choices=SCORE_METRICS, default=list(METRICS), metavar="METRIC",
                        help="museval's framewise sdr isr sir sar (default: all four; sdr alone is much cheaper) "
                             "and the community's (MSST's) whole-track usdr si_sdr l1_freq log_wmse aura_stft "
                             "aura_mrstft bleedless fullness, in any mix")
    parser.add_argument("--window", type=float, default=1.0, help="frame length in seconds (default 1)")
    parser.add_argument("--hop", type=float, default=1.0, help="frame hop in seconds (default 1)")
    parser.add_argument("--partial", action="store_true",
                        help="score the reference tracks that have estimates, instead of requiring all")
    parser.add_argument("--allow-silent", action="store_true",
                        help="accept all-zero stems instead of refusing them (museval's frames score NaN; the "
                             "community metrics score them as MSST does)")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="also write DIR/report.html with figures (needs: pip install 'stemsep[report]')")
    parser.add_argument("--listen", action="store_true",
                        help="with --report: a listening page per track (reference, estimate, residual under one "
                             "transport; click a frame to hear it)")
    parser.add_argument("--audio-max-size", type=float, default=500.0, metavar="MB",
                        help="with --listen: size budget of the pages' MP3s (default 500)")


def run(args: argparse.Namespace) -> int:
    summary = score(args.references, args.estimates, sources=args.sources, out=args.out, metrics=args.metrics,
                    window=args.window, hop=args.hop, partial=args.partial, allow_silent=args.allow_silent,
                    layout=args.layout, report=args.report, listen=args.listen,
                    audio_max_size_mb=args.audio_max_size)
    print(summary.table())
    return 0
