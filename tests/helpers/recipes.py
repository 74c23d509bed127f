"""Helpers for tests that run recipes: tiny network, synthetic shards, CPU, no real paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from helpers import REPO, TinyNet
from stemsep.cli import main
from stemsep.contract import network_config
from stemsep.io.checkpoint import save_checkpoint
from stemsep.training.cli import StemsepCLI

RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def command_of(recipe: Path) -> str:
    """``test`` for the evaluation recipe, ``fit`` for the training ones."""
    return "test" if recipe.name == "eval.yaml" else "fit"


def resolved_config(recipe: Path, capsys, *extra: str) -> dict:
    """The recipe as LightningCLI resolves it (``--print_config``), with ``extra`` arguments after it
    (e.g. ``--data FRAGMENT``): recipes include fragments and other recipes (``config: ...``), so
    their own YAML holds only part of the config."""
    with pytest.raises(SystemExit) as exit_info:
        main([command_of(recipe), "--config", str(recipe), *extra, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def tiny_overrides(shards: Path, out: Path) -> list[str]:
    """Run any recipe on the sharded synthetic corpus with TinyNet on CPU, writing under ``out``."""
    data = "--data.init_args."
    return [
        "--model.net", "helpers.nets.TinyNet",
        f"{data}train_manifest", str(shards / "train.json"),
        f"{data}valid_manifest", str(shards / "test.json"),
        f"{data}test_manifest", str(shards / "test.json"),
        f"{data}prepare", "null", f"{data}synthetic", "null",
        f"{data}segment", "0.5", f"{data}batch_size", "2", f"{data}num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "1",
        "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false",
    ]


def save_tiny(path: Path, seed: int = 0, sources: list[str] | None = None) -> Path:
    """A stemsep checkpoint of a seeded TinyNet (stands for a pretrained or imported model) with
    ``sources`` (default TinyNet's four)."""
    torch.manual_seed(seed)
    net = TinyNet(sources=sources)
    return save_checkpoint(path, net, network_config(net))


class BuildOnly(StemsepCLI):
    """``stemsep fit`` up to the point where the trainer would start: the classes are built and linked."""

    def _run_subcommand(self, subcommand: str) -> None:
        pass
