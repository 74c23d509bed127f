"""The networks the recipes name, built as users build them, at full size.

For every recipe and every ``configs/model/*.yaml``: the config is resolved and instantiated by the
stemsep LightningCLI (so its config loader's types apply: jsonargparse reads ``growth: 2`` as ``2.0``),
the real network is built, and one training step runs on a short batch of the synthetic corpus with
the recipe's augmentations, loss, optimizer and schedule. tests/training/test_recipes.py runs every
recipe end to end with a tiny network instead; ``-m slow`` runs the documented try-on-CPU command
(configs/overrides/try_on_cpu.yaml) of every recipe.

Networks shared by several recipes take their step once (the first recipe that names them), but each
recipe still resolves and builds its own. The large RoFormers (STEP_IN_SLOW_SUITE: the Mel-Band RoFormer
recipe has 833 M parameters, about 13 GB with gradients and Adam's moments) step in the slow suite only.
"""

from __future__ import annotations

import gc
import json
import math
import re
from pathlib import Path

import pytest
import torch

from helpers import REPO
from helpers.recipes import RECIPES, BuildOnly, command_of
from stemsep.cli import main
from stemsep.training.cli import run_lightning_cli
from stemsep.training.module import SeparationModule

MODEL_CONFIGS = sorted((REPO / "configs" / "model").glob("*.yaml"))
TRY_ON_CPU = REPO / "configs" / "overrides" / "try_on_cpu.yaml"
# Full-size networks whose step takes 10-50 s here (2 cores): they step in the slow suite and still resolve
# and build in the default one, where the one-stem Mel-Band RoFormer of configs/model steps for the family.
STEP_IN_SLOW_SUITE = {"recipes/bs_roformer.yaml", "recipes/roformer_lora_ft.yaml", "recipes/mel_band_roformer.yaml",
                      "configs/model/bs_roformer.yaml"}
SECONDS = 0.5  # of each training example: full-size networks, short inputs

_stepped: dict[str, str] = {}  # model block (JSON) -> the first test that stepped it


def data_overrides(shards: Path) -> list[str]:
    """The recipe's data module on the test corpus' shards: its augmentations, one short example a batch
    (the network's segment too: the data follows it, and HT Demucs pads its inputs to it)."""
    data = "--data.init_args."
    return [f"{data}train_manifest", str(shards / "train.json"), f"{data}valid_manifest", str(shards / "test.json"),
            f"{data}test_manifest", "null", f"{data}train_shards", "null", f"{data}valid_shards", "null",
            f"{data}keep_list", "null", f"{data}prepare", "null", f"{data}synthetic", "null",
            "--model.net.init_args.segment", str(SECONDS), f"{data}segment", str(SECONDS),
            f"{data}batch_size", "1", f"{data}num_workers", "0"]


def instantiate(args: list[str]) -> BuildOnly:
    """The classes of a config as ``stemsep fit ARGS`` builds them (the same parser, subcommand and errors)."""
    return run_lightning_cli(["fit", *args], BuildOnly)


def one_step(module: SeparationModule, datamodule) -> None:
    """One optimizer step (two when the first moves fewer than half the parameters) of ``module`` on one batch of ``datamodule``'s training stream, as the
    trainer takes it (``training_step``, backward, the configured optimizer and scheduler)."""
    torch.manual_seed(0)
    mix, stems = next(iter(datamodule.train_dataset(rank=0, world_size=1)))[:2]
    assert mix.shape[0] == 1 and stems.shape[1] == len(module.sources)
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    trainable = {name: p.detach().clone() for name, p in module.net.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    module.train()
    params = dict(module.net.named_parameters())
    for _ in range(2):  # a second step for networks whose mask heads start at zero (HS-TasNet, as its reference)
        loss = module.training_step((mix, stems), 0)
        assert loss.ndim == 0 and math.isfinite(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if isinstance(configured, dict):
            configured["lr_scheduler"]["scheduler"].step()
        changed = [name for name, before in trainable.items() if not torch.equal(params[name].detach(), before)]
        if len(changed) >= len(trainable) // 2:
            break
    assert len(changed) >= len(trainable) // 2, f"only {len(changed)} of {len(trainable)} parameters moved"
    assert all(torch.isfinite(params[name]).all() for name in changed)
    if module.lora is not None:  # the base stays as it was: only adapters train
        assert all("lora_" in name for name in trainable)


def check_builds_and_steps(args: list[str], label: str, *, step: bool = True) -> SeparationModule:
    cli = instantiate(args)
    module = cli.model
    net = module.net
    assert isinstance(net, torch.nn.Module) and sum(p.numel() for p in net.parameters()) > 0
    key = json.dumps(cli.config["fit"].as_dict()["model"], sort_keys=True, default=str)
    if step and key not in _stepped:
        one_step(module, cli.datamodule)
        _stepped[key] = label
    return module


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # what a recipe writes (runs/...) stays here
    yield
    gc.collect()  # full-size networks (up to 3.3 GB) and their optimizers go before the next test builds one


def _id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def config_args(path: Path, shards: Path) -> list[str]:
    """The command line that resolves a recipe, or a network config as ``--model.net configs/model/X.yaml``
    (with the module's default L1 loss and Adam), on the test corpus (the data takes the network's sources)."""
    if path.parent.name != "model":
        return ["--config", str(path), *data_overrides(shards)]
    return ["--model.net", str(path), "--data", str(REPO / "configs/data/synthetic.yaml"), *data_overrides(shards)]


@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_recipe_builds_its_network_and_trains_a_step(recipe: Path, shards):
    check_builds_and_steps(config_args(recipe, shards), _id(recipe), step=_id(recipe) not in STEP_IN_SLOW_SUITE)


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=_id)
def test_model_config_builds_and_trains_a_step(config: Path, shards):
    """Each network config, at the parameter count its header states."""
    stated = re.search(r"^#.*?([\d,]+) parameters", config.read_text(), re.MULTILINE)
    assert stated, f"{config.name}: the header comment must state the parameter count"
    module = check_builds_and_steps(config_args(config, shards), _id(config),
                                    step=_id(config) not in STEP_IN_SLOW_SUITE)
    assert sum(p.numel() for p in module.net.parameters()) == int(stated.group(1).replace(",", ""))


@pytest.mark.slow
@pytest.mark.parametrize("path", [REPO / name for name in sorted(STEP_IN_SLOW_SUITE)], ids=_id)
def test_large_network_trains_a_step(path: Path, shards):
    _stepped.clear()
    check_builds_and_steps(config_args(path, shards), _id(path))


# What docs/recipes.md adds to the try command for a recipe too large for a 24 GB machine as it is.
TRY_EXTRA = {"recipes/mel_band_roformer.yaml": ["--data.init_args.num_workers", "0", "--data.init_args.segment", "2",
                                                "--trainer.callbacks.save_top_k", "0",
                                                "--trainer.callbacks.save_last", "false"]}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_documented_try_on_cpu_command(recipe: Path, tmp_path, capsys):
    """The command docs/recipes.md gives to try a recipe here, as typed (the synthetic corpus generated
    under a HOME of the test's own), with only what a test must add: a base checkpoint where the recipe
    fine-tunes one, and a results folder for ``test``."""
    home = tmp_path / "home"
    home.mkdir()
    args = [command_of(recipe), "--config", str(recipe), "--config", str(TRY_ON_CPU),
            "--data.init_args.prepare.root", str(home / "quickstart"), *TRY_EXTRA.get(_id(recipe), [])]
    module = check_builds_and_steps(args[1:], _id(recipe), step=False)  # the same arguments, built as `fit` does
    if module.init_from:
        from stemsep.contract import network_config
        from stemsep.io.checkpoint import save_checkpoint

        net = module.net
        if module.lora is not None:
            net = instantiate(["--config", str(recipe), "--model.lora", "null"]).model.net
        args += ["--model.init_from", str(save_checkpoint(tmp_path / "base.ckpt", net, network_config(net)))]
    if command_of(recipe) == "test":
        args += ["--model.test_results_dir", str(tmp_path / "results")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "nSDR (dB)" in out
