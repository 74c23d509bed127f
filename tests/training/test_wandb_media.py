"""WandbMedia: an offline W&B run holds the audio, spectrogram image and SDR table; without W&B
(or when the callback fails) training goes on."""

import json
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from helpers import TinyNet
from stemsep.data.loaders.folder import FolderDataModule
from stemsep.training.callbacks import WandbMedia
from stemsep.training.callbacks.spectrogram import colorize, spectrogram_grid
from stemsep.training.module import SeparationModule

SOURCES = ["drums", "bass", "other", "vocals"]


def _fit(corpus_root, root, logger, callback, max_steps=2):
    L.seed_everything(0)
    data = FolderDataModule(str(corpus_root), segment=0.5, batch_size=2, epoch_size=4, valid_split="test")
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=logger, default_root_dir=root,
                        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=1,
                        enable_checkpointing=False, callbacks=[callback])
    trainer.fit(SeparationModule(TinyNet()), data)
    return trainer


def test_offline_run_holds_audio_images_and_table(corpus_root, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="stemsep-test", save_dir=str(tmp_path), name="media")
    try:
        _fit(corpus_root, tmp_path, logger, WandbMedia(seconds=1.0, offset=0.5))
    finally:
        wandb.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    audio = sorted((media / "audio").rglob("*.wav"))
    assert len(audio) == 1 + len(SOURCES)  # mixture + one estimate per source
    import soundfile as sf

    info = sf.info(str(audio[0]))
    assert info.samplerate == 44100 and info.channels == 2 and abs(info.duration - 1.0) < 0.01
    images = list((media / "images").rglob("*.png"))
    assert len(images) == 1
    from PIL import Image

    with Image.open(images[0]) as picture:
        width, height = picture.size
    assert height > width / 2  # four rows of reference | estimate panels
    tables = list((media / "table").rglob("*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["epoch", "source", "excerpt_sdr", "valid_nsdr"]
    assert [row[1] for row in table["data"]] == SOURCES
    assert all(np.isfinite(row[2]) and np.isfinite(row[3]) for row in table["data"])


def test_without_wandb_logger_it_does_nothing_and_csv_works(corpus_root, tmp_path, monkeypatch):
    callback = WandbMedia(seconds=1.0)
    calls = []
    monkeypatch.setattr(callback, "_separate_excerpt", lambda *a: calls.append(a))
    trainer = _fit(corpus_root, tmp_path, CSVLogger(str(tmp_path)), callback)
    assert trainer.global_step == 2 and not calls
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "valid/nsdr_vocals" in metrics
    assert _fit(corpus_root, tmp_path / "none", False, WandbMedia()).global_step == 2


def test_failures_become_warnings(corpus_root, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    callback = WandbMedia(seconds=1.0)

    def boom(*args):
        raise RuntimeError("no media today")

    monkeypatch.setattr(callback, "_separate_excerpt", boom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _fit(corpus_root, tmp_path, WandbLogger(save_dir=str(tmp_path)), callback)
    assert trainer.global_step == 2
    assert any("no media today" in str(w.message) for w in caught)


def test_spectrogram_grid_layout_and_scale():
    refs = torch.zeros(2, 2, 4096).numpy()
    refs[0, :, ::64] = 1.0  # loud clicks in source 0, silence in source 1
    picture = spectrogram_grid(refs, refs, n_fft=256, hop=128, gap=2)
    assert picture.dtype == np.uint8 and picture.shape == (2 * 129 + 2, 2 * 31 + 2, 3)
    row0, row1 = picture[:129], picture[131:]
    assert row0.mean() > row1.mean() + 50  # the silent source is dark
    assert (colorize(np.array([0.0]))[0] < colorize(np.array([1.0]))[0]).all()
