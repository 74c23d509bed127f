"""What Lightning trains on: ``StemDataModule`` (``datamodule``, streaming shards: ``streams``),
``FolderDataModule`` (``folder``, songs straight from folders), the allocator tuning of their workers.
Configs name them ``stemsep.data.loaders.StemDataModule`` / ``stemsep.data.loaders.FolderDataModule``."""

from stemsep.data.loaders.datamodule import StemDataModule
from stemsep.data.loaders.folder import FolderDataModule

__all__ = ["FolderDataModule", "StemDataModule"]
