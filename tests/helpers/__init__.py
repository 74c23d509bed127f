"""Shared test helpers (tests/ is on pytest's ``pythonpath``): import them from here, not from conftest.

``helpers.nets``: tiny networks; ``helpers.data``: corpus and shard builders; ``helpers.recipes``:
running recipes on the synthetic shards; ``helpers.slow_net``: a network whose calls a test can stop at (``helpers.gate``);
``helpers.remote``: a fault-injecting HTTP shard server and moto's S3 server on 127.0.0.1;
``helpers.tools``: every stemsep tool run and checked on a small ``configs/model`` network;
``helpers.imports``: pieces of the ``import-checkpoint`` tests (a pickle that would run a shell command);
``helpers.stream``: a stream pushed block by block and flushed.
"""

import shutil
from pathlib import Path

import pytest

from helpers.nets import TinyNet


def require_museval():
    """museval (the BSS-eval oracle), or skip naming the system tool it needs: it imports stempeg,
    which refuses to load without the ffmpeg binary (``apt-get install ffmpeg``; `.ci/run` installs it)."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("museval needs the ffmpeg and ffprobe binaries: apt-get install ffmpeg", allow_module_level=True)
    return pytest.importorskip("museval")

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "TinyNet", "require_museval"]
