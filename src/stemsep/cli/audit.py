"""TEMPORARY delegation (being converted to a typed library call)."""

from stemsep.data.audit import add_arguments, run  # noqa: F401

HELP = "Filter songs: silent stems and bleeding between stems."
