"""Argument types shared by several commands (parsing only; the library validates values)."""

from __future__ import annotations

import argparse


def weight_rows(spec: str) -> list[float]:
    """``"1,0,0.5,1"`` -> ``[1.0, 0.0, 0.5, 1.0]`` (one model's per-source weights)."""
    try:
        return [float(x) for x in spec.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r} is not a comma-separated list of numbers") from None


def add_output(parser: argparse.ArgumentParser, dest: str, help: str, **kwargs) -> None:
    """The output option, spelled alike in every command: ``-o``, ``--out`` and ``--output`` (one ``dest``)."""
    parser.add_argument("-o", "--out", "--output", dest=dest, help=help, **kwargs)


def add_ensemble_options(parser: argparse.ArgumentParser) -> None:
    """``--ensemble MODE``, ``--pick STEM=I[,J]``, ``--derive NAME``: models of any kinds combined
    (:mod:`stemsep.inference.ensemble`), spelled alike in ``separate`` and ``bag``."""
    from stemsep.inference.ensemble import MODES

    parser.add_argument("--ensemble", choices=MODES, metavar="MODE",
                        help="combine the --model's by MODE (" + ", ".join(MODES) + "): any families, sources, "
                             "sample rates and channels, stems matched by name; --weights then one number per model")
    parser.add_argument("--pick", action="append", metavar="STEM=I[,J]",
                        help="with --ensemble: take STEM from these models only (0 = the first --model); repeatable")
    parser.add_argument("--derive", action="append", default=[], metavar="NAME",
                        help="with --ensemble: also make NAME = mix - a stem: instrumental (mix - vocals) or "
                             "no_<stem>; repeatable")
