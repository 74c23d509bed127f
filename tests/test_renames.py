"""Old import paths users may have in configs or checkpoints keep working, or fail with one line
naming the new path (the renames of the layered packages, listed in CHANGELOG.md)."""

from __future__ import annotations

import pytest
import torch

from helpers import REPO, TinyNet
from stemsep.cli import main
from stemsep.contract import network_config
from stemsep.data import MOVED
from stemsep.inference.bag import BagOfModels
from stemsep.io.checkpoint import load_separator, save_checkpoint


@pytest.mark.parametrize("name", ["WandbMedia", "CompileNetwork"])
def test_old_callback_paths_fail_with_the_new_path(name, capsys):
    import stemsep.callbacks

    with pytest.raises(AttributeError, match=f"moved to stemsep.training.callbacks.{name}"):
        getattr(stemsep.callbacks, name)
    assert main(["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), "--trainer.callbacks",
                 f"stemsep.callbacks.{name}", "--print_config"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"moved to stemsep.training.callbacks.{name}" in err


@pytest.mark.parametrize("name,new", [("FromCheckpoint", "stemsep.io.FromCheckpoint"),
                                      ("BagOfModels", "stemsep.inference.bag.BagOfModels")])
def test_moved_model_names_fail_with_the_new_path(name, new):
    import stemsep.models

    with pytest.raises(AttributeError, match=f"moved to {new}"):
        getattr(stemsep.models, name)


def test_config_naming_the_old_from_checkpoint_path_is_one_line(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "a.ckpt", TinyNet(), network_config(TinyNet()))
    assert main(["test", "--config", str(REPO / "recipes" / "eval.yaml"), "--model.net", "stemsep.models.FromCheckpoint",
                 "--model.net.checkpoint", str(ckpt), "--print_config"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "moved to stemsep.io.FromCheckpoint" in err


def test_checkpoint_with_the_old_bag_class_path_loads(tmp_path):
    torch.manual_seed(0)
    bag = BagOfModels([TinyNet(), TinyNet()])
    config = {"class_path": "stemsep.models.bag.BagOfModels",  # as stemsep bag wrote it before
              "init_args": {"models": [network_config(m) for m in bag.models], "weights": bag.weights}}
    loaded = load_separator(save_checkpoint(tmp_path / "bag.ckpt", bag, config))
    assert isinstance(loaded, BagOfModels)
    mix = torch.randn(1, 2, 64)
    torch.testing.assert_close(loaded(mix), bag.eval()(mix))


def test_remote_reader_moved_to_io_and_is_still_importable_from_data():
    """``stemsep.data.remote`` (before the checkpoint readers used it too) imports as
    ``stemsep.io.remote`` itself, with a warning naming the new path."""
    import stemsep.io.remote as new

    with pytest.warns(FutureWarning, match="^stemsep.data.remote moved to stemsep.io.remote$"):
        from stemsep.data.remote import RemoteReader, Retry
    assert (RemoteReader, Retry) == (new.RemoteReader, new.Retry)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_former_data_modules_import_as_their_new_home(old):
    """The modules of ``stemsep.data`` before its grouping into subpackages (issue 24) import as the
    module that now holds the code (the same object: monkeypatching, isinstance and pickles agree)."""
    import importlib
    import sys

    sys.modules.pop(f"stemsep.data.{old}", None)
    with pytest.warns(FutureWarning, match=f"^stemsep.data.{old} moved to {MOVED[old]}$"):
        module = importlib.import_module(f"stemsep.data.{old}")
    assert module is importlib.import_module(MOVED[old]) and module.__name__ == MOVED[old]
    assert module.__spec__.name == MOVED[old]


def test_config_naming_the_former_data_module_path_runs(capsys):
    """A config written before the grouping (``stemsep.data.datamodule.StemDataModule``) still resolves."""
    with pytest.raises(SystemExit) as done, pytest.warns(FutureWarning, match="stemsep.data.datamodule moved"):
        main(["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), "--data",
              "stemsep.data.datamodule.StemDataModule", "--print_config"])
    assert done.value.code == 0
    assert "class_path: stemsep.data.datamodule.StemDataModule" in capsys.readouterr().out


@pytest.mark.parametrize("augmentation,note", [
    ("{class_path: stemsep.data.augment.Shift, init_args: {shift: 44100}}",
     "Shift: init_args.shift 44100 counts samples (the old key): write seconds: 1 instead (44100 samples at 44100 Hz)"),
    ("{class_path: stemsep.data.augment.ParametricEQ, init_args: {samplerate: 44100}}",
     "ParametricEQ: init_args.samplerate 44100 is no longer needed (augmentations take the data's sample rate): "
     "drop the key"),
])
def test_old_augmentation_keys_in_a_config_still_work_with_a_note(augmentation, note, shards, tmp_path):
    """Issue 24: Shift's `shift` (samples) became `seconds`; the per-augmentation `samplerate` is the data's."""
    from helpers.recipes import (
        BuildOnly,  # built, not run
        tiny_overrides,
    )
    from stemsep.training.cli import run_lightning_cli

    with pytest.warns(FutureWarning) as notes:
        cli = run_lightning_cli(["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"),
                                 *tiny_overrides(shards, tmp_path), "--data.init_args.augmentations",
                                 f"[{augmentation}]"], BuildOnly)
    assert note in [str(n.message) for n in notes]
    (aug,) = cli.datamodule.augmentations
    assert aug.samplerate == 44100 and getattr(aug, "shift", 44100) == 44100
