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
