"""Separation networks: Hybrid Demucs (v3) and Hybrid Transformer Demucs (v4)."""

from stemsep.models.hdemucs import HDemucs
from stemsep.models.htdemucs import HTDemucs

__all__ = ["HDemucs", "HTDemucs"]
