"""Separation networks as plain ``nn.Module``s: Hybrid Demucs (v3) and Hybrid Transformer Demucs (v4).

Models know nothing of Lightning, checkpoints or inference: they import only
:mod:`stemsep.errors` and :mod:`stemsep.contract`.
"""

from stemsep.models.hdemucs import HDemucs
from stemsep.models.htdemucs import HTDemucs

__all__ = ["HDemucs", "HTDemucs"]

# Names that lived here before the packages were split by layer: a one-line error names the new home.
MOVED = {
    "FromCheckpoint": "stemsep.io.FromCheckpoint",
    "bag": "stemsep.inference.bag",
    "BagOfModels": "stemsep.inference.bag.BagOfModels",
    "attention_backends": "stemsep.models.attention.backends",
    "lsh_attention": "stemsep.models.attention.lsh",
    "fast_transformers_attention": "stemsep.models.attention.fast_transformers",
    "from_checkpoint": "stemsep.io.checkpoint",
}


def __getattr__(name: str):
    if name in MOVED:
        raise AttributeError(f"stemsep.models.{name} moved to {MOVED[name]}")
    raise AttributeError(f"module 'stemsep.models' has no attribute {name!r}")
