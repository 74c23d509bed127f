"""Crash-safe file output: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stemsep.errors import StemsepError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) or raise a one-line error naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StemsepError(f"{path}: cannot create output directory ({err.strerror})") from None
    if not os.access(path, os.W_OK):
        raise StemsepError(f"{path}: output directory is not writable")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read 1 MiB at a time (shards, imported and base checkpoints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import (os.umask can only be read by setting it): the mode a plain open() would give.
_FILE_MODE = 0o666 & ~_current_umask()

TEMP_MARK = ".tmp-"  # in the names of atomic_path's temporary files: ".<name>.tmp-<random><suffix>"


def remove_stale_temporaries(folder: Path, name_glob: str) -> None:
    """Delete temporaries that a killed process left for targets matching ``name_glob`` in ``folder``."""
    for partial in Path(folder).glob(f".{name_glob}{TEMP_MARK}*"):
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The file ends up with the permissions a plain ``open()`` would give it (``0666`` less the
    umask), not ``mkstemp``'s private ``0600``. The temporary name starts with a dot, so directory scans that skip hidden files never
    mistake a leftover from a killed process for output.

    On any exception the temporary file is removed, so ``target`` is either the old file,
    absent, or the complete new file — never half-written.
    """
    target = Path(target)
    ensure_writable_dir(target.parent)
    # Hidden name, same extension (soundfile and friends infer the format from it).
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{TEMP_MARK}", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp made it 0600: give it the mode a plain open() would
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, target)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        raise StemsepError(f"{target}: cannot write ({err.strerror or err})") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
