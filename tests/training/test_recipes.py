"""Every recipe runs: ``--trainer.fast_dev_run=2`` with a tiny network on synthetic shards (CPU).

(``--print_config`` of every recipe is tests/test_configs.py::test_recipe_resolves_with_lightning_cli.)
"""

import sys
from pathlib import Path

import pytest

from helpers import REPO
from helpers.recipes import RECIPES, command_of, resolved_config, save_tiny, tiny_overrides
from stemsep.cli import main

PAPER_RECIPES = ["htdemucs.yaml", "htdemucs_sparse.yaml", "hdemucs.yaml", "htdemucs_ft.yaml",
                 "bs_roformer.yaml", "mel_band_roformer.yaml", "hstasnet.yaml"]


def test_the_recipes_are_there():
    names = {p.relative_to(REPO / "recipes").as_posix() for p in RECIPES}
    assert {*PAPER_RECIPES, "eval.yaml", "quickstart.yaml", "ablations/base.yaml",
            "ablations/short_segment.yaml", "ablations/no_remix.yaml"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_header_says_what_how_and_expected(recipe: Path):
    header = "".join(line for line in recipe.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert "Launch:" in header and "stemsep " in header
    if recipe.name in PAPER_RECIPES:  # multi-GPU / multi-node launches and the paper's figure
        assert "--trainer.devices" in header and "--trainer.num_nodes" in header
        assert "srun" in header and "torchrun" in header and "dB" in header


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_fast_dev_run(recipe: Path, shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    args = [command_of(recipe), "--config", str(recipe), *tiny_overrides(shards, tmp_path / "run"),
            "--trainer.fast_dev_run", "2"]
    config = resolved_config(recipe, capsys)
    logger = config["trainer"].get("logger")
    if isinstance(logger, dict):  # W&B and friends: their folders under tmp_path, not the repo's runs/
        args += ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    last_callback = (config["trainer"].get("callbacks") or [None])[-1]
    if isinstance(last_callback, dict) and "dirpath" in (last_callback.get("init_args") or {}):
        args += ["--trainer.callbacks.dirpath", str(tmp_path / "checkpoints")]  # sets the last callback's
    if config["model"].get("init_from"):
        # TinyNet keeps the recipe network's sources (e.g. one stem for vocals_ft): so does its base
        sources = config["model"]["net"].get("init_args", {}).get("sources")
        args += ["--model.init_from", str(save_tiny(tmp_path / "pretrained.ckpt", sources=sources))]
    if config["model"].get("lora"):  # adapters on TinyNet's two convolutions instead of the recipe's layers
        args += ["--model.lora.target_modules", '["body.0", "body.2"]']
    if command_of(recipe) == "test":
        args += ["--model.test_results_dir", str(tmp_path / "results")]
    try:
        assert main(args) == 0
    finally:  # a W&B run started by the recipe's logger must not leak into later tests
        if "wandb" in sys.modules:
            sys.modules["wandb"].finish()
    out = capsys.readouterr().out
    if command_of(recipe) == "test":
        assert (tmp_path / "results" / "summary.json").is_file()
    else:
        assert "valid nSDR (dB)" in out  # validation ran on the synthetic songs
