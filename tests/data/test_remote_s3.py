"""Shards and checkpoints on S3 (moto's server on 127.0.0.1, reached through s3fs and the usual
AWS environment): train and validate from ``s3://``, save checkpoints to ``s3://``, resume from
``s3://.../last.ckpt`` with the safe-loading rules, refuse a remote checkpoint holding objects."""

from __future__ import annotations

import io
from fractions import Fraction

import pytest
import torch
from torch.utils.data import DataLoader

from helpers.remote import moto_s3, upload_folder
from stemsep.data.loaders.datamodule import StemDataModule
from stemsep.errors import BadCheckpointError, BadDataError

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "s3://stemsep-test"


@pytest.fixture
def s3(shards, monkeypatch):
    with moto_s3(monkeypatch) as endpoint:
        upload_folder(shards, f"{BUCKET}/shards")
        yield endpoint


def _dm(base: str, **kw) -> StemDataModule:
    options = dict(train_manifest=f"{base}/train.json", valid_manifest=f"{base}/test.json", segment=0.5,
                   batch_size=2, num_workers=0, shuffle=2, song_buffer=2, epoch_batches=2, retries=2, timeout=5.0,
                   backoff=0.05)
    return StemDataModule(**{**options, **kw})


def test_train_and_validate_from_s3_equal_local(shards, s3):
    remote, local = _dm(f"{BUCKET}/shards"), _dm(str(shards))
    songs = {n[0]: stems for _, stems, n in DataLoader(remote.eval_dataset("valid"), batch_size=None, num_workers=2)}
    expected = {n[0]: stems for _, stems, n in local.eval_dataset("valid")}
    assert sorted(songs) == sorted(expected) == ["song0004", "song0005"]
    assert all(torch.equal(songs[k], expected[k]) for k in songs)
    for (mix_a, stems_a), (mix_b, stems_b) in zip(remote.train_dataloader(), local.train_dataloader(), strict=True):
        assert torch.equal(stems_a, stems_b) and torch.equal(mix_a, mix_b)
    with pytest.raises(BadDataError, match=f"{BUCKET}/shards/nothing.json: not found"):
        _dm(f"{BUCKET}/shards", valid_manifest=f"{BUCKET}/shards/nothing.json").eval_dataset("valid")


CONFIG = """\
model:
  net:
    class_path: helpers.nets.TinyNet
  max_nonfinite_steps: null
data:
  class_path: stemsep.data.loaders.StemDataModule
  init_args:
    train_manifest: {base}/train.json
    valid_manifest: {base}/test.json
    segment: 0.5
    batch_size: 2
    num_workers: 0
    shuffle: 2
    song_buffer: 2
    epoch_batches: 2
    retries: 2
    timeout: 10.0
    backoff: 0.05
trainer:
  accelerator: cpu
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
  limit_val_batches: 1
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        save_last: true
"""


def _load_s3(url: str) -> dict:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    with fs.open(url, "rb") as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)


def s3fs_bytes(url: str) -> bytes:
    import s3fs

    with s3fs.S3FileSystem().open(url, "rb") as f:
        return f.read()


def test_checkpoints_to_s3_and_resume_from_s3(s3, tmp_path):
    from stemsep.io.checkpoint import load_checkpoint, load_separator
    from stemsep.training.cli import run_lightning_cli

    config = tmp_path / "fit.yaml"
    config.write_text(CONFIG.format(base=f"{BUCKET}/shards"))
    run = f"{BUCKET}/run"
    run_lightning_cli(["fit", "--config", str(config), "--trainer.default_root_dir", run, "--trainer.max_steps", "2"])
    first = _load_s3(f"{run}/checkpoints/last.ckpt")
    assert first["global_step"] == 2
    # the library's safe loader reads remote checkpoints too (weights only)
    assert load_checkpoint(f"{run}/checkpoints/last.ckpt")["global_step"] == 2
    net = load_separator(f"{run}/checkpoints/last.ckpt")
    assert torch.equal(net.body[0].weight, first["state_dict"]["net.body.0.weight"])

    run_lightning_cli(["fit", "--config", str(config), "--trainer.default_root_dir", run, "--trainer.max_steps", "4",
                       "--ckpt_path", f"{run}/checkpoints/last.ckpt"])
    resumed = _load_s3(f"{run}/checkpoints/last.ckpt")
    assert resumed["global_step"] == 4 and resumed["epoch"] >= first["epoch"]  # continued, not restarted
    assert not torch.equal(resumed["state_dict"]["net.body.0.weight"], first["state_dict"]["net.body.0.weight"])
    # the checkpoint's hyperparameters replace the config's for a URL as for a local file (read once, early)
    from helpers.recipes import BuildOnly

    local = tmp_path / "last.ckpt"
    local.write_bytes(s3fs_bytes(f"{run}/checkpoints/last.ckpt"))
    for ckpt in (str(local), f"{run}/checkpoints/last.ckpt"):
        cli = run_lightning_cli(["fit", "--config", str(config), "--model.net.init_args.hidden", "16",
                                 "--ckpt_path", ckpt], BuildOnly)
        assert cli.model.net.init_args["hidden"] == 8, ckpt  # TinyNet's default, what the run trained


class _Payload:  # an object a checkpoint must not smuggle in
    pass


def test_remote_checkpoint_holding_objects_is_refused(s3, tmp_path):
    import s3fs

    from stemsep.io.checkpoint import load_checkpoint
    from stemsep.training.cli import run_lightning_cli

    fs = s3fs.S3FileSystem()
    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "payload": _Payload(), "ok": Fraction(1, 2)}, buffer)
    fs.pipe(f"{BUCKET}/evil.ckpt", buffer.getvalue())
    with pytest.raises(BadCheckpointError, match=f"^{BUCKET}/evil.ckpt: refused, it holds pickled code"):
        load_checkpoint(f"{BUCKET}/evil.ckpt")
    with pytest.raises(BadCheckpointError, match=f"^{BUCKET}/missing.ckpt: checkpoint not found"):
        load_checkpoint(f"{BUCKET}/missing.ckpt")
    config = tmp_path / "fit.yaml"
    config.write_text(CONFIG.format(base=f"{BUCKET}/shards"))
    with pytest.raises(BadCheckpointError, match=f"^{BUCKET}/evil.ckpt: refused, it holds pickled code"):
        run_lightning_cli(["fit", "--config", str(config), "--trainer.default_root_dir", f"{BUCKET}/run2",
                           "--trainer.max_steps", "1", "--ckpt_path", f"{BUCKET}/evil.ckpt"])


class _DropsAfter:
    """An fsspec file that raises a connection reset after ``limit`` bytes (a dropped S3 read)."""

    def __init__(self, stream, limit: int):
        self.stream, self.left = stream, limit

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise ConnectionResetError("connection reset by peer")
        data = self.stream.read(min(size, self.left) if size >= 0 else self.left)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.stream.close()


def _drop_first_reads(monkeypatch, drops: int, limit: int, then=None) -> list[int]:
    """The first ``drops`` S3 opens deliver ``limit`` bytes, then fail; returns the offsets opened at."""
    from stemsep.io import remote

    real, offsets = remote._fsspec_open, []

    def opener(url, offset, retry):
        opened = real(url, offset, retry)
        offsets.append(offset)
        if len(offsets) <= drops:
            opened.stream = _DropsAfter(opened.stream, limit)
            if then is not None:
                then()
        return opened

    monkeypatch.setattr(remote, "_fsspec_open", opener)
    return offsets


def test_s3_read_dropped_midway_resumes_by_seek_into_identical_bytes(shards, s3, monkeypatch):
    from stemsep.io.remote import RemoteReader, Retry

    name = "train-000000.tar"
    data = (shards / name).read_bytes()
    offsets = _drop_first_reads(monkeypatch, drops=2, limit=300_000)
    reader = RemoteReader(f"{BUCKET}/shards/{name}", Retry(retries=1, timeout=5, backoff=0), size=len(data))
    assert reader.read() == data and offsets == [0, 300_000, 600_000] and reader.failures == 2
    reader.close()


def test_s3_object_replaced_between_a_drop_and_the_resume_is_an_error(shards, s3, monkeypatch):
    import s3fs

    from stemsep.io.remote import RemoteReader, Retry

    name = "train-000000.tar"
    url = f"{BUCKET}/shards/{name}"
    data = bytearray((shards / name).read_bytes())
    data[-2000] ^= 0xFF
    _drop_first_reads(monkeypatch, drops=1, limit=300_000, then=lambda: s3fs.S3FileSystem().pipe(url, bytes(data)))
    with pytest.raises(BadDataError, match=rf"^{url}: changed while being read \(ETag"):
        RemoteReader(url, Retry(retries=2, timeout=5, backoff=0), size=len(data)).read()
