"""Lightning callbacks of a training run.

Listed by default (the ``stemsep`` CLI shows them in ``--print_config``; ``null`` switches one off):
``LoggerGuard`` (``guards.logger``), ``NonFiniteGuard`` (``guards.nonfinite``) and
``TestResultWriter`` (``test_results``). Opt-in, in ``trainer.callbacks``: ``WandbMedia`` (W&B
media at validation) and ``CompileNetwork`` (``torch.compile``).
"""

from stemsep.training.callbacks.compile import CompileNetwork
from stemsep.training.callbacks.logger_guard import LoggerGuard
from stemsep.training.callbacks.nonfinite import NonFiniteGuard
from stemsep.training.callbacks.test_results import TestResultWriter
from stemsep.training.callbacks.wandb_media import WandbMedia

__all__ = ["CompileNetwork", "LoggerGuard", "NonFiniteGuard", "TestResultWriter", "WandbMedia"]
