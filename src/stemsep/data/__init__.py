"""Training and evaluation data, by job:

- ``stemsep.data.corpus``: songs on disk (MUSDB18-HQ, MoisesDB, stem folders: ``layouts``), the
  synthetic corpus (``synth``), activity profiles (``activity``);
- ``stemsep.data.shards``: ``stemsep shard`` (``shard``), the FLAC codec of the shards, manifests,
  reading shards from anywhere (``tarstream``), shards made on first use (``prepare``), ``stemsep audit``;
- ``stemsep.data.augment``: the training augmentations (``stemsep.data.augment.<Class>`` in configs);
- ``stemsep.data.loaders``: the DataModules (``StemDataModule``, ``FolderDataModule``) and their streams.

Subpackages import down this list only (tests/test_architecture.py). The modules' former paths
(``stemsep.data.datamodule``, ``stemsep.data.manifest``, ... before the grouping, and
``stemsep.data.remote``, now :mod:`stemsep.io.remote`) still import, as the new module itself, with
a ``FutureWarning`` naming the new path: configs and checkpoints that name them keep working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# former module (under stemsep.data) -> its home now
MOVED = {
    "activity": "stemsep.data.corpus.activity",
    "layouts": "stemsep.data.corpus.layouts",
    "synth": "stemsep.data.corpus.synth",
    "audit": "stemsep.data.shards.audit",
    "codec": "stemsep.data.shards.codec",
    "manifest": "stemsep.data.shards.manifest",
    "prepare": "stemsep.data.shards.prepare",
    "shard": "stemsep.data.shards.shard",
    "tarstream": "stemsep.data.shards.tarstream",
    "degrade": "stemsep.data.augment.degrade",
    "wsola": "stemsep.data.augment.wsola",
    "stembatch": "stemsep.data.augment.stembatch",
    "datamodule": "stemsep.data.loaders.datamodule",
    "folder": "stemsep.data.loaders.folder",
    "streams": "stemsep.data.loaders.streams",
    "allocator": "stemsep.data.loaders.allocator",
    "remote": "stemsep.io.remote",
}


class _FormerPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``stemsep.data.<former>`` as the module that now holds its code (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name.rpartition(".")[2]]
        warnings.warn(f"{spec.name} moved to {new}", FutureWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._spec = module.__spec__  # the import system sets __spec__ to the former path's: restored below
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec


if not any(isinstance(finder, _FormerPaths) for finder in sys.meta_path):
    sys.meta_path.append(_FormerPaths())
