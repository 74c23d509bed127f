"""Separation networks: Hybrid Demucs (v3) and Hybrid Transformer Demucs (v4)."""

from stemsep.models.from_checkpoint import FromCheckpoint
from stemsep.models.hdemucs import HDemucs
from stemsep.models.htdemucs import HTDemucs

__all__ = ["FromCheckpoint", "HDemucs", "HTDemucs"]
