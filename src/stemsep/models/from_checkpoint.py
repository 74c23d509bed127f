"""A network config that means "the network stored in this stemsep checkpoint".

LightningCLI builds ``model.net`` from a ``class_path``; this one loads whatever a stemsep
checkpoint holds — a trained model, an imported demucs model or a bag from ``stemsep bag`` —
with its weights, so any of them can be evaluated or fine-tuned from a config::

    stemsep test --config recipes/eval.yaml \\
        --model.net stemsep.models.FromCheckpoint --model.net.checkpoint ft.ckpt

Constructing ``FromCheckpoint(checkpoint=...)`` returns the stored network itself (e.g. a
:class:`~stemsep.models.bag.BagOfModels`, so chunked inference still applies each member with its
own segment), not a wrapper: parameter names and behaviour are exactly those of the stored model.
"""

from __future__ import annotations

import os

from torch import nn


class FromCheckpoint(nn.Module):
    """``FromCheckpoint(checkpoint)`` -> the network stored in ``checkpoint``, weights loaded, train mode."""

    def __new__(cls, checkpoint: str | os.PathLike):  # noqa: D102 - documented on the class
        from ..checkpoint import load_network

        net, _ = load_network(checkpoint)
        return net.train()

    def __init__(self, checkpoint: str | os.PathLike):  # pragma: no cover - __new__ returns another class
        super().__init__()
