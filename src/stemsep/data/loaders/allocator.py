"""Keep large buffers in the heap of a data-loading process (glibc ``malloc`` tuning).

A training worker allocates and frees tens of MB per batch (decoded FLAC spans, the batch
itself). glibc serves blocks above its mmap threshold (at most 32 MB by default) with fresh
``mmap`` pages and returns freed heap tops to the system, so every batch pays page faults and
kernel zeroing for all of its memory again: about a fifth of a worker's time. Raising the mmap
and trim thresholds keeps those blocks in the heap for reuse. The cost is that the process
keeps up to ``trim_threshold`` of freed memory instead of returning it.

Only glibc (Linux) is tuned; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_tuned = False


def keep_large_buffers(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Raise this process's malloc mmap/trim thresholds (once); whether glibc accepted them."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
    return _tuned
