"""``LoggerGuard``: a failing experiment logger degrades to a warning; training goes on.

W&B unreachable, a full disk under the CSV/TensorBoard log folder, a logging service that
times out: none of these is a reason to lose a training run. When fitting starts, the guard
wraps the methods Lightning calls on each logger (``log_metrics``, ``log_hyperparams``,
``log_graph``, ``save``, ``finalize``, ``after_save_checkpoint``) so that an exception there
is reported as a warning (the first failure of each method, then every 100th, with the count)
and the call is dropped. The ``stemsep`` CLI lists it as ``guards.logger`` (``null``: off);
:class:`~stemsep.training.SeparationModule` adds one from Python when the trainer has none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

GUARDED = ("log_metrics", "log_hyperparams", "log_graph", "save", "finalize", "after_save_checkpoint")
WARN_EVERY = 100


class LoggerGuard(Callback):
    """Turn exceptions raised by the trainer's loggers into counted warnings."""

    def __init__(self):
        self.failures: dict[str, int] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            for name in GUARDED:
                method = getattr(logger, name, None)
                if method is not None and not getattr(method, "_stemsep_guarded", False):
                    setattr(logger, name, self._guard(f"{type(logger).__name__}.{name}", method))

    def _guard(self, where: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any logger failure: warn, keep training
                count = self.failures[where] = self.failures.get(where, 0) + 1
                if count == 1 or count % WARN_EVERY == 0:
                    rank_zero_warn(f"stemsep: logger call {where} failed ({type(err).__name__}: {err}); "
                                   f"training goes on without it ({count} failure(s) so far)")
                return None

        guarded._stemsep_guarded = True  # type: ignore[attr-defined]
        return guarded
