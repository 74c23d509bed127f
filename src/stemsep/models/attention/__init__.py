"""Attention for the cross-domain transformer: the layer and its backends (dense, LSH, fast_transformers)."""
