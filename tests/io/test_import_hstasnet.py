"""``stemsep import-checkpoint --model-type hstasnet``: checkpoints of the reference HS-TasNet
(``HSTasNet.save`` of hs-tasnet 0.3.4: ``{"model": state_dict, "config": pickled keywords}``) become
stemsep checkpoints without unpickling code.

tests/fixtures/hstasnet_ckpt/reference.ckpt.pt was written by the reference's own ``save``, and
expected.pt holds the output of the reference's own ``init_and_load_from`` of it
(tests/fixtures/make_hstasnet_ckpt_fixture.py): the imported network must reproduce it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import yaml

from helpers import tools
from helpers.imports import RunsShell, import_error
from stemsep.cli import main
from stemsep.io.checkpoint import load_checkpoint, load_separator
from stemsep.models import HSTasNet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hstasnet_ckpt"
PACKAGE = FIXTURES / "reference.ckpt.pt"
TOL = 1e-4


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(FIXTURES / "expected.pt", weights_only=True)


def keywords_yaml(path: Path, model: dict, **sections) -> Path:
    """The YAML a user writes: the reference's keywords under ``model:``."""
    path.write_text(yaml.safe_dump({"model": dict(model), **sections}, sort_keys=False))
    return path


def run_import(package: Path, config: Path, out: Path) -> int:
    return main(["import-checkpoint", str(package), "--config", str(config), "--model-type", "hstasnet",
                 "-o", str(out)])


def test_reference_package_imports_to_the_reference_outputs(expected, tmp_path, capsys):
    config = keywords_yaml(tmp_path / "hstasnet.yaml", expected["config"])
    out = tmp_path / "hstasnet.ckpt"
    assert run_import(PACKAGE, config, out) == 0
    assert "stemsep.models.HSTasNet" in capsys.readouterr().out
    net = load_separator(out)  # a stemsep checkpoint: weights_only, rebuilt from class path + init args
    assert isinstance(net, HSTasNet) and net.overlap_len == 64 and net.sources == ["drums", "bass", "other", "vocals"]
    reference = torch.load(PACKAGE, weights_only=True)["model"]
    assert net.state_dict().keys() == reference.keys()
    with torch.no_grad():
        got = net(expected["input"])
    assert expected["output"].abs().max() > 1e-2
    assert (got - expected["output"]).abs().max().item() <= TOL
    provenance = load_checkpoint(out)["hyper_parameters"]["imported_from"]
    assert provenance["model_type"] == "hstasnet" and provenance["file"] == PACKAGE.name
    # and it separates as users run it: `stemsep separate` writes what the imported network returns
    tools.check_separate_writes_what_the_network_returns(net, out, tmp_path)


def test_plain_state_dict_and_the_reference_folder_order(expected, tmp_path):
    """A bare state_dict (no recorded keywords) imports too; sources named in the YAML's training section."""
    torch.save(torch.load(PACKAGE, weights_only=True)["model"], tmp_path / "weights.pt")
    order = ["drums", "bass", "vocals", "other"]  # the reference's MusDB18HQ folder dataset
    config = keywords_yaml(tmp_path / "c.yaml", expected["config"], training={"instruments": order})
    assert run_import(tmp_path / "weights.pt", config, tmp_path / "out.ckpt") == 0
    net = load_separator(tmp_path / "out.ckpt")
    assert net.sources == order
    with torch.no_grad():
        assert (net(expected["input"]) - expected["output"]).abs().max().item() <= TOL


def test_a_keyword_no_weight_shows_must_agree_with_the_recorded_one(expected, tmp_path, capsys):
    """overlap_len (the hop) changes no weight's shape: the weights alone load strictly into a network
    with another hop; the package's recorded keywords catch it."""
    model = {**expected["config"], "overlap_len": 32}
    HSTasNet(**model).load_state_dict(torch.load(PACKAGE, weights_only=True)["model"], strict=True)
    config = keywords_yaml(tmp_path / "c.yaml", model)
    err = import_error(PACKAGE, config, "hstasnet", tmp_path / "out.ckpt", capsys)
    assert PACKAGE.name in err and "overlap_len=64" in err and "overlap_len=32" in err, err
    assert "model.overlap_len: 64" in err
    assert not (tmp_path / "out.ckpt").exists()
    # left out (the default, 512, would not even build with these 128-sample frames): the same advice
    model.pop("overlap_len")
    err = import_error(PACKAGE, keywords_yaml(tmp_path / "c.yaml", model), "hstasnet", tmp_path / "out.ckpt", capsys)
    assert PACKAGE.name in err and "overlap_len=512" in err and "model.overlap_len: 64" in err, err


def test_wrong_size_is_a_one_line_error(expected, tmp_path, capsys):
    config = keywords_yaml(tmp_path / "c.yaml", {**expected["config"], "dim": 32})
    err = import_error(PACKAGE, config, "hstasnet", tmp_path / "out.ckpt", capsys)
    assert PACKAGE.name in err and "dim" in err, err


def _package_with_config(path: Path, config: object) -> Path:
    package = torch.load(PACKAGE, weights_only=True)
    torch.save({"model": package["model"], "config": pickle.dumps(config)}, path)
    return path


def test_recorded_config_that_pickles_code_is_refused_without_running(expected, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    package = _package_with_config(tmp_path / "evil.ckpt.pt", {**expected["config"], "rnn_klass": RunsShell(marker)})
    config = keywords_yaml(tmp_path / "c.yaml", expected["config"])
    err = import_error(package, config, "hstasnet", tmp_path / "out.ckpt", capsys)
    assert err.startswith("stemsep: error: ") and "evil.ckpt.pt" in err and "refused" in err, err
    assert "posix.system" in err or "os.system" in err, err
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()


def test_custom_rnn_class_in_the_recorded_config_is_refused(expected, tmp_path, capsys):
    """A network built with ``rnn_klass=`` some class: its package pickles that class (code)."""
    package = _package_with_config(tmp_path / "gru.ckpt.pt", {**expected["config"], "rnn_klass": torch.nn.GRU})
    config = keywords_yaml(tmp_path / "c.yaml", expected["config"])
    err = import_error(package, config, "hstasnet", tmp_path / "out.ckpt", capsys)
    assert "torch.nn.modules.rnn.GRU" in err and "refused" in err, err


def test_package_pickling_objects_in_the_weights_is_refused(expected, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    package = torch.load(PACKAGE, weights_only=True)
    torch.save({**package, "hook": RunsShell(marker)}, tmp_path / "evil.pt")
    config = keywords_yaml(tmp_path / "c.yaml", expected["config"])
    err = import_error(tmp_path / "evil.pt", config, "hstasnet", tmp_path / "out.ckpt", capsys)
    assert "evil.pt" in err and "refused" in err, err
    assert not marker.exists()


def test_config_without_model_mapping_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("training:\n  instruments: [vocals]\n")
    err = import_error(PACKAGE, tmp_path / "c.yaml", "hstasnet", tmp_path / "out.ckpt", capsys)
    assert "c.yaml" in err and "model:" in err, err
