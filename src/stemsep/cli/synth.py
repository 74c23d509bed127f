"""TEMPORARY delegation (being converted to a typed library call)."""

from stemsep.data.synth import add_arguments, run  # noqa: F401

HELP = "Generate a synthetic multitrack corpus (MUSDB18-HQ layout)."
