"""TEMPORARY delegation (being converted to a typed library call)."""

from stemsep.inference.separate import add_arguments, run  # noqa: F401

HELP = "Separate audio files into stems with trained models."
