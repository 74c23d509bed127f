"""Files in and out: audio, atomic writes, staging folders and the provenance of separated stems,
remote reads (``io.remote``: retried, resumed, size/ETag-checked; shards, manifests and
checkpoints alike), safe checkpoints, the int8 format, imports of other projects' checkpoints. Imports only
:mod:`stemsep.errors` and :mod:`stemsep.contract`."""

from stemsep.io.checkpoint import FromCheckpoint, load_network, load_separator, save_checkpoint
from stemsep.io.pretrained import fetch_model  # also plugs pretrained model names into open_checkpoint

__all__ = ["FromCheckpoint", "fetch_model", "load_network", "load_separator", "save_checkpoint"]
