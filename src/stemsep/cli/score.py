"""TEMPORARY delegation (being converted to a typed library call)."""

from stemsep.evaluation.score import add_arguments, run  # noqa: F401

HELP = "Score estimated stems against references (museval-compatible)."
