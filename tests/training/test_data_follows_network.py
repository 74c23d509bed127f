"""The data follows the network (issue 24, "one source of truth"): ``data.init_args.sources``, ``segment``
and ``samplerate`` left unset are ``model.net``'s, shown by ``--print_config`` and used by the built data
module; set to other values, they stop the run with one line naming the key. The module no longer looks at
the data module at all."""

from __future__ import annotations

import inspect
import sys

import lightning as L
import pytest
import yaml

import stemsep.training.cli  # noqa: F401  (Lightning binds its log handler to stderr now, not to a test's capsys)
import stemsep.training.module
from helpers import REPO, TinyNet
from helpers.recipes import BuildOnly, save_tiny, tiny_overrides
from stemsep.cli import main
from stemsep.data.augment import Limiter, ParametricEQ, Shift
from stemsep.data.loaders.datamodule import DEFAULT_SEGMENT, StemDataModule
from stemsep.errors import StemsepError
from stemsep.training.cli import run_lightning_cli
from stemsep.training.linking import link_data

QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")
HDEMUCS = str(REPO / "recipes" / "hdemucs.yaml")


def printed(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART, *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def one_line_error(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("stemsep: error: ") and "Traceback" not in "\n".join(err)
    return err[-1].removeprefix("stemsep: error: ")


def test_print_config_shows_the_networks_values_in_the_data(capsys):
    config = printed(capsys)
    net, data = config["model"]["net"]["init_args"], config["data"]["init_args"]
    assert data["sources"] == net["sources"] == ["drums", "bass", "other", "vocals"]
    assert data["segment"] == net["segment"] == 1.0
    assert data["samplerate"] == net["samplerate"] == 44100
    # One change of the network's, on the command line, is the data's too.
    config = printed(capsys, "--model.net.init_args.segment", "0.7", "--model.net.init_args.sources", "[vocals, other]")
    assert config["data"]["init_args"]["segment"] == 0.7
    assert config["data"]["init_args"]["sources"] == ["vocals", "other"]
    # A network whose rate is `sample_rate` (Mel-Band RoFormer) links too.
    config = printed(capsys, "--model.net", str(REPO / "configs/model/mel_band_roformer_small.yaml"),
                     "--model.net.init_args.sample_rate", "32000")
    assert config["data"]["init_args"]["samplerate"] == 32000


def test_data_set_like_the_network_is_accepted(capsys):
    config = printed(capsys, "--data.init_args.sources", "[drums, bass, other, vocals]",
                     "--data.init_args.segment", "1.0", "--data.init_args.samplerate", "44100")
    assert config["data"]["init_args"]["sources"] == ["drums", "bass", "other", "vocals"]


@pytest.mark.parametrize("extra", [[], ["--print_config"]], ids=["fit", "print_config"])
def test_data_sources_other_than_the_networks_are_one_line(extra, shards, tmp_path, capsys):
    message = one_line_error(capsys, "fit", "--config", QUICKSTART, *tiny_overrides(shards, tmp_path / "run"),
                             "--data.init_args.sources", "[vocals, drums, bass, other]", *extra)
    assert message == ("data.init_args.sources ['vocals', 'drums', 'bass', 'other'] differ from model.net's sources "
                       "['drums', 'bass', 'other', 'vocals']: the data follows the network; leave "
                       "data.init_args.sources unset, or give the same names in the same order")


def test_data_sample_rate_other_than_the_networks_is_one_line(capsys):
    message = one_line_error(capsys, "fit", "--config", QUICKSTART, "--data.init_args.samplerate", "48000",
                             "--print_config")
    assert message.startswith("data.init_args.samplerate 48000 differs from model.net's samplerate 44100")


def test_segment_of_a_network_that_pads_to_it_cannot_differ(shards, tmp_path, capsys):
    args = ["fit", "--config", QUICKSTART, *tiny_overrides(shards, tmp_path / "run"),
            "--model.net", str(REPO / "configs/model/htdemucs_small.yaml"), "--trainer.fast_dev_run", "1"]
    message = one_line_error(capsys, *args, "--data.init_args.segment", "0.5")  # the network: 2 s
    assert message.startswith("data.init_args.segment 0.5 s differs from model.net's segment 2 s: the network pads")
    assert "set model.net.init_args.segment alone" in message
    # Set alone, the network's segment is the data's.
    cli = run_lightning_cli([*args[:-2], "--data.init_args.segment", "null", "--model.net.init_args.segment", "0.5"],
                            BuildOnly)
    assert cli.datamodule.segment == 0.5 and cli.model.net.segment == 0.5


def test_a_network_that_does_not_pad_may_train_on_a_segment_of_its_own(capsys):
    """Hybrid Demucs' segment (10 s) is its inference chunk; recipes/hdemucs.yaml trains on 7.8 s."""
    with pytest.raises(SystemExit):
        main(["fit", "--config", HDEMUCS, "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["net"]["init_args"]["segment"] == 10.0 and config["data"]["init_args"]["segment"] == 7.8


def test_network_from_a_checkpoint_is_followed_once_built(shards, tmp_path, capsys):
    """``FromCheckpoint`` states no sources, segment or rate in the config: the built network gives them."""
    ckpt = save_tiny(tmp_path / "tiny.ckpt")
    overrides = [a for a in tiny_overrides(shards, tmp_path / "run") if a != "helpers.nets.TinyNet"]
    overrides.remove("--model.net")
    segment_at = overrides.index("--data.init_args.segment")
    del overrides[segment_at:segment_at + 2]
    args = ["--config", QUICKSTART, "--model.net", "stemsep.io.FromCheckpoint", "--model.net.checkpoint", str(ckpt),
            *overrides]
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert data["sources"] is None and data["segment"] is None and data["samplerate"] is None  # not known yet
    cli = run_lightning_cli(["fit", *args], BuildOnly)
    assert cli.datamodule.source_option == ["drums", "bass", "other", "vocals"]
    assert cli.datamodule.samplerate_option == 44100
    # TinyNet has no segment: the data's default, said in a note
    assert cli.datamodule.segment == DEFAULT_SEGMENT == 10.0
    assert "model.net has no segment: training on 10 s segments" in capsys.readouterr().err


def test_python_data_module_follows_a_network(shards):
    data = StemDataModule(train_manifest=str(shards / "train.json"),
                          augmentations=[Shift(seconds=0.5), ParametricEQ(), Limiter()])
    assert data.source_option is None and data.segment == DEFAULT_SEGMENT
    data.follow_network(TinyNet(sources=["vocals", "drums"]))
    assert data.source_option == ["vocals", "drums"] and data.sources == ["vocals", "drums"]
    assert [aug.samplerate for aug in data.augmentations] == [44100] * 3  # the augmentations got the rate
    assert data.augmentations[0].shift == 22050
    stream = data.train_dataset(rank=0, world_size=1)
    mix, stems = next(iter(stream))[:2]
    assert stems.shape[1] == 2 and mix.shape[-1] == round(DEFAULT_SEGMENT * 44100)

    with pytest.raises(StemsepError, match=r"^data.init_args.sources \['bass'\] differ from model.net's"):
        StemDataModule(train_manifest=str(shards / "train.json"), sources=["bass"]).follow_network(TinyNet())
    with pytest.raises(StemsepError, match=r"^data.init_args.samplerate 22050 differs"):
        StemDataModule(train_manifest=str(shards / "train.json"), samplerate=22050).follow_network(TinyNet())
    mapping = StemDataModule(train_manifest=str(shards / "train.json"),
                             sources={"vocals": ["vocals"], "accompaniment": ["drums", "bass", "other"]})
    mapping.follow_network(TinyNet(sources=["vocals", "accompaniment"]))  # a mapping names the network's sources
    assert mapping.sources == ["vocals", "accompaniment"]


def test_shards_at_another_rate_than_the_networks_are_one_line(shards):
    data = StemDataModule(train_manifest=str(shards / "train.json"))
    data.follow_network(TinyNet(samplerate=48000))
    with pytest.raises(StemsepError) as err:
        data.train_dataset(rank=0, world_size=1)
    assert str(err.value).startswith(f"data.init_args.train_manifest: {shards / 'train.json'} holds 44100 Hz audio, "
                                     "the network takes 48000 Hz")


class _Data(L.LightningDataModule):
    """Any data module exposing ``sources`` and ``segment`` (no ``follow_network``)."""

    def __init__(self, sources: list[str], segment: float):
        super().__init__()
        self.sources, self.segment = sources, segment


class _PadsToSegment(TinyNet):
    """TinyNet claiming HT Demucs' contract: trained on (and padding to) 2 s segments."""

    segment, use_train_segment = 2.0, True


def test_other_data_modules_are_checked_against_the_network():
    with pytest.raises(StemsepError, match=r"^data.init_args.sources \['vocals', 'drums', 'bass', 'other'\] differ"):
        link_data(TinyNet(), _Data(["vocals", "drums", "bass", "other"], 2.0), fitting=True)
    with pytest.raises(StemsepError, match=r"^data.init_args.segment 1.5 s differs from model.net's segment 2 s"):
        link_data(_PadsToSegment(), _Data(["drums", "bass", "other", "vocals"], 1.5), fitting=True)
    link_data(_PadsToSegment(), _Data(["drums", "bass", "other", "vocals"], 1.5), fitting=False)  # test: any length
    link_data(_PadsToSegment(), _Data(["drums", "bass", "other", "vocals"], 2.0), fitting=True)  # agreeing
    link_data(TinyNet(), _Data(["drums", "bass", "other", "vocals"], 1.5), fitting=True)  # no training segment: any


def test_the_module_does_not_read_the_data_module():
    source = inspect.getsource(stemsep.training.module)
    assert "datamodule" not in source and "check_data" not in source


def test_the_run_saves_the_linked_values(shards, tmp_path, monkeypatch):
    """The config.yaml a fit saves (and resumes from) holds what the data used."""
    monkeypatch.setattr(sys, "argv", ["stemsep"])
    assert main(["fit", "--config", QUICKSTART, *tiny_overrides(shards, tmp_path / "run"),
                 "--model.net.init_args.sources", "[drums, bass, other, vocals]", "--trainer.max_steps", "1",
                 "--trainer.limit_val_batches", "1", "--data.init_args.epoch_batches", "1"]) == 0
    saved = yaml.safe_load(next((tmp_path / "run").rglob("config.yaml")).read_text())
    assert saved["data"]["init_args"]["sources"] == ["drums", "bass", "other", "vocals"]
    assert saved["data"]["init_args"]["samplerate"] == 44100 and saved["data"]["init_args"]["segment"] == 0.5
