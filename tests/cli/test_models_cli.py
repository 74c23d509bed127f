"""``stemsep models`` and model names in every command, as users type them (issue 28): the tiny releases of
tests/helpers/pretrained.py on a real server on 127.0.0.1; ``fit`` fine-tunes from a registry model
(``model.init_from: NAME``) and the LoRA recipe trains on a registry base, on the synthetic shards."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import yaml

from helpers import REPO
from helpers.pretrained import ORIGIN, cli_error, served_fixture
from helpers.recipes import tiny_overrides
from helpers.tools import song
from stemsep.cli import main
from stemsep.inference.bag import BagOfModels
from stemsep.io.checkpoint import load_checkpoint, load_network, load_separator
from stemsep.io.pretrained import fetch_model

served = served_fixture()


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def row(table: list[str], name: str) -> list[str]:
    return next(line.split() for line in table if line.split()[0] == name)


def test_list_info_download_remove(served, capsys):
    assert main(["models", "list"]) == 0
    table = lines(capsys)
    assert table[0].split() == ["name", "family", "sources", "size", "SDR", "(dB)", "cached"]
    assert row(table, "tiny_htdemucs") == ["tiny_htdemucs", "demucs", "drums,bass,other,vocals", "?", "9.00", "no"]
    assert row(table, "tiny_roformer_unverified")[-2:] == ["no", "(unverified)"]
    assert {"htdemucs", "htdemucs_ft", "scnet"} <= {line.split()[0] for line in table[1:-1]}  # the shipped ones
    assert main(["models", "download", "tiny_htdemucs"]) == 0
    path = Path(lines(capsys)[0].split(": ", 1)[1])
    assert path.is_file() and path.parent == served.cache / "tiny_htdemucs"
    assert main(["models", "list"]) == 0
    size = f"{path.stat().st_size / 1e6:,.0f}"
    assert row(lines(capsys), "tiny_htdemucs")[3:] == [size, "MB", "9.00", "yes"]
    assert main(["models", "info", "tiny_htdemucs"]) == 0
    info = dict(line.split(": ", 1) for line in lines(capsys))
    assert info["cached"] == str(path) and info["family"] == "demucs" and info["license"] == "MIT (test)"
    assert served.files["tiny_htdemucs"][0].name in info["fetched"] and '"sha256": "' in info["fetched"]
    assert main(["models", "download", "tiny_htdemucs", "-o", str(served.folder.parent / "copy.ckpt")]) == 0
    assert lines(capsys) == [f"tiny_htdemucs: {served.folder.parent / 'copy.ckpt'}"]
    assert (served.folder.parent / "copy.ckpt").read_bytes() == path.read_bytes()
    assert main(["models", "remove", "tiny_htdemucs"]) == 0
    assert lines(capsys) == [f"tiny_htdemucs: removed {path}"] and not path.exists()
    assert main(["models", "remove", "tiny_htdemucs"]) == 0
    assert lines(capsys) == ["tiny_htdemucs: not in the cache"]


def test_add_installs_files_fetched_by_hand_offline(served, tmp_path, monkeypatch, capsys):
    served.server.close()
    monkeypatch.setenv("STEMSEP_OFFLINE", "1")
    files = [str(p) for p in served.files["tiny_ft"]]
    wrong = cli_error(["models", "add", *files[:3], files[0], "--name", "tiny_ft"], capsys)
    assert "sha256" in wrong and "nothing was cached" in wrong
    assert "needs 4 file(s)" in cli_error(["models", "add", files[0], "--name", "tiny_ft"], capsys)
    assert main(["models", "add", *reversed(files), "--name", "tiny_ft"]) == 0  # matched by file name
    bag = load_separator(fetch_model("tiny_ft"))
    assert isinstance(bag, BagOfModels) and bag.weights == [[float(i == j) for j in range(4)] for i in range(4)]
    mix = song(tmp_path / "song.wav", 0.5)
    assert main(["separate", str(mix), "--model", "tiny_ft", "--device", "cpu", "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "song").iterdir()) == [
        "bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    # an unverified entry: the user vouches for the file, which is then pinned
    assert main(["models", "add", str(served.files["tiny_roformer"][0]), "--name", "tiny_roformer_unverified"]) == 0
    assert fetch_model("tiny_roformer_unverified").is_file()


def test_bad_arguments_are_one_line(served, capsys):
    assert "give one model name" in cli_error(["models", "info"], capsys)
    assert "--name NAME" in cli_error(["models", "add", "x.th"], capsys)
    assert "-o is for download and add" in cli_error(["models", "list", "-o", "x.ckpt"], capsys)
    assert "no such model" in cli_error(["models", "download", "nope"], capsys)
    err = cli_error(["models", "download", "tiny_roformer_unverified"], capsys)
    assert "--trust-unverified" in err and f"{ORIGIN}/tinyroformer.ckpt" in err


def test_bag_export_and_quantize_take_a_name(served, tmp_path):
    """Every command that takes a checkpoint takes a registry name (fetched once)."""
    assert main(["bag", "--models", "tiny_htdemucs", "tiny_htdemucs", "-o", str(tmp_path / "bag.ckpt")]) == 0
    bag = load_separator(tmp_path / "bag.ckpt")
    assert isinstance(bag, BagOfModels) and len(bag.models) == 2
    assert main(["quantize", "tiny_roformer", "-o", str(tmp_path / "q.ckpt")]) == 0
    assert load_checkpoint(tmp_path / "q.ckpt")["hyper_parameters"]["quantization"]
    assert main(["export", "tiny_htdemucs", "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    assert (tmp_path / "m.pt").is_file()
    assert served.downloads("tiny_htdemucs") == 1 and served.downloads("tiny_roformer") == 1


# ------------------------------------------------------------------------------- training
def net_fragment(name: str, path: Path) -> Path:
    """A config fragment whose ``model.net`` is the registry model's network (fresh weights)."""
    config = load_network(fetch_model(name))[1]["hyper_parameters"]["net"]
    init = {k: float(v) if isinstance(v, Fraction) else v for k, v in config["init_args"].items()}
    path.write_text(yaml.safe_dump({"model": {"net": {"class_path": config["class_path"], "init_args": init}}}))
    return path


def model_overrides(shards: Path, out: Path) -> list[str]:
    """helpers.recipes.tiny_overrides without its network and segment: the registry model's are used."""
    overrides = tiny_overrides(shards, out)
    for key in ("--model.net", "--data.init_args.segment"):
        at = overrides.index(key)
        del overrides[at:at + 2]
    return overrides


def run_recipe(recipe: str, shards: Path, tmp_path: Path, *extra: str) -> None:
    """``stemsep fit --config recipes/<recipe>`` on the synthetic shards, its outputs under ``tmp_path``."""
    try:
        assert main(["fit", "--config", str(REPO / "recipes" / recipe), *model_overrides(shards, tmp_path / "run"),
                     "--trainer.logger", "false", "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"),
                     "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", *extra]) == 0
    finally:
        if "wandb" in sys.modules:
            sys.modules["wandb"].finish()


@pytest.mark.slow  # a Lightning run: ~17 s on 2 busy cores
def test_fit_fine_tunes_from_a_registry_model(served, shards, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    fragment = net_fragment("tiny_htdemucs", tmp_path / "net.yaml")
    run_recipe("htdemucs_ft.yaml", shards, tmp_path, "--config", str(fragment), "--model.init_from", "tiny_htdemucs",
               "--data.init_args.batch_size", "2")
    trained = load_separator(tmp_path / "ckpt" / "last.ckpt")
    start = load_separator(fetch_model("tiny_htdemucs"))
    moved = max((v - start.state_dict()[k]).abs().max() for k, v in trained.state_dict().items()
                if v.is_floating_point())
    assert 0 < moved < 0.01  # two AdamW steps at lr 1e-4 from the registry's weights, not from a fresh init
    assert served.downloads("tiny_htdemucs") == 1


@pytest.mark.slow  # a Lightning run: ~14 s
def test_lora_recipe_on_a_registry_base(served, shards, tmp_path, monkeypatch):
    pytest.importorskip("peft")
    monkeypatch.setenv("WANDB_MODE", "offline")
    # as docs/pretrained.md says: the network is the registry model's (FromCheckpoint), its base too
    run_recipe("roformer_lora_ft.yaml", shards, tmp_path, "--model.net", "stemsep.io.FromCheckpoint",
               "--model.net.checkpoint", "tiny_roformer", "--model.init_from", "tiny_roformer",
               "--data.init_args.batch_size", "2")
    ckpt = load_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    base = ckpt["stemsep_lora"]["base"]
    assert base["path"] == "tiny_roformer" and base["resolved"] == str(fetch_model("tiny_roformer"))
    assert all("lora_" in k for k in ckpt["state_dict"])  # adapters only
    assert main(["merge-lora", str(tmp_path / "ckpt" / "last.ckpt"), "-o", str(tmp_path / "merged.ckpt")]) == 0
    merged, start = load_separator(tmp_path / "merged.ckpt"), load_separator(fetch_model("tiny_roformer"))
    assert merged.state_dict().keys() == start.state_dict().keys()
    mix = torch.randn(1, 2, 8192)
    with torch.no_grad():
        assert (merged(mix) - start(mix)).abs().max() < 1.0  # the base plus small adapters


@pytest.mark.slow  # a Lightning test run: ~10 s
def test_test_command_scores_a_registry_model(served, shards, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["test", "--config", str(REPO / "recipes" / "eval.yaml"), *model_overrides(shards, tmp_path / "eval"),
                 "--model.net", "stemsep.io.FromCheckpoint", "--model.net.checkpoint", "tiny_roformer",
                 "--model.test_results_dir", str(results)]) == 0
    assert "test nSDR (dB)" in capsys.readouterr().out and (results / "summary.json").is_file()
    assert served.downloads("tiny_roformer") == 1
