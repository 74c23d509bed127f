"""What a new user meets running a recipe without MUSDB18 or without a GPU (issue 23): the documented
overrides really swap the data (and the trainer, for the CPU), a missing manifest names the command and
the key before anything starts, and a GPU recipe on a CPU-only machine says so before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import REPO
from helpers.recipes import RECIPES, resolved_config
from stemsep.cli import main

SYNTHETIC = REPO / "configs" / "data" / "synthetic.yaml"
TRY_ON_CPU = REPO / "configs" / "overrides" / "try_on_cpu.yaml"
PAPER = REPO / "recipes" / "htdemucs.yaml"


@pytest.fixture(autouse=True)
def _elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # no data/musdb here, as on a fresh clone without MUSDB18
    monkeypatch.setattr("stemsep.training.cli.gpu_available", lambda: False)


def _id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_synthetic_data_fragment_replaces_the_recipes_songs(recipe: Path, capsys):
    recipe_data = resolved_config(recipe, capsys)["data"]["init_args"]
    data = resolved_config(recipe, capsys, "--data", str(SYNTHETIC))["data"]
    args = data["init_args"]
    for key in ("train_manifest", "valid_manifest", "test_manifest", "train_shards", "valid_shards",
                "test_shards", "keep_list"):
        assert args[key] is None, key
    assert args["prepare"]["root"] == "~/.cache/stemsep/quickstart" and args["synthetic"]["songs"] == 16
    assert args["segment"] == recipe_data["segment"]  # the recipe's (and its network's) segment stays
    assert args["sources"] == recipe_data["sources"]


@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_try_on_cpu_override_resolves_for_every_recipe(recipe: Path, capsys):
    config = resolved_config(recipe, capsys, "--config", str(TRY_ON_CPU))
    trainer, args = config["trainer"], config["data"]["init_args"]
    assert args["train_manifest"] is None and args["prepare"] is not None
    assert args["batch_size"] == 1 and args["epoch_batches"] == 2
    assert (trainer["accelerator"], trainer["precision"], trainer["devices"]) == ("cpu", "32-true", 1)
    # Lightning's default logger (CSV), not W&B: no account needed, and LearningRateMonitor (scnet.yaml) has one
    assert trainer["max_epochs"] == 1 and trainer["logger"] is None
    net = resolved_config(recipe, capsys)["model"]["net"]
    assert config["model"]["net"] == net  # the recipe's network, full size


def test_missing_manifest_is_one_line_naming_the_key_and_the_commands(capsys):
    assert main(["fit", "--config", str(PAPER), "--trainer.precision", "32-true"]) == 2
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("stemsep: error:")]
    assert len(err) == 1, captured.err
    assert "data.init_args.train_manifest: data/musdb/train.json: not found" in err[0]
    assert "stemsep shard --layout musdb" in err[0] and "--out data/musdb" in err[0]
    assert "--data configs/data/synthetic.yaml" in err[0]
    assert "Traceback" not in captured.err
    assert "Trainable params" not in captured.out + captured.err  # said before the network and the trainer start


def test_gpu_recipe_on_a_cpu_only_machine_says_so_before_training(capsys):
    main(["fit", "--config", str(PAPER)])  # stops at the missing manifest, after the note
    err = capsys.readouterr().err
    assert "note: no GPU here" in err and "bf16-mixed" in err and "--trainer.precision 32-true" in err
    assert err.index("note: no GPU here") < err.index("stemsep: error:")
    main(["fit", "--config", str(PAPER), "--trainer.precision", "32-true"])
    assert "note: no GPU" not in capsys.readouterr().err  # float32 on the CPU: nothing to say


def test_asking_for_a_gpu_without_one_is_one_line(capsys):
    assert main(["fit", "--config", str(PAPER), "--trainer.accelerator", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("stemsep: error: trainer.accelerator gpu: no CUDA GPU is visible")
    assert "Traceback" not in err
