"""Shared test helpers (tests/ is on pytest's ``pythonpath``): import them from here, not from conftest.

``helpers.nets``: tiny networks; ``helpers.data``: corpus and shard builders; ``helpers.recipes``:
running recipes on the synthetic shards; ``helpers.slow_net``: a network slow enough to kill.
"""

from pathlib import Path

from helpers.nets import TinyNet

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "TinyNet"]
