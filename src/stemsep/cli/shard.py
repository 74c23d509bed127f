"""TEMPORARY delegation (being converted to a typed library call)."""

from stemsep.data.shard import add_arguments, run  # noqa: F401

HELP = "Pack a multitrack dataset into WebDataset tar shards."
