"""A crafted checkpoint whose unpickling would run code is refused, without running it, wherever
stemsep loads checkpoints: ``separate --model`` (load_checkpoint), ``--model.init_from``, and
``fit --ckpt_path`` (Lightning resume, explicit path and ``last``). ``import-demucs`` has its own
test in test_import_demucs.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import stemsep.training.cli  # noqa: F401  (Lightning binds its log handler to stderr now, not to a test's capsys)
from helpers import REPO
from stemsep.cli import main
from stemsep.errors import BadCheckpointError
from stemsep.io.checkpoint import load_checkpoint

QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(path: Path, marker: Path) -> Path:
    """A Lightning-looking checkpoint with a payload in its hyperparameters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"net.w": torch.zeros(1)}, "global_step": 1, "epoch": 0,
                "pytorch-lightning_version": "2.6.6", "hyper_parameters": {"net": _RunsShell(marker)}}, path)
    return path


def _refused(capsys, argv: list[str], path: Path, marker: Path) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("stemsep: error: "), err
    assert str(path) in err[-1] or path.name in err[-1], err[-1]
    assert "refused" in err[-1] and not any("Traceback" in line for line in err)
    assert not marker.exists()  # the payload never ran


def test_load_checkpoint_refuses_pickled_code(tmp_path):
    marker = tmp_path / "PWNED"
    path = _evil(tmp_path / "evil.ckpt", marker)
    with pytest.raises(BadCheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_separate_model_refuses_pickled_code(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    path = _evil(tmp_path / "evil.ckpt", marker)
    (tmp_path / "in.wav").write_bytes(b"")  # never reached
    _refused(capsys, ["separate", str(tmp_path / "in.wav"), "--model", str(path), "-o", str(tmp_path / "o")],
             path, marker)


def _fit(tmp_path: Path, *extra: str) -> list[str]:
    return ["fit", "--config", QUICKSTART, "--data.init_args.prepare", "null", "--data.init_args.synthetic", "null",
            "--data.init_args.train_manifest", str(tmp_path / "none.json"), "--trainer.max_steps", "1",
            "--trainer.default_root_dir", str(tmp_path / "run"), *extra]


def test_init_from_refuses_pickled_code(tmp_path, capsys, corpus_root):
    from helpers.data import shard_corpus

    shards = shard_corpus(corpus_root, tmp_path / "shards", splits=("train",))
    marker = tmp_path / "PWNED"
    path = _evil(tmp_path / "evil.ckpt", marker)
    argv = [*_fit(tmp_path, "--model.init_from", str(path)),
            "--data.init_args.train_manifest", str(shards / "train.json")]
    _refused(capsys, argv, path, marker)


def test_resume_refuses_pickled_code(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    path = _evil(tmp_path / "evil.ckpt", marker)
    _refused(capsys, _fit(tmp_path, "--ckpt_path", str(path)), path, marker)


def test_resume_from_last_refuses_pickled_code(tmp_path, capsys, corpus_root):
    from helpers.data import shard_corpus

    shards = shard_corpus(corpus_root, tmp_path / "shards", splits=("train",))
    marker = tmp_path / "PWNED"
    _evil(tmp_path / "run" / "checkpoints" / "last.ckpt", marker)
    argv = [*_fit(tmp_path, "--ckpt_path", "last"), "--data.init_args.train_manifest", str(shards / "train.json")]
    _refused(capsys, argv, Path("last"), marker)
