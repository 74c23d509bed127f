"""``CompileNetwork``: ``torch.compile`` the separation network for training (opt-in).

Add it to the trainer's callbacks (recipes list it commented out)::

    trainer:
      callbacks:
        - class_path: stemsep.training.callbacks.CompileNetwork
          init_args: {mode: max-autotune-no-cudagraphs}

It compiles ``module.net`` in place (``nn.Module.compile``), so parameter names, checkpoints
and ``init_from`` are unchanged, and weight averaging (EMA) sees the same parameters.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info


class CompileNetwork(Callback):
    """Compile ``pl_module.net`` with ``torch.compile(**options)`` when fitting starts.

    Args:
        mode: ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``...).
        dynamic: whether to compile for dynamic shapes (``None``: torch decides).
        fullgraph: require one graph (errors on graph breaks).
        backend: compiler backend (default ``inductor``).
    """

    def __init__(self, mode: str | None = None, dynamic: bool | None = None, fullgraph: bool = False,
                 backend: str = "inductor"):
        self.options = {"mode": mode, "dynamic": dynamic, "fullgraph": fullgraph, "backend": backend}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.net.compile(**self.options)
        rank_zero_info(f"stemsep: compiled the network with torch.compile({self.options})")
