"""Metrics: museval-compatible BSS-eval, nSDR, torchmetrics wrappers, per-track results, scoring."""
