"""`stemsep import-demucs`: demucs model files convert to identical models, hostile files are refused."""

from __future__ import annotations

import os
import sys
import types
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from stemsep.cli import main
from stemsep.errors import BadCheckpointError
from stemsep.io.checkpoint import load_checkpoint, load_separator
from stemsep.io.import_demucs import import_demucs

demucs_states = pytest.importorskip("demucs.states")
demucs_htdemucs = pytest.importorskip("demucs.htdemucs")
demucs_hdemucs = pytest.importorskip("demucs.hdemucs")

SOURCES = ["drums", "bass", "other", "vocals"]
SR = 44100


@pytest.fixture
def demucs_serialize(monkeypatch):
    """demucs' own ``serialize_model`` + ``save_with_checksum``; omegaconf (only used there to turn
    the training config into plain containers) is replaced by an identity shim when absent."""
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        shim = types.SimpleNamespace(OmegaConf=types.SimpleNamespace(to_container=lambda cfg, resolve: dict(cfg)))
        monkeypatch.setitem(sys.modules, "omegaconf", shim)

    def write(model, directory: Path, stem: str) -> Path:
        package = demucs_states.serialize_model(model, {"optim": {"lr": 3e-4}, "epochs": 360})
        demucs_states.save_with_checksum(package, directory / f"{stem}.th")
        (path,) = directory.glob(f"{stem}-*.th")
        return path

    return write


MODELS = {
    "htdemucs": lambda: demucs_htdemucs.HTDemucs(SOURCES, channels=8, depth=4, t_layers=2, t_heads=4,
                                                 segment=Fraction(1), bottom_channels=16, dconv_mode=3),
    "hdemucs": lambda: demucs_hdemucs.HDemucs(sources=SOURCES, channels=8, depth=5, nfft=1024, dconv_lstm=3,
                                              dconv_attn=3, segment=Fraction(4)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_gives_the_demucs_model_outputs(name, tmp_path, demucs_serialize):
    torch.manual_seed(0)
    th = demucs_serialize(MODELS[name](), tmp_path, name)
    out = tmp_path / f"{name}.ckpt"
    assert main(["import-demucs", str(th), "-o", str(out)]) == 0

    reference = demucs_states.load_model(str(th)).eval()  # demucs' loader: half-stored weights, as we get them
    ours = load_separator(out)
    assert type(ours).__name__ == type(reference).__name__
    assert ours.sources == SOURCES
    mix = torch.randn(1, 2, int(0.9 * SR) + 13)  # demucs' HTDemucs takes at most its 1 s training segment
    with torch.no_grad():
        expected, got = reference(mix), ours(mix)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5

    hparams = load_checkpoint(out)["hyper_parameters"]
    assert hparams["imported_from"]["klass"] == f"demucs.{name}.{type(reference).__name__}"
    assert hparams["net"]["init_args"]["segment"] == reference.segment


def test_attention_backend_can_be_recorded(tmp_path, demucs_serialize):
    torch.manual_seed(0)
    th = demucs_serialize(MODELS["htdemucs"](), tmp_path, "ht")
    import_demucs(th, tmp_path / "lsh.ckpt", attention="lsh")
    assert load_checkpoint(tmp_path / "lsh.ckpt")["hyper_parameters"]["net"]["init_args"]["attention"] == "lsh"
    assert load_separator(tmp_path / "lsh.ckpt").attention == "lsh"
    assert main(["import-demucs", str(th), "-o", str(tmp_path / "x.ckpt"), "--attention", "nope"]) == 2


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ConstructsDemucs:
    def __reduce__(self):
        return (demucs_htdemucs.HTDemucs, (SOURCES,))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_runs_code_is_refused_without_running(tmp_path, capsys, zip_format):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.th"
    torch.save({"klass": _RunsShell(marker), "kwargs": {}, "state": {}}, evil,
               _use_new_zipfile_serialization=zip_format)
    assert main(["import-demucs", str(evil), "-o", str(tmp_path / "out.ckpt")]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out.ckpt").exists()
    assert err.count("\n") == 1 and str(evil) in err and "refused" in err and "system" in err


def test_pickle_that_calls_a_demucs_class_is_refused(tmp_path):
    bad = tmp_path / "calls.th"
    torch.save({"klass": _ConstructsDemucs(), "kwargs": {}, "state": {}}, bad)
    with pytest.raises(BadCheckpointError, match="construct demucs.htdemucs.HTDemucs"):
        import_demucs(bad, tmp_path / "out.ckpt")


def test_broken_and_foreign_files_are_one_line_errors(tmp_path, demucs_serialize, capsys):
    torch.manual_seed(0)
    good = demucs_serialize(MODELS["htdemucs"](), tmp_path, "ht")
    truncated = tmp_path / "truncated.th"
    truncated.write_bytes(good.read_bytes()[:4000])
    text = tmp_path / "notes.th"
    text.write_text("not a model")
    weights_only = tmp_path / "state.th"
    torch.save({"conv.weight": torch.zeros(2)}, weights_only)
    other_arch = tmp_path / "demucs_v2.th"
    for path, message in [(truncated, "truncated or corrupt"), (text, "truncated or corrupt"),
                          (weights_only, "not a demucs model package"), (tmp_path / "missing.th", "not found")]:
        assert main(["import-demucs", str(path), "-o", str(tmp_path / "out.ckpt")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and message in err, err
    # A demucs class of another architecture is named, not built.
    import demucs.demucs

    package = torch.load(good, weights_only=False)  # our own test file
    package["klass"] = demucs.demucs.Demucs
    torch.save(package, other_arch)
    with pytest.raises(BadCheckpointError, match="demucs.demucs.Demucs is not supported"):
        import_demucs(other_arch, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


def test_weights_of_another_config_do_not_load(tmp_path, demucs_serialize):
    torch.manual_seed(0)
    th = demucs_serialize(MODELS["htdemucs"](), tmp_path, "ht")
    package = torch.load(th, weights_only=False)
    package["kwargs"]["channels"] = 16
    torch.save(package, tmp_path / "mismatch.th")
    with pytest.raises(BadCheckpointError, match="mismatch.th: weight"):
        import_demucs(tmp_path / "mismatch.th", tmp_path / "out.ckpt")


def test_existing_output_needs_force(tmp_path, demucs_serialize):
    torch.manual_seed(0)
    th = demucs_serialize(MODELS["htdemucs"](), tmp_path, "ht")
    out = tmp_path / "out.ckpt"
    out.write_text("keep me")
    assert main(["import-demucs", str(th), "-o", str(out)]) == 2
    assert out.read_text() == "keep me"
    assert main(["import-demucs", str(th), "-o", str(out), "--force"]) == 0
    assert load_separator(out).sources == SOURCES
