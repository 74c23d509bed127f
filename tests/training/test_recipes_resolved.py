"""Each recipe resolves (``--print_config``) to what it resolved to before recipes were composed
from fragments (configs/trainer, configs/data, configs/model) and stemsep's default callbacks
became visible config keys: the snapshots in tests/fixtures/resolved_recipes were printed from
the recipes as they were, and only the renames and added keys listed here may differ.
A recipe whose settings change on purpose has its snapshot re-printed with the change, in the same
commit (``stemsep fit --config R --print_config``, less the ADDED keys): recipes/quickstart.yaml,
tuned to end in a usable model (issue 15: 1 s segments, 300 steps, OneCycleLR, ``last.ckpt``).
Renamed and moved keys are not re-printed: the snapshots keep the old names and ``renamed``/``moved``
apply the documented table to them, so this test shows that nothing else changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import REPO
from helpers.recipes import RECIPES, resolved_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "resolved_recipes"

# Documented renames (CHANGELOG.md, "Unreleased"): old class path -> new class path.
RENAMES = {
    "stemsep.callbacks.WandbMedia": "stemsep.training.callbacks.WandbMedia",
    "stemsep.callbacks.CompileNetwork": "stemsep.training.callbacks.CompileNetwork",
    # the default of model.optimizer (printed by recipes that keep it), moved with stemsep.module
    "stemsep.module.default_optimizer": "stemsep.training.module.default_optimizer",
    # stemsep.data grouped into subpackages (issue 24); the former path still imports
    "stemsep.data.datamodule.StemDataModule": "stemsep.data.loaders.StemDataModule",
}

# Keys that are new in every resolved recipe: the default callbacks, once added silently by
# SeparationModule.configure_callbacks and on_test_epoch_end, now listed (and switchable off).
ADDED = {
    "guards": {
        "logger": {"class_path": "stemsep.training.callbacks.LoggerGuard"},
        "nonfinite": {"class_path": "stemsep.training.callbacks.NonFiniteGuard",
                      "init_args": {"max_consecutive": None}},
    },
    "test_results": {"class_path": "stemsep.training.callbacks.TestResultWriter", "init_args": {"dirpath": None}},
}


# Keys that are new under `model` (issue 16): recipes written before them resolve them to these
# defaults; recipes that set them have them in their snapshot.
ADDED_MODEL = {"lora": None, "metrics": []}  # metrics: issue 26, validation metrics of the community

# Keys that are new under `data.init_args` of StemDataModule (issue 18: remote reads under faults).
# Issue 26: stem groups and full-mix targets (the mixture is every stored stem of a song).
ADDED_DATA = {"retries": 5, "timeout": 60.0, "backoff": 1.0, "stem_groups": None, "full_mix": True}


# Issue 24 ("one source of truth": the data follows the network, augmentations take the data's sample
# rate, Shift counts seconds). Documented in CHANGELOG.md, "Unreleased"; applied by `moved` below:
#   data.init_args.samplerate                    new, linked: the network's (model.net.init_args.samplerate,
#                                                or the Mel-Band RoFormer's sample_rate)
#   Shift init_args.shift: N (samples)           -> seconds: N / that rate; shift: null (the old key, still read)
#   ParametricEQ / Limiter / Mp3Codec
#     init_args.samplerate: R (R = that rate)    -> null (the old key, still read): the data gives the rate
#   data.init_args.sources / segment             unchanged values, now linked from the network (recipes no
#                                                longer state them in the data)
SAMPLERATE_AUGMENTATIONS = {f"stemsep.data.augment.{name}" for name in ("ParametricEQ", "Limiter", "Mp3Codec")}
# A value that changed because it is now linked, where it has no effect: recipe -> {data key: (before, after)}.
# `stemsep test` reads whole songs: the segment of eval.yaml's data is unused (was the old default, 10 s).
LINKED_UNUSED = {"eval.yaml": {"segment": (10.0, 7.8)}}


def network_samplerate(config: dict) -> int:
    init_args = config["model"]["net"]["init_args"]
    return init_args["samplerate"] if "samplerate" in init_args else init_args["sample_rate"]


def moved(config: dict, recipe: str) -> dict:
    """A snapshot of the resolved config before issue 24, with its renames and moves applied (see above)."""
    config = yaml.safe_load(yaml.safe_dump(config))  # a copy
    rate = network_samplerate(config)
    data = config["data"]["init_args"]
    data["samplerate"] = rate
    for key, (before, after) in LINKED_UNUSED.get(recipe, {}).items():
        assert data[key] == before, f"{recipe}: data.init_args.{key} is not the documented {before}"
        data[key] = after
    for aug in data.get("augmentations") or []:
        init_args = aug.get("init_args") if isinstance(aug, dict) else None
        if aug.get("class_path") == "stemsep.data.augment.Shift":
            init_args.update(seconds=init_args["shift"] / rate, shift=None)
        elif aug.get("class_path") in SAMPLERATE_AUGMENTATIONS:
            assert init_args["samplerate"] == rate, f"{recipe}: an augmentation's rate was not the data's"
            init_args["samplerate"] = None
    return config


# Keys that newer Lightning releases add to their own classes (with these defaults): not recipe settings,
# so a snapshot holds the same recipe whichever Lightning the pins allow (CI runs the lowest too).
ADDED_BY_LIGHTNING = {"lightning.pytorch.callbacks.EMAWeightAveraging": {"multi_avg_fn": None}}


def without_lightning_additions(value: Any) -> Any:
    """``value`` less the ADDED_BY_LIGHTNING keys that hold their default."""
    if isinstance(value, list):
        return [without_lightning_additions(item) for item in value]
    if not isinstance(value, dict):
        return value
    added = ADDED_BY_LIGHTNING.get(value.get("class_path"), {})
    out = {key: without_lightning_additions(item) for key, item in value.items()}
    if isinstance(out.get("init_args"), dict):
        out["init_args"] = {k: v for k, v in out["init_args"].items() if not (k in added and v == added[k])}
    return out


def fixture_of(recipe: Path) -> Path:
    """``recipes/ablations/base.yaml`` -> ``fixtures/resolved_recipes/recipes__ablations__base.yaml``."""
    return FIXTURES / "__".join(recipe.relative_to(REPO).parts)


def renamed(value: Any) -> Any:
    """``value`` with every class path of RENAMES replaced by its new name."""
    if isinstance(value, dict):
        return {key: renamed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [renamed(item) for item in value]
    return RENAMES.get(value, value) if isinstance(value, str) else value


def test_every_recipe_has_a_snapshot():
    assert sorted(fixture_of(recipe).name for recipe in RECIPES) == sorted(p.name for p in FIXTURES.glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_resolves_as_before(recipe: Path, capsys):
    name = recipe.relative_to(REPO / "recipes").as_posix()
    before = moved(renamed(yaml.safe_load(fixture_of(recipe).read_text())), name)
    after = resolved_config(recipe, capsys)
    for key, value in ADDED.items():
        assert after.pop(key) == value, f"{key} is not the documented default"
    for key, value in ADDED_MODEL.items():
        if key not in before["model"]:
            assert after["model"].pop(key) == value, f"model.{key} is not the documented default"
    data_before, data_after = before["data"].get("init_args", {}), after["data"].get("init_args", {})
    for key, value in ADDED_DATA.items():
        if key in data_after and key not in data_before:
            assert data_after.pop(key) == value, f"data.{key} is not the documented default"
    assert without_lightning_additions(after) == without_lightning_additions(before)


def test_renames_are_documented():
    changelog = (REPO / "CHANGELOG.md").read_text()
    start = changelog.index("## [Unreleased]")
    end = changelog.find("\n## ", start + 1)
    unreleased = changelog[start:end if end > 0 else None]
    for old, new in RENAMES.items():
        assert old in unreleased and new in unreleased
    for key in ADDED:
        assert f"`{key}" in unreleased
    for key in ADDED_MODEL:
        assert f"`model.{key}" in unreleased
    for key, value in ADDED_DATA.items():
        assert f"{key}={value}" in unreleased
    for key in ("data.init_args.samplerate", "`Shift` `init_args.shift`", "`init_args.seconds`", "ParametricEQ",
                "Limiter", "Mp3Codec"):
        assert key in unreleased, key
