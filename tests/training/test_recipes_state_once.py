"""No recipe states its sources, training segment or sample rate twice (issue 24, "one source of truth").

Read as text, as a user reads it: the recipe's YAML plus every file it includes (``config:``) or names as a
value (``data: ../configs/data/x.yaml``, ``model.net: ...``), in the order jsonargparse reads them (a key
stated again replaces the earlier statement and whatever was under it). The network states the three facts;
the data follows it (tests/training/test_data_follows_network.py), so a recipe that says them in the data
too says them twice:

* ``sources``: only in the network (a data mapping that sums stems would be a fact of its own: allowed);
* a sample rate (``samplerate``/``sample_rate``): only in the network, never in the data, its
  augmentations or its ``prepare`` block;
* the segment: the data's may differ from the network's (Hybrid Demucs trains on 7.8 s, its ``segment`` is
  its inference chunk), but not restate it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import REPO
from helpers.recipes import RECIPES

RATE_KEYS = ("samplerate", "sample_rate")


def statements(path: Path, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, value, where)`` of every value ``path`` states, includes and files followed, in reading
    order. Lists are walked too (``data.init_args.augmentations.2.init_args.samplerate``)."""
    document = yaml.safe_load(path.read_text()) or {}
    out: list[tuple[str, Any, str]] = []
    include = document.pop("config", None) if isinstance(document, dict) else None
    if include is not None:
        out += statements((path.parent / include).resolve(), prefix)
    out += _walk(document, prefix, path)
    return out


def _label(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def _walk(value: Any, key: str, path: Path) -> list[tuple[str, Any, str]]:
    where = _label(path)
    if isinstance(value, str) and value.endswith((".yaml", ".yml")) and (path.parent / value).is_file():
        return [(key.rstrip("."), "<file>", where), *statements((path.parent / value).resolve(), key)]
    if isinstance(value, dict):
        out = [(key.rstrip("."), "<block>", where)] if key else []
        for child, item in value.items():
            out += _walk(item, f"{key}{child}.", path)
        return out
    if isinstance(value, list):
        out = [(key.rstrip("."), "<list>", where)]
        for index, item in enumerate(value):
            out += _walk(item, f"{key}{index}.", path)
        return out
    return [(key.rstrip("."), value, where)]


def in_effect(recipe: Path) -> dict[str, tuple[Any, str]]:
    """The statements still in effect once the recipe is read: a key stated again drops the earlier
    statement and everything stated under it."""
    effect: dict[str, tuple[Any, str]] = {}
    for key, value, where in statements(recipe):
        for old in [k for k in effect if k == key or k.startswith(key + ".")]:
            del effect[old]
        effect[key] = (value, where)
    return effect


def stated_twice(recipe: Path) -> list[str]:
    """What the recipe states twice (empty: each fact once)."""
    effect = in_effect(recipe)
    problems = []
    for key, (value, where) in effect.items():
        leaf = key.rsplit(".", 1)[-1]
        if not key.startswith("data."):
            continue
        if leaf == "sources" and value != "<block>":  # (a mapping is a block: the data's own fact)
            problems.append(f"{key} in {where}: the network's sources, stated again")
        if leaf in RATE_KEYS:
            problems.append(f"{key} in {where}: a sample rate in the data (it is the network's)")
    net_segment = effect.get("model.net.init_args.segment", (None,))[0]
    data_segment, where = effect.get("data.init_args.segment", (None, None))
    if data_segment is not None and net_segment is not None and float(data_segment) == float(net_segment):
        problems.append(f"data.init_args.segment in {where}: the network's segment {net_segment}, stated again")
    return problems


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_states_sources_segment_and_samplerate_once(recipe: Path):
    assert stated_twice(recipe) == []


def test_every_recipe_states_its_networks_facts():
    """The network is where the facts are: a net block with sources and a segment in every recipe."""
    for recipe in RECIPES:
        effect = in_effect(recipe)
        assert "model.net.init_args.sources" in effect and "model.net.init_args.segment" in effect, recipe


def test_the_check_finds_what_it_looks_for(tmp_path):
    """A recipe as they were written before issue 24 fails, each of the three ways."""
    (tmp_path / "net.yaml").write_text("class_path: stemsep.models.HTDemucs\n"
                                       "init_args: {sources: [drums, bass], segment: 2, samplerate: 44100}\n")
    (tmp_path / "data.yaml").write_text("class_path: stemsep.data.loaders.StemDataModule\n"
                                        "init_args:\n  sources: [drums, bass]\n  segment: 7.8\n  augmentations:\n"
                                        "    - class_path: stemsep.data.augment.Mp3Codec\n"
                                        "      init_args: {samplerate: 44100}\n")
    (tmp_path / "base.yaml").write_text("model:\n  net: net.yaml\ndata: data.yaml\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("config: base.yaml\nmodel.net.init_args.segment: 1.0\ndata.init_args.segment: 1.0\n")
    problems = stated_twice(recipe)
    assert len(problems) == 3, problems
    assert any("sources" in p for p in problems) and any("samplerate" in p for p in problems)
    assert any("segment" in p for p in problems)
    recipe.write_text("config: base.yaml\nmodel.net.init_args.segment: 1.0\ndata.init_args.segment: 7.8\n")
    assert not any("segment" in p for p in stated_twice(recipe))  # a segment of the data's own
    (tmp_path / "plain.yaml").write_text("class_path: stemsep.data.loaders.StemDataModule\n"
                                         "init_args: {batch_size: 2}\n")
    recipe.write_text("config: base.yaml\ndata: plain.yaml\n")  # a data block replaced as a whole drops its keys
    assert stated_twice(recipe) == []
