"""Every YAML in configs/ and recipes/ parses, and each network config builds a valid network."""

from pathlib import Path

import pytest
import yaml

from helpers import REPO
from stemsep.cli import main
from stemsep.contract import check_network
from stemsep.io.checkpoint import build_from_config

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
MODEL_CONFIGS = sorted((REPO / "configs" / "model").glob("*.yaml"))


def test_there_are_configs_and_recipes():
    assert MODEL_CONFIGS and RECIPES


@pytest.mark.parametrize("path", CONFIGS + RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses_and_is_documented(path: Path):
    text = path.read_text()
    assert isinstance(yaml.safe_load(text), dict)
    assert text.lstrip().startswith("#"), f"{path} must open with a comment saying what it is"


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.name)
def test_model_config_builds_a_network(path: Path):
    net = build_from_config(yaml.safe_load(path.read_text()), origin=str(path))
    check_network(net)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_recipe_resolves_with_lightning_cli(path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["net"]["class_path"]
