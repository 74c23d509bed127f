"""`stemsep test` under DDP (2 CPU processes, gloo) gives exactly the per-track results of 1 process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L

from helpers import TinyNet
from stemsep.data.corpus.synth import generate_corpus
from stemsep.data.loaders.folder import FolderDataModule
from stemsep.training.module import SeparationModule

CONFIG = """\
model:
  net:
    class_path: helpers.nets.TinyNet
  test_metrics: [sdr, isr, sir, sar]
data:
  class_path: stemsep.data.loaders.FolderDataModule
  init_args:
    root: {root}
    segment: 0.5
trainer:
  accelerator: cpu
  logger: false
  enable_progress_bar: false
"""


def _stemsep_test(tmp_path: Path, config: Path, ckpt: Path, devices: int) -> dict[str, dict]:
    out = tmp_path / f"results{devices}"
    # One thread per process in both runs: the same float summation order, so results compare exactly.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(Path(sys.executable).parent / "stemsep"), "test", "--config", str(config),
               "--ckpt_path", str(ckpt), "--trainer.devices", str(devices),
               "--trainer.strategy", "ddp" if devices > 1 else "auto",
               "--model.test_results_dir", str(out), "--trainer.default_root_dir", str(tmp_path / f"run{devices}")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json") if p.stem != "summary"}


def test_two_processes_give_the_per_track_numbers_of_one(tmp_path):
    root = generate_corpus(tmp_path / "corpus", songs=1, seconds=2.0, seed=3, test_songs=3)
    module = SeparationModule(TinyNet())
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, FolderDataModule(str(root), segment=0.5, batch_size=1, epoch_size=1, valid_split="test"))
    ckpt = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    config = tmp_path / "eval.yaml"
    config.write_text(CONFIG.format(root=root))

    one = _stemsep_test(tmp_path, config, ckpt, devices=1)
    two = _stemsep_test(tmp_path, config, ckpt, devices=2)
    assert sorted(one) == ["song0001", "song0002", "song0003"]  # every test track, once
    assert one == two
    frames = one["song0001"]["targets"][0]["frames"]
    assert len(frames) == 2 and set(frames[0]["metrics"]) == {"SDR", "ISR", "SIR", "SAR"}
