"""Atomic output: complete files only, with the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from stemsep.errors import StemsepError
from stemsep.io.files import atomic_path


def test_written_file_gets_the_umask_mode_not_mkstemps_private_one(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    target = tmp_path / "report.html"
    with atomic_path(target) as tmp:
        tmp.write_text("<html></html>")
    assert target.read_text() == "<html></html>"
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_unwritable_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StemsepError, match="cannot create output directory"), atomic_path(blocker / "x" / "y.txt"):
        pass
