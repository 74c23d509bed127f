"""``NonFiniteGuard``: skip optimizer steps whose loss or gradients are NaN/Inf; stop after N in a row.

One bad batch (a corrupt sample, an overflow) must not destroy a run of several days: the step
is skipped and counted, and training goes on. A run that keeps producing non-finite values is
diverging: after ``max_consecutive`` skipped steps in a row it writes a checkpoint of the last
good weights and stops with a one-line :class:`~stemsep.errors.StemsepError`.

Skipping really skips: every gradient is set to ``None`` before ``optimizer.step()``, and
PyTorch optimizers leave parameters without a gradient untouched (no momentum update, no
step count), unlike zeroed gradients which Adam would still follow through its moments. The
LR scheduler and the global step still advance (Lightning counts the step), so the schedule
stays aligned with the step count.

Under DDP the gradients are already all-reduced when the guard looks at them, so every rank
takes the same decision. With ``16-mixed`` precision the GradScaler handles overflowing
gradients itself; the guard then only checks the loss.

The ``stemsep`` CLI lists it as ``guards.nonfinite`` (``max_consecutive``, default 10; ``null``:
off); :class:`~stemsep.training.SeparationModule` adds one from Python when the trainer has none
(``max_nonfinite_steps``, default 10). ``train/nonfinite_skipped`` (total) is logged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from stemsep.errors import StemsepError

DEFAULT_MAX_CONSECUTIVE = 10


class NonFiniteGuard(Callback):
    """Skip and count optimizer steps with a non-finite loss or gradient.

    Args:
        max_consecutive: stop (checkpoint, then error) after this many skipped steps in a row
            (``None``: 10, or the module's ``max_nonfinite_steps`` when the stemsep CLI builds it).
    """

    def __init__(self, max_consecutive: int | None = None):
        max_consecutive = DEFAULT_MAX_CONSECUTIVE if max_consecutive is None else int(max_consecutive)
        if max_consecutive < 1:
            raise StemsepError(f"max_nonfinite_steps must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self._loss_finite: torch.Tensor | None = None  # stays on the device: no sync per micro-batch

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        # with gradient accumulation, any non-finite micro-batch loss spoils the step
        finite = torch.isfinite(loss.detach()).all()
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        problem = None if self._loss_finite is None or bool(self._loss_finite) else "loss"
        if problem is None and "16-mixed" not in str(trainer.precision):
            bad = _first_non_finite(pl_module, params)
            problem = None if bad is None else f"gradient of {bad}"
        self._loss_finite = None
        if problem is None:
            self.consecutive = 0
        else:
            for p in params:
                p.grad = None  # the optimizer skips parameters without a gradient: weights and state unchanged
            self.skipped += 1
            self.consecutive += 1
            rank_zero_warn(f"stemsep: non-finite {problem} at step {trainer.global_step}: optimizer step skipped "
                           f"({self.consecutive} in a row, {self.skipped} in total)")
        pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)
        if self.consecutive >= self.max_consecutive:
            in_a_row = self.consecutive
            path = self._save(trainer)
            raise StemsepError(f"training diverged: non-finite loss or gradients in {in_a_row} steps in a row "
                               f"(max_nonfinite_steps={self.max_consecutive}) at step {trainer.global_step}; "
                               f"last good weights saved to {path} (lower the learning rate, enable gradient "
                               "clipping, or check the data, then resume with --ckpt_path)")

    def _save(self, trainer: Trainer) -> Path:
        callback = trainer.checkpoint_callback
        folder = Path(getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints")
        path = folder / f"nonfinite-step={trainer.global_step}.ckpt"
        self.consecutive = 0  # a resume from this checkpoint starts a fresh count
        trainer.save_checkpoint(path)  # Lightning writes it atomically (temporary file, then rename)
        return path


def _first_non_finite(module: torch.nn.Module, params: list[torch.Tensor]) -> str | None:
    """Name of the first parameter whose gradient holds NaN or Inf, else None (one sync)."""
    if not params:
        return None
    flags = torch.stack([torch.isfinite(p.grad).all() for p in params])
    if bool(flags.all()):
        return None
    index = int((~flags).nonzero()[0])
    names = {id(p): name for name, p in module.named_parameters()}
    return names.get(id(params[index]), "a parameter")
