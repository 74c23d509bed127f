"""Moved: the training callbacks live in :mod:`stemsep.training.callbacks`.

A config or an import naming ``stemsep.callbacks.<Name>`` fails with one line naming the new path.
This module imports nothing (the layer rules of docs/architecture.md hold for it too).
"""

NEW_HOME = "stemsep.training.callbacks"


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"stemsep.callbacks.{name} moved to {NEW_HOME}.{name}")
