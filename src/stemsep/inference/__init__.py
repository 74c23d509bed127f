"""Separation of whole mixtures and files: chunked overlap-add, bags, the file-level API, exported
runtimes and CPU inference rewrites. Imports errors, contract, io and models only."""

from stemsep.inference.chunked import apply_model, apply_model_many
from stemsep.inference.cpu import optimize_for_cpu, restore_plain
from stemsep.inference.separator import Separator
from stemsep.inference.stream import StreamingSeparator

__all__ = ["Separator", "StreamingSeparator", "apply_model", "apply_model_many", "optimize_for_cpu", "restore_plain"]
