"""What ``stemsep separate`` separates: the input files, and the names their tracks get.

:func:`find_inputs` turns the paths named on the command line into the files to separate: files
are taken as given; folders are searched recursively, skipping hidden files and folders, the
output folder and stems stemsep wrote (recognised by their provenance record,
:func:`~stemsep.io.provenance.read_provenance`), so that separating into a folder under the one
searched, or rerunning on it, never separates stems again. Each input also gets the fields of the
``--filename`` template that come from its path: ``{track}`` (:func:`track_name`), ``{trackext}``
(:func:`trackext`) and ``{folder}`` (:func:`_folder_field`). Kept apart from the separation engine
(:mod:`stemsep.inference.separate`), which only needs the list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stemsep.errors import BadAudioError
from stemsep.io.audio import MIX_EXTENSIONS
from stemsep.io.provenance import read_provenance


@dataclass(frozen=True)
class Input:
    """A file to separate and its ``{folder}`` template field (:func:`find_inputs`)."""

    path: Path
    folder: str = ""


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def _is_own_output(path: Path) -> bool:
    """A stem stemsep wrote (its comment tag holds a :func:`~stemsep.io.provenance.provenance` record)."""
    return path.suffix.lower() in (".wav", ".flac", ".mp3") and read_provenance(path) is not None


def _search(root: Path, skip: Path | None) -> list[Path]:
    """Audio files under ``root``, sorted: not hidden, not under a hidden folder or ``skip`` (resolved),
    and not a stem stemsep wrote."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not _inside((here / d).resolve(), skip)]
        found += [here / name for name in filenames if not name.startswith(".")
                  and Path(name).suffix.lower() in MIX_EXTENSIONS and (here / name).is_file()]
    return sorted(p for p in found if not _is_own_output(p))


def _folder_field(path: Path, root: Path | None) -> str:
    """``{folder}``: where the track's folder is (the file's, or for MUSDB's ``<track>/mixture.wav``
    the one holding ``<track>``), relative to the searched folder ``root`` (``""`` at its top); for
    a file named directly (``root`` None), that folder's name."""
    base = path.parent.parent if path.stem == "mixture" and track_name(path) == path.parent.name else path.parent
    if root is None:
        return base.absolute().name
    try:
        rel = base.relative_to(root)
    except ValueError:
        return ""
    return rel.as_posix() if rel.parts else ""


def find_inputs(paths: Sequence[Path], out: Path | None = None) -> list[Input]:
    """Audio files named on the command line (used as given, hidden or not) or found under named
    folders (recursively, sorted; hidden files and folders, the output folder ``out`` and stems
    stemsep wrote are skipped), each with its ``{folder}`` (:func:`_folder_field`)."""
    skip = out.resolve() if out is not None else None
    inputs: dict[Path, Input] = {}
    for path in paths:
        if path.is_dir():
            inside_out = _inside(path.resolve(), skip)
            found = [] if inside_out else _search(path, skip)
            if not found and not inside_out:
                raise BadAudioError(f"{path}: no audio files in this folder (looked for {', '.join(MIX_EXTENSIONS)}; "
                                    "hidden files and folders, the output folder and stemsep's stems are skipped)")
            for file in found:
                inputs.setdefault(file, Input(file, _folder_field(file, path)))
        elif path.exists():
            inputs.setdefault(path, Input(path, _folder_field(path, None)))
        else:
            raise BadAudioError(f"{path}: file not found")
    if not inputs:
        raise BadAudioError(f"no audio files to separate: {', '.join(map(str, paths))} is inside the output "
                            f"folder {out}, which is never searched")
    return list(inputs.values())


def track_name(path: Path) -> str:
    """``song.wav`` -> ``song``; MUSDB's ``<track>/mixture.wav`` -> ``<track>``, ``<track>.stem.mp4`` -> ``<track>``."""
    if path.name.lower().endswith(".stem.mp4"):
        return path.name[:-len(".stem.mp4")]
    return path.parent.name if path.stem == "mixture" and path.parent.name else path.stem


def trackext(path: Path) -> str:
    """demucs' ``{trackext}``: the input's extension without the dot (``stem.mp4`` for MUSDB18 files)."""
    return "stem.mp4" if path.name.lower().endswith(".stem.mp4") else path.suffix.lstrip(".")
