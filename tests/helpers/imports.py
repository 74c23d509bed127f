"""Shared pieces of the ``stemsep import-checkpoint`` tests: a pickle that would run a shell command,
and running the command to a one-line error."""

from __future__ import annotations

import os
from pathlib import Path

from stemsep.cli import main


class RunsShell:
    """Unpickling this runs ``touch marker`` (``os.system``): a safe loader must refuse it, and ``marker``
    must not exist afterwards."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def import_error(checkpoint: Path, config: Path, model_type: str, out: Path, capsys) -> str:
    """``stemsep import-checkpoint`` that must fail: exit status 2 and exactly one line on stderr (returned)."""
    assert main(["import-checkpoint", str(checkpoint), "--config", str(config), "--model-type", model_type,
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]
