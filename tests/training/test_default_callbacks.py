"""stemsep's default callbacks (LoggerGuard, NonFiniteGuard, TestResultWriter) are config keys of
the CLI (visible, switchable off, never duplicated), still added from Python when the trainer has
none. (The data follows the network: tests/training/test_data_follows_network.py.)"""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import stemsep.training.cli  # noqa: F401  (Lightning binds its log handler to stderr now, not to a test's capsys)
from helpers import REPO, TinyNet
from stemsep.cli import main
from stemsep.errors import StemsepError
from stemsep.training import SeparationModule
from stemsep.training.callbacks import LoggerGuard, NonFiniteGuard, TestResultWriter
from stemsep.training.cli import StemsepCLI

QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")
DEFAULTS = (LoggerGuard, NonFiniteGuard, TestResultWriter)


def _build(*args: str) -> StemsepCLI:
    """The stemsep LightningCLI on ``args``, built but not run."""
    saved, sys.argv = sys.argv, ["stemsep"]  # LightningCLI warns when both args and sys.argv hold options
    try:
        return StemsepCLI(SeparationModule, L.LightningDataModule, subclass_mode_data=True, run=False,
                          save_config_callback=None, args=list(args))
    finally:
        sys.argv = saved


def _cli(*args: str) -> StemsepCLI:
    """The quickstart with TinyNet, built but not run."""
    return _build("--config", QUICKSTART, "--model.net", "helpers.nets.TinyNet", *args)


def _count(trainer: L.Trainer) -> dict[type, int]:
    return {kind: sum(isinstance(c, kind) for c in trainer.callbacks) for kind in DEFAULTS}


def test_cli_lists_the_defaults_and_the_module_adds_none():
    cli = _cli()
    assert _count(cli.trainer) == {LoggerGuard: 1, NonFiniteGuard: 1, TestResultWriter: 1}
    assert cli.model.configure_callbacks() == []  # the config's are the only ones
    assert isinstance(cli.model.hparams["net"], dict)  # built from the config: hparams are the plain config
    assert next(c for c in cli.trainer.callbacks if isinstance(c, NonFiniteGuard)).max_consecutive == 10


def test_a_recipe_switches_a_guard_off(tmp_path):
    recipe = tmp_path / "no_guard.yaml"
    recipe.write_text(f"# quickstart without the NaN guard\nconfig: {QUICKSTART}\nguards.nonfinite: null\n")
    cli = _build("--config", str(recipe), "--model.net", "helpers.nets.TinyNet")
    assert _count(cli.trainer) == {LoggerGuard: 1, NonFiniteGuard: 0, TestResultWriter: 1}
    assert _count(_cli("--test_results", "null", "--guards.logger", "null").trainer) == {
        LoggerGuard: 0, NonFiniteGuard: 1, TestResultWriter: 0}


def _limit(trainer: L.Trainer) -> int:
    return next(c for c in trainer.callbacks if isinstance(c, NonFiniteGuard)).max_consecutive


def test_max_nonfinite_steps_sets_the_guard_and_null_switches_it_off(capsys):
    assert _count(_cli("--model.max_nonfinite_steps", "null").trainer)[NonFiniteGuard] == 0
    assert _limit(_cli("--model.max_nonfinite_steps", "3").trainer) == 3  # one setting, as before
    # the guard's own value, when given, takes precedence
    assert _limit(_cli("--guards.nonfinite.init_args.max_consecutive", "4").trainer) == 4
    assert main(["fit", "--config", QUICKSTART, "--guards.nonfinite.init_args.max_consecutive", "0"]) == 2
    assert "guards.nonfinite max_consecutive must be >= 1, got 0" in capsys.readouterr().err
    assert main(["fit", "--config", QUICKSTART, "--model.max_nonfinite_steps", "0"]) == 2
    assert "max_nonfinite_steps must be >= 1 or null, got 0" in capsys.readouterr().err


def test_python_use_gets_the_defaults_once(tmp_path):
    g = torch.Generator().manual_seed(0)
    stems = torch.randn(4, 4, 2, 256, generator=g) * 0.1
    mine = NonFiniteGuard(3)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, default_root_dir=tmp_path, callbacks=[mine],
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(SeparationModule(TinyNet()), DataLoader(TensorDataset(stems.sum(1), stems), batch_size=2))
    assert _count(trainer) == {LoggerGuard: 1, NonFiniteGuard: 1, TestResultWriter: 1}
    assert mine in trainer.callbacks  # the trainer's own guard is kept, not replaced
    unattached = SeparationModule(TinyNet(), max_nonfinite_steps=None).configure_callbacks()
    assert [type(c) for c in unattached] == [LoggerGuard, TestResultWriter]


def test_test_results_folder_cannot_silently_disagree():
    module = SeparationModule(TinyNet(), test_results_dir="a")
    assert TestResultWriter().configured(module) == "a"
    assert TestResultWriter("a").configured(module) == "a"
    with pytest.raises(StemsepError, match=r"test_results.init_args.dirpath b and model.test_results_dir a"):
        TestResultWriter("b").configured(module)
