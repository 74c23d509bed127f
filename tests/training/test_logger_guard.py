"""A logger that fails (W&B unreachable, disk full under the log folder) warns; training goes on."""

from __future__ import annotations

import errno

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger
from torch.utils.data import DataLoader, TensorDataset

from helpers import TinyNet
from stemsep.training.module import SeparationModule


class UnreachableLogger(Logger):
    """Every call fails, as a remote logger does when its service cannot be reached."""

    name, version = "unreachable", 0

    def log_metrics(self, metrics, step=None):
        raise ConnectionError("cannot reach api.wandb.ai")

    def log_hyperparams(self, params, *args, **kwargs):
        raise ConnectionError("cannot reach api.wandb.ai")


def _fit(tmp_path, logger, steps=6) -> SeparationModule:
    g = torch.Generator().manual_seed(0)
    stems = torch.randn(steps * 2, 4, 2, 256, generator=g) * 0.1
    module = SeparationModule(TinyNet())
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=logger, log_every_n_steps=1,
                        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(module, DataLoader(TensorDataset(stems.sum(1), stems), batch_size=2))
    assert trainer.global_step == steps
    return module


def test_unreachable_logger_warns_and_training_goes_on(tmp_path):
    with pytest.warns(UserWarning, match=r"logger call UnreachableLogger.log_metrics failed \(ConnectionError: "
                                         r"cannot reach api.wandb.ai\); training goes on"):
        _fit(tmp_path, UnreachableLogger())


def test_disk_full_under_the_log_folder(tmp_path, monkeypatch):
    logger = CSVLogger(tmp_path / "logs")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logger.experiment, "save", full)  # the CSV writer's flush to disk
    monkeypatch.setattr(logger.experiment, "log_hparams", full)
    with pytest.warns(UserWarning, match=r"CSVLogger\.(save|log_hyperparams) failed \(OSError: .*No space left"):
        _fit(tmp_path, logger)
