"""Staging a track's files in a hidden ``.part`` folder, then committing them by rename.

A track being written must never look finished, and a run killed half-way (Ctrl-C, SIGKILL, power
loss) must leave nothing that a rerun mistakes for output. So a track's files are written into a
hidden staging folder (:class:`TrackStaging`: ``.<track folder>.part`` beside the track's folder, or
``OUT/.<track>.<digest>.part``), locked with ``flock`` by the writing process, and moved into place
by rename once every one is complete. The kernel releases the lock when its process dies, so the
next run (:func:`remove_stale_scratch`) can tell a killed run's folder from a live one's and delete
it. Only what stemsep itself stages is ever deleted: lock, scratch and raw stem files, atomic-write
temporaries, and stems recording their input (:func:`~stemsep.io.provenance.read_provenance`).
Without ``fcntl`` (Windows) staging folders are not locked and stale ones are not swept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from stemsep.errors import StemsepError
from stemsep.io.files import TEMP_MARK
from stemsep.io.provenance import read_provenance

try:
    import fcntl
except ImportError:  # Windows: staging folders are not locked, stale ones not swept
    fcntl = None

LOCK_NAME = ".lock"  # in a staging folder: flock-ed by the process writing there (stale once it is gone)
SCRATCH_NAME = ".mix.f32"  # in a staging folder: the decoded mix of a file separated window by window
RAW_PREFIX = ".raw"  # in a staging folder: ``.raw<i>.f32``, a stem's samples before they are written
_UNLOCKED_GRACE_S = 60.0  # a staging folder without a lock file is stale once this old (a run killed
# between creating it and locking it, or one of a stemsep version without locks)


def _try_lock(folder: Path) -> int | None:
    """Lock ``folder`` (created if needed) for this process: the descriptor of its flock-ed
    ``.lock`` file (the kernel releases it when the process dies, even by SIGKILL), or None when
    another live process holds it. Without ``fcntl`` (Windows) nothing is locked: -1."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return -1
        lock = folder / LOCK_NAME
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino  # not removed by a sweep meanwhile
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _holds_only_ours(folder: Path) -> bool:
    """Whether every file under ``folder`` is one stemsep writes while staging a track: its lock,
    scratch and raw stem files, atomic-write temporaries, stems recording their input."""
    for path in folder.rglob("*"):
        if path.is_dir() or path.name == LOCK_NAME or TEMP_MARK in path.name:
            continue
        if path.name == SCRATCH_NAME or (path.name.startswith(RAW_PREFIX) and path.suffix == ".f32"):
            continue
        if read_provenance(path) is None:
            return False
    return True


def _remove_if_stale(folder: Path) -> bool:
    """Delete the staging ``folder`` if no live process holds its lock (and it holds only what
    stemsep stages: a user's folder of that name is left alone); whether it was deleted."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:
            return False
        if age < _UNLOCKED_GRACE_S or not _holds_only_ours(folder):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # its owner is alive
    else:
        if not _holds_only_ours(folder):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def remove_stale_scratch(out: Path) -> list[Path]:
    """Clean what killed runs (SIGKILL, power loss) left under ``out``: staging folders
    (``.<name>.part``, with the streaming scratch file) whose owning process is gone are deleted;
    a ``.<name>.old`` (a track folder being replaced) is deleted when ``<name>`` exists, else put
    back. Folders of live runs (locked), and folders holding files stemsep did not write, are
    left alone. Returns the deleted staging folders."""
    if fcntl is None or not out.is_dir():
        return []
    removed = []
    for dirpath, dirnames, _ in os.walk(out):
        here = Path(dirpath)
        hidden = [d for d in dirnames if d.startswith(".")]
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in hidden:
            if name.endswith(".part") and _remove_if_stale(here / name):
                removed.append(here / name)
        for name in hidden:
            old = here / name
            if (not name.endswith(".old") or len(name) < 6 or (here / f"{name[:-4]}.part").exists()
                    or not _holds_only_ours(old)):
                continue
            final = here / name[1:-4]
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.rename(final)
    return removed


class TrackStaging:
    """Where a track's files are staged and how they are committed.

    Templates with a folder of the track's own (``{track}/...``, ``{folder}/{track}/...``: ``folder``,
    from :meth:`~stemsep.inference.separate.WriteOptions.track_folder`): staged in a hidden
    ``.<folder>.part`` beside it that is renamed onto the folder once every stem is written (files
    already in it that are not rewritten are carried over), so a visible track folder is always
    complete. Other templates: staged in ``OUT/.<track>.<digest>.part`` and each file renamed into
    place, complete files only. The staging folder is locked by the writing process
    (:func:`remove_stale_scratch`).
    """

    def __init__(self, out: Path, track: str, targets: dict[str, Path], folder: Path | None):
        self.out, self.targets, self.fd = out, targets, None
        if folder is not None and not all(folder in path.parents for path in targets.values()):
            folder = None
        self.folder = folder
        if folder is not None:
            self.staging = folder.parent / f".{folder.name}.part"
            self.staged = {n: self.staging / path.relative_to(folder) for n, path in targets.items()}
            self.old = folder.parent / f".{folder.name}.old"
        else:
            digest = hashlib.sha256("\0".join(sorted(map(str, targets.values()))).encode()).hexdigest()[:8]
            self.staging = out / f".{track}.{digest}.part"
            self.staged = {n: self.staging / path.relative_to(out) for n, path in targets.items()}
            self.old = None

    def acquire(self) -> None:
        """Lock the staging folder (a one-line error if another running stemsep holds it) and empty
        it of what a killed run left."""
        self.fd = _try_lock(self.staging)
        if self.fd is None:
            raise StemsepError(f"{self.folder or next(iter(self.targets.values()))}: another stemsep process "
                               f"is writing this track now ({self.staging} is locked)")
        for leftover in self.staging.iterdir():  # a killed run's
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.name != LOCK_NAME:
                leftover.unlink()

    def commit(self, input_name: str | None = None) -> None:
        """Move the staged files into place; ``input_name``: files of an existing track folder that
        record another input are dropped, not carried over (``--overwrite`` replaces that track)."""
        if self.folder is None:
            for name, staged in self.staged.items():
                self.targets[name].parent.mkdir(parents=True, exist_ok=True)
                staged.rename(self.targets[name])
            return
        final, part, old = self.folder, self.staging, self.old
        for leftover in part.glob(f"{RAW_PREFIX}*"):
            leftover.unlink()
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            for extra in old.rglob("*"):
                if input_name is not None and extra.is_file():
                    found = read_provenance(extra)
                    if found is not None and found.get("input") != input_name:
                        continue
                if extra.is_file() and not (part / extra.relative_to(old)).exists():
                    (part / extra.relative_to(old)).parent.mkdir(parents=True, exist_ok=True)
                    extra.rename(part / extra.relative_to(old))
        (part / LOCK_NAME).unlink(missing_ok=True)  # the folder becomes the track's
        part.rename(final)

    def cleanup(self) -> None:
        if self.fd is None:
            return  # not ours: another process holds the staging folder
        if self.old is not None and self.old.exists() and not self.folder.exists():
            self.old.rename(self.folder)  # failed between the two renames: put it back
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.old is not None:
            shutil.rmtree(self.old, ignore_errors=True)
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
        self.fd = None
