"""benchmarks/bench_eval.py as a user runs it, on a short track of its music signal: it compares
against museval, checks the medians against museval's own spread, and prints the ratio."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO, require_museval

require_museval()


def test_music_signal_within_museval_spread():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_eval.py"), "--seconds", "3",
                           "--signal", "music", "--spread", "--repeats", "1", "--threads", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for metric in ("sdr", "isr", "sir", "sar"):
        row = next(line for line in lines if line.strip().startswith(f"{metric}:"))
        assert "within)" in row, row
    assert any(line.startswith("speed-up by length: 3 s:") for line in lines), done.stdout
