"""Crash safety: real ``stemsep`` processes killed with SIGKILL mid-run, then run again.

Each child is killed at a known point, not after some time: it holds at a gate
(:mod:`helpers.gate`) inside a given call of the network (``helpers.slow_net.SlowNet``) or of the
shard encoder, and signals it with a marker file; the test kills it once the marker is there.
What the killed run leaves is therefore exactly what was done before that call. Timeouts only
catch a hung child (failing with a clear message); no assertion depends on how long anything takes.

- ``fit``: ``--ckpt_path last`` continues from the last periodic checkpoint: the global step
  and the LR schedule go on from where the checkpoint left them;
- ``shard``: the rerun completes, keeps the shards already written, rewrites a damaged one,
  and every shard matches the manifest's sha256;
- ``separate``: the rerun skips exactly the tracks whose stems were complete; killed (SIGKILL) in
  the middle of a long file, the next run removes the scratch left behind; terminated (SIGTERM),
  it cleans up itself.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from helpers import REPO
from helpers.data import leftovers
from helpers.gate import Gate
from stemsep.cli import main
from stemsep.data.corpus.synth import generate_corpus
from stemsep.io.audio import read_audio, write_audio
from stemsep.io.checkpoint import save_checkpoint

TESTS = Path(__file__).resolve().parents[1]  # tests/: helpers importable in subprocesses
TIMEOUT = 120  # a safety net against a hung child, never what a test checks


def _env(gate: Gate | None = None) -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **(gate.env() if gate else {})}


def _stemsep(*argv: str, code: str = "") -> list[str]:
    """Command line running ``stemsep ARGV`` (after ``code``, e.g. a gate) in a new interpreter."""
    program = f"import sys; {code}\nfrom stemsep.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", program, *argv]


def _kill_at(cmd: list[str], at: int, log: Path, sig: int = signal.SIGKILL, returncode: int = -signal.SIGKILL,
             held: Callable[[], None] | None = None) -> None:
    """Start ``cmd`` with a gate at its call number ``at`` (0-based: of the network, or what
    ``code`` gates), send it ``sig`` (SIGKILL) while it holds there (after ``held()``, checks of
    that moment); it must exit with ``returncode``."""
    gate = Gate(log.parent / "gate", at)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(gate))
        try:
            gate.wait_reached(proc, log, timeout=TIMEOUT)
            if held is not None:
                held()
            proc.send_signal(sig)
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"safety net: still running {TIMEOUT} s after signal {sig}:\n"
                                     f"{log.read_text(errors='replace')[-3000:]}") from None
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == returncode, log.read_text(errors="replace")[-3000:]


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


# -------------------------------------------------------------------------------------- fit
FIT_CONFIG = """
seed_everything: 0
model:
  net: {{class_path: helpers.slow_net.SlowNet, init_args: {{delay: 0.0}}}}
  optimizer: {{class_path: torch.optim.Adam, init_args: {{lr: 0.01}}}}
  scheduler: {{class_path: torch.optim.lr_scheduler.StepLR, init_args: {{step_size: 1, gamma: 0.9}}}}
data:
  class_path: stemsep.data.loaders.FolderDataModule
  init_args: {{root: {corpus}, segment: 0.25, batch_size: 2, epoch_size: 100000, valid_split: test}}
trainer:
  accelerator: cpu
  max_steps: 100000
  limit_val_batches: 0
  num_sanity_val_steps: 0
  enable_progress_bar: false
  enable_model_summary: false
  log_every_n_steps: 1
  default_root_dir: {run}
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {run}}}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {run}/ckpt, save_last: true, every_n_train_steps: 4, save_top_k: 0}}
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
      init_args: {{logging_interval: step}}
"""


def _step_of(path: Path) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])


def test_fit_killed_resumes_from_last_checkpoint(tmp_path):
    corpus = generate_corpus(tmp_path / "corpus", songs=2, seconds=1.0, test_songs=1, workers=1)
    run = tmp_path / "run"
    config = tmp_path / "fit.yaml"
    config.write_text(FIT_CONFIG.format(corpus=corpus, run=run))
    last = run / "ckpt" / "last.ckpt"
    # one network call a step: killed inside step 10, after the checkpoints of steps 4 and 8
    _kill_at(_stemsep("fit", "--config", str(config)), 10, tmp_path / "a.log")
    killed_at = _step_of(last)
    assert killed_at == 8

    end = killed_at + 8  # a multiple of every_n_train_steps: the end is checkpointed too
    _run(_stemsep("fit", "--config", str(config), "--ckpt_path", "last", "--trainer.max_steps", str(end)))
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == end and final["lr_schedulers"][0]["last_epoch"] == end
    # the resumed run (the newest CSV log) trained steps killed_at .. end - 1, at the continued LR
    metrics = sorted(run.glob("lightning_logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))[-1]
    rows = list(csv.DictReader(metrics.open()))
    lrs = {int(r["step"]): float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")}
    assert sorted(lrs) == list(range(killed_at, end)), sorted(lrs)
    for step, lr in lrs.items():
        assert abs(lr - 0.01 * 0.9**step) < 1e-9, (step, lr)


# ------------------------------------------------------------------------------------ shard
GATED_ENCODE = "import helpers.gate as g, stemsep.data.shards.shard as s; s.encode_song = g.gated(s.encode_song)"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shard_killed_rerun_completes_and_verifies(tmp_path):
    corpus = generate_corpus(tmp_path / "corpus", songs=8, seconds=0.5, test_songs=1, workers=1)
    out = tmp_path / "shards"
    argv = ["shard", "--layout", "musdb", "--root", str(corpus), "--out", str(out), "--split", "train",
            "--max-shard-size", "1"]  # one song per shard

    # killed while encoding song 3: a shard is written when the next song is encoded, so songs 0
    # and 1 are in shards (and in the manifest), song 2 is encoded but not written
    _kill_at(_stemsep(*argv, code=GATED_ENCODE), 3, tmp_path / "a.log")
    before = json.loads((out / "train.json").read_text())
    assert not before["complete"] and len(before["shards"]) == 2 and len(before["songs"]) == 2
    first, second = (out / s["name"] for s in before["shards"][:2])
    kept_mtime = first.stat().st_mtime_ns
    second.write_bytes(second.read_bytes()[:1000])  # damage one finished shard too

    _run(_stemsep(*argv))
    manifest = json.loads((out / "train.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 8 and len(manifest["songs"]) == 8
    for shard in manifest["shards"]:
        assert _sha(out / shard["name"]) == shard["sha256"]
    assert first.stat().st_mtime_ns == kept_mtime  # an intact shard is kept, not redone
    assert sorted(p.name for p in out.iterdir()) == sorted([s["name"] for s in manifest["shards"]] + ["train.json"])
    assert not leftovers(out)


# --------------------------------------------------------------------------------- separate
def test_separate_killed_rerun_skips_finished_tracks(tmp_path, capsys):
    from helpers.slow_net import SlowNet

    sr = 8000
    net = SlowNet(samplerate=sr, delay=0.0)
    ckpt = save_checkpoint(tmp_path / "slow.ckpt", net, {"class_path": "helpers.slow_net.SlowNet", "init_args": net.init_args})
    rng = np.random.default_rng(0)
    for i in range(8):
        write_audio(tmp_path / "in" / f"track{i}.wav", rng.uniform(-0.3, 0.3, (2, sr // 2)), sr, bits=32)
    out = tmp_path / "out"
    argv = ["separate", str(tmp_path / "in"), "--model", str(ckpt), "-o", str(out), "--batch-size", "1",
            "--shifts", "0", "--bits", "32"]

    def done_tracks() -> list[Path]:
        return sorted(p for p in out.glob("track*") if p.is_dir()) if out.is_dir() else []

    # one network call a track (batch size 1, no segment): killed inside track 3's
    _kill_at(_stemsep(*argv), 3, tmp_path / "a.log")
    finished = done_tracks()
    assert [p.name for p in finished] == ["track0", "track1", "track2"]
    for track in finished:  # a visible track folder is always complete
        assert sorted(p.name for p in track.iterdir()) == sorted(f"{s}.wav" for s in net.sources)
    mtimes = {p: p.stat().st_mtime_ns for track in finished for p in track.iterdir()}

    stdout = _run(_stemsep(*argv))
    assert f"separated {8 - len(finished)} file(s)" in stdout and f"skipped {len(finished)} already done" in stdout
    assert len(done_tracks()) == 8 and not leftovers(out)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # finished tracks untouched
    for track in done_tracks():
        stem, _ = read_audio(track / "vocals.wav")
        assert stem.shape == (2, sr // 2) and torch.isfinite(stem).all()

    assert main([*argv, "--overwrite"]) == 0  # --overwrite redoes everything (in-process: faster)
    assert "separated 8 file(s)" in capsys.readouterr().out and not leftovers(out)
    assert all(p.stat().st_mtime_ns != t for p, t in mtimes.items())


LONG_SECONDS = 300  # longer than a 120 s window (plus context): separated window by window (3 windows)


def _long_file_run(tmp_path: Path) -> tuple[list[str], Path, Path]:
    """``stemsep separate`` of one long file with a slow network: ``(argv, checkpoint, out)``."""
    from helpers.slow_net import SlowNet

    sr = 8000
    net = SlowNet(samplerate=sr, delay=0.0, segment=10.0)  # 10 s chunks: 20 + 20 + 6 network calls
    ckpt = save_checkpoint(tmp_path / "slow.ckpt", net, {"class_path": "helpers.slow_net.SlowNet",
                                                         "init_args": net.init_args})
    rng = np.random.default_rng(0)
    write_audio(tmp_path / "in" / "long.wav", rng.uniform(-0.3, 0.3, (2, LONG_SECONDS * sr)), sr, bits=16)
    out = tmp_path / "out"
    argv = ["separate", str(tmp_path / "in"), "--model", str(ckpt), "-o", str(out), "--shifts", "0"]
    return argv, ckpt, out


MID_FILE = 30  # a network call of the second window: the first window's stems are in the staging folder


def _check_mid_file(out: Path) -> None:
    """The staging folder of a track half separated: the scratch mix, the first window's stems."""
    (staging,) = [p for p in leftovers(out) if p.name.endswith(".part")]
    assert (staging / ".mix.f32").stat().st_size > 0 and (staging / ".raw0.f32").stat().st_size > 0
    assert not (out / "long").exists()


def _check_long_track(out: Path) -> None:
    stem, sr = read_audio(out / "long" / "vocals.wav")
    assert stem.shape == (2, LONG_SECONDS * sr) and torch.isfinite(stem).all()
    assert sorted(p.name for p in out.iterdir()) == ["long"] and not leftovers(out)


def test_separate_killed_during_a_long_file_leaves_no_scratch_after_the_next_run(tmp_path, capsys):
    argv, ckpt, out = _long_file_run(tmp_path)
    _kill_at(_stemsep(*argv), MID_FILE, tmp_path / "a.log")
    _check_mid_file(out)  # SIGKILL: left as it was
    # the next run into this folder, even of another file, removes the killed run's scratch
    write_audio(tmp_path / "other" / "short.wav", np.zeros((2, 4000)), 8000, bits=16)
    assert main(["separate", str(tmp_path / "other"), "--model", str(ckpt), "-o", str(out), "--shifts", "0"]) == 0
    assert "separated 1 file(s)" in capsys.readouterr().out
    assert not leftovers(out) and sorted(p.name for p in out.iterdir()) == ["short"]
    shutil.rmtree(out / "short")
    # the same command again: the killed track is separated (from its start)
    assert "separated 1 file(s)" in _run(_stemsep(*argv))
    _check_long_track(out)


def test_separate_terminated_during_a_long_file_cleans_up(tmp_path):
    argv, _, out = _long_file_run(tmp_path)
    # SIGTERM stops it like Ctrl-C: the staging folder (scratch file, partial stems) is removed
    _kill_at(_stemsep(*argv), MID_FILE, tmp_path / "a.log", sig=signal.SIGTERM,
             returncode=128 + signal.SIGTERM, held=lambda: _check_mid_file(out))
    assert not leftovers(out) and not list(out.iterdir())
    assert "separated 1 file(s)" in _run(_stemsep(*argv))
    _check_long_track(out)
