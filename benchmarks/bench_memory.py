"""Peak memory of ``stemsep separate`` on a long input vs a short one (issue 15: constant memory).

Generates two stereo 16-bit WAVs at 22.05 kHz (``--short`` and ``--long`` minutes, written block
by block), saves a tiny windowed network (two 1-D convolutions with a 1 s training segment, at
16 kHz: the mix is resampled as a stream), then runs ``python -m stemsep separate`` on each in a
child process and reads the child's peak RSS (``os.wait4``'s ``ru_maxrss``). Prints both, and the
ratio long / short (target: at most 1.5). ``--whole`` also runs the whole-file path (every file
in one piece, as before streaming: ``separate_files(window=...)`` longer than the input) for
comparison.

    python benchmarks/bench_memory.py                       # 5 vs 60 minutes (a few minutes on 2 cores)
    python benchmarks/bench_memory.py --short 1 --long 10 --whole

The network is tiny so that an hour of audio separates in minutes; memory is what is measured
(the stems' size grows with the model's rate and source count, not with the network's size).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

INPUT_RATE, MODEL_RATE = 22050, 16000
SOURCES = ["drums", "bass", "other", "vocals"]


class WindowedTinyNet(nn.Module):
    """Two 1-D convolutions honouring the separation contract, with a training ``segment``, so
    ``stemsep separate`` chunks it and streams long files."""

    def __init__(self, sources: list[str] | None = None, audio_channels: int = 2, samplerate: int = MODEL_RATE,
                 hidden: int = 8, segment: float = 1.0):
        super().__init__()
        self.sources = list(sources or SOURCES)
        self.audio_channels, self.samplerate, self.segment = audio_channels, samplerate, segment
        self.body = nn.Sequential(nn.Conv1d(audio_channels, hidden, 9, padding=4), nn.Tanh(),
                                  nn.Conv1d(hidden, len(self.sources) * audio_channels, 9, padding=4))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        batch, channels, time = mix.shape
        return self.body(mix).view(batch, len(self.sources), channels, time)


def write_input(path: Path, minutes: float, seed: int = 0) -> Path:
    """A noisy two-tone stereo WAV, generated and written 10 s at a time."""
    rng = np.random.default_rng(seed)
    total, block = int(minutes * 60 * INPUT_RATE), 10 * INPUT_RATE
    with sf.SoundFile(str(path), "w", INPUT_RATE, 2, subtype="PCM_16") as handle:
        for start in range(0, total, block):
            t = (start + np.arange(min(block, total - start))) / INPUT_RATE
            left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)
            right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.shape)
            handle.write(np.stack([left, right], 1).astype(np.float32))
    return path


def peak_rss(argv: list[str], env: dict) -> tuple[float, float]:
    """``(peak RSS in MiB, wall seconds)`` of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(argv)} failed (status {status})")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=float, default=5.0, help="minutes of the short input (default 5)")
    parser.add_argument("--long", type=float, default=60.0, help="minutes of the long input (default 60)")
    parser.add_argument("--whole", action="store_true", help="also measure the whole-file path")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the children (default 2)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    from stemsep.io.checkpoint import save_checkpoint

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    root.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(args.threads)}
    try:
        torch.manual_seed(0)
        net = WindowedTinyNet()
        config = {"class_path": "bench_memory.WindowedTinyNet",
                  "init_args": {"sources": SOURCES, "samplerate": MODEL_RATE, "segment": 1.0}}
        ckpt = save_checkpoint(root / "tiny.ckpt", net, config)
        rows = []
        for minutes in (args.short, args.long):
            song = write_input(root / f"song{minutes:g}min.wav", minutes)
            out = root / f"out{minutes:g}"
            command = [sys.executable, "-m", "stemsep", "separate", str(song), "--model", str(ckpt), "-o", str(out),
                       "--shifts", "0", "--bits", "16", "--device", "cpu", "--jobs", str(args.threads)]
            rss, wall = peak_rss(command, env)
            rows.append(("streaming (stemsep separate)", minutes, rss, wall))
            print(f"streaming  {minutes:6g} min: peak RSS {rss:8.1f} MiB  ({wall:6.1f} s)", flush=True)
            shutil.rmtree(out)
            if args.whole:
                code = ("import sys; from stemsep.inference.separate import separate_files; "
                        "separate_files(sys.argv[1], sys.argv[2], models=sys.argv[3], shifts=0, bits=16, "
                        f"device='cpu', jobs={args.threads}, window=1e9)")
                rss, wall = peak_rss([sys.executable, "-c", code, str(song), str(out), str(ckpt)], env)
                rows.append(("whole file (before)", minutes, rss, wall))
                print(f"whole-file {minutes:6g} min: peak RSS {rss:8.1f} MiB  ({wall:6.1f} s)", flush=True)
                shutil.rmtree(out)
            song.unlink()
        for path in ("streaming", "whole"):
            found = [r for r in rows if r[0].startswith(path)]
            if len(found) == 2:
                print(f"{path}: peak RSS {args.long:g} min / {args.short:g} min = {found[1][2] / found[0][2]:.2f}x"
                      + ("  (target <= 1.5x)" if path == "streaming" else ""))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
