"""Separation networks as plain ``nn.Module``s: Hybrid Demucs (v3), Hybrid Transformer Demucs (v4), SCNet,
BS-RoFormer, Mel-Band RoFormer and HS-TasNet.

Models know nothing of Lightning, checkpoints or inference: they import only
:mod:`stemsep.errors` and :mod:`stemsep.contract`.
"""

from stemsep.models.bs_roformer import BSRoFormer
from stemsep.models.hdemucs import HDemucs
from stemsep.models.hstasnet import HSTasNet
from stemsep.models.htdemucs import HTDemucs
from stemsep.models.mel_band_roformer import MelBandRoFormer
from stemsep.models.scnet import SCNet

__all__ = ["BSRoFormer", "HDemucs", "HSTasNet", "HTDemucs", "MelBandRoFormer", "SCNet"]

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
