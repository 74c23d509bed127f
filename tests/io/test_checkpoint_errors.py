"""What a checkpoint that cannot be loaded is called: not a torch file, empty, truncated, a
TorchScript export, or (only when it really is) a torch file holding pickled code or objects.

Random bytes used to be "refused, it holds pickled code or objects" — untrue and alarming."""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.recipes import save_tiny
from helpers.tools import SR, song
from stemsep.cli import main
from stemsep.errors import BadCheckpointError
from stemsep.io.checkpoint import REFUSED, load_checkpoint, load_separator, why_unloadable


class _Doubles(torch.nn.Module):  # defined in a file, so torch.jit.script can read its source
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


class _Payload:  # an object a checkpoint must not smuggle in
    pass


def _message(path: Path) -> str:
    with pytest.raises(BadCheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    return text


def test_random_bytes_are_not_a_checkpoint_not_pickled_code(tmp_path):
    path = tmp_path / "random.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    text = _message(path)
    assert "is not a PyTorch checkpoint" in text and "refused" not in text and "pickled code" not in text
    html = tmp_path / "download.ckpt"  # what a failed download saves
    html.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n" * 20)
    assert "is not a PyTorch checkpoint" in _message(html)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(np.random.default_rng(1).bytes(3000))
    assert "--backend onnxruntime" in _message(onnx)


def test_plain_pickle_and_empty_file(tmp_path):
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}))
    text = _message(plain)
    assert "is not a PyTorch checkpoint" in text and "pickle that torch.save did not write" in text
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert "is empty (0 bytes)" in _message(empty)


@pytest.mark.parametrize("keep", [500, 0.5, -100])
def test_truncated_checkpoint(tmp_path, keep):
    whole = save_tiny(tmp_path / "whole.ckpt").read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(whole[:int(keep * len(whole)) if isinstance(keep, float) else keep])
    text = _message(path)
    assert "is truncated or corrupt" in text and "refused" not in text


def test_truncated_legacy_torch_file(tmp_path):
    whole = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole, _use_new_zipfile_serialization=False)
    assert load_checkpoint(whole)["state_dict"]["w"].shape == (1000,)  # the whole file loads
    path = tmp_path / "cut.ckpt"
    path.write_bytes(whole.read_bytes()[:200])
    text = _message(path)
    assert "is truncated or corrupt" in text and "refused" not in text


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_file_is_named_as_such(tmp_path, how):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated (still what `stemsep export` writes)
        module = torch.jit.script(_Doubles()) if how == "script" else torch.jit.trace(_Doubles(), torch.ones(3))
    path = tmp_path / "model.pt"
    module.save(str(path))
    text = _message(path)
    assert "is a TorchScript export, not a checkpoint" in text and "--backend torchscript" in text
    assert "refused" not in text


def test_stemsep_torchscript_export_hints_the_backend(tmp_path, capsys):
    from helpers.tools import small_network
    from stemsep.inference.export import export_model

    net, _ = small_network("htdemucs_small", depth=2, channels=8, t_layers=1, segment=0.5)
    export = tmp_path / "model.pt"
    export_model(net, export, "torchscript")
    assert "run it with --backend torchscript" in _message(export)
    with pytest.raises(BadCheckpointError, match="TorchScript export"):
        load_separator(export)
    mix = song(tmp_path / "song.wav", 0.6)
    out = tmp_path / "out"
    assert main(["separate", str(mix), "--model", str(export), "-o", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"stemsep: error: {export}: is a TorchScript export, not a checkpoint: run it with " \
                  "--backend torchscript (Python: backend=\"torchscript\")"
    # and the hint works
    assert main(["separate", str(mix), "--model", str(export), "-o", str(out), "--device", "cpu",
                 "--backend", "torchscript"]) == 0
    assert (out / "song" / "vocals.wav").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("zipped", [True, False])
def test_pickled_objects_are_still_refused(tmp_path, zipped):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, path, _use_new_zipfile_serialization=zipped)
    assert _message(path) == f"{path}: {REFUSED}"


def test_in_memory_sources_are_classified_too():
    """Remote checkpoints (``s3://...``) are read into memory first: the same classification."""
    text = "Weights only load failed ... Unsupported operand 15"
    assert why_unloadable(io.BytesIO(np.random.default_rng(2).bytes(4000)), text).startswith(
        "is not a PyTorch checkpoint")
    buffer = io.BytesIO()
    torch.save({"payload": _Payload()}, buffer)
    assert why_unloadable(io.BytesIO(buffer.getvalue()), "Unsupported global: GLOBAL x._Payload") == REFUSED
    assert SR == 44100  # helpers.tools' rate, the one `song` writes


def test_resume_from_random_bytes_is_not_called_pickled_code(tmp_path, shards, capsys, monkeypatch):
    """``stemsep fit --ckpt_path`` (Lightning's loader, weights-only) says what the file is, too."""
    from helpers import REPO
    from helpers.recipes import tiny_overrides

    monkeypatch.setenv("WANDB_MODE", "offline")
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(np.random.default_rng(2).bytes(5000))
    args = ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), *tiny_overrides(shards, tmp_path / "run"),
            "--trainer.max_steps", "1", "--ckpt_path", str(bad)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"stemsep: error: {bad}: is not a PyTorch checkpoint"), err
    assert "pickled code" not in err
