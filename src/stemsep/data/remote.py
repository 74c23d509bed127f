"""Moved: the retrying, resuming remote reader lives in :mod:`stemsep.io.remote` (checkpoints read
remote files through it too). Its public names are re-exported here, so imports and configs naming
``stemsep.data.remote.Retry`` or ``RemoteReader`` keep working; any other name fails with one line
naming the new home.
"""

from stemsep.io.remote import RETRY_STATUS, RemoteReader, Retry

__all__ = ["RETRY_STATUS", "RemoteReader", "Retry"]

NEW_HOME = "stemsep.io.remote"


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"stemsep.data.remote.{name} moved to {NEW_HOME}.{name}")
