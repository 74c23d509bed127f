"""Fingerprints of what ``stemsep separate`` writes, to check a refactor changes no sample.

    python benchmarks/separation_fingerprint.py save before.json    # on the old commit
    python benchmarks/separation_fingerprint.py compare before.json # on the new one: exit 1 on a difference

For HT Demucs, BS-RoFormer and SCNet (the small configs of ``configs/model``, seeded random
weights) and a bag of two of them, separates one music-like 12 s stereo file with ``--shifts 0``
and ``--shifts 2`` (seed 0), whole-file and window by window (``window`` 3 s), and through the
Python API (``Separator.separate`` on an array), writing float WAV; records the SHA-256 of every
stem's samples. Only public entry points are used, so the same script runs on any commit (run the
old one with ``PYTHONPATH=<old checkout>/src``). CPU, one thread: bit-identical means identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from stemsep.contract import network_config
from stemsep.inference import Separator
from stemsep.inference.separate import separate_files
from stemsep.io.checkpoint import build_from_config, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
MODELS = ("htdemucs_small", "bs_roformer_small", "scnet_small")
RATE = 44100


def music(seconds: float = 12.0) -> np.ndarray:
    """Tones with vibrato, a bass line, noise-burst drums and a silent stretch, ``(time, 2)``."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    left = 0.2 * np.sin(2 * np.pi * 220 * t + 3 * np.sin(2 * np.pi * 5 * t))
    right = 0.15 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * 55 * t)
    drums = np.zeros_like(t)
    for beat in np.arange(0, seconds, 0.5):
        i = int(beat * RATE)
        n = min(2000, len(t) - i)
        drums[i:i + n] += rng.standard_normal(n) * np.exp(-np.arange(n) / 300) * 0.4
    data = np.stack([left + drums, right + drums], 1)
    data[int(7 * RATE):int(8 * RATE)] = 0  # a silent second
    return data.astype(np.float32)


def digest(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(data, dtype=np.float32).tobytes()).hexdigest()[:20]


def fingerprints(work: Path) -> dict[str, str]:
    torch.set_num_threads(1)
    mix = work / "song.wav"
    sf.write(mix, music(), RATE, subtype="FLOAT")
    ckpts = {}
    for name in MODELS:
        config = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())
        torch.manual_seed(0)
        net = build_from_config(config)
        ckpts[name] = save_checkpoint(work / f"{name}.ckpt", net, network_config(net))
    cases = {name: [ckpts[name]] for name in MODELS}
    cases["bag"] = [ckpts["htdemucs_small"], ckpts["scnet_small"]]
    found = {}
    for case, models in cases.items():
        for shifts in (0, 2):
            for window in (600.0, 3.0):
                out = work / f"{case}-{shifts}-{window}"
                separate_files(mix, out, models=models, shifts=shifts, seed=0, window=window, bits=32,
                               device="cpu")
                for stem in sorted((out / "song").glob("*.wav")):
                    found[f"{case} shifts={shifts} window={window} {stem.stem}"] = digest(sf.read(stem)[0])
                    print(f"{case} shifts={shifts} window={window} {stem.stem}", file=sys.stderr)
        sep = Separator.from_checkpoint(models, device="cpu", shifts=1)
        for stem, wav in sep.separate(sf.read(mix, dtype="float32")[0], RATE).items():
            found[f"{case} Separator.separate {stem}"] = digest(wav.numpy())
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["save", "compare"])
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found = fingerprints(Path(tmp))
    if args.mode == "save":
        args.path.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"{len(found)} stems fingerprinted -> {args.path}")
        return 0
    before = json.loads(args.path.read_text())
    differ = sorted(k for k in set(before) | set(found) if before.get(k) != found.get(k))
    for key in differ:
        print(f"DIFFERENT {key}: {before.get(key)} -> {found.get(key)}")
    print(f"{len(found) - len(differ)} of {len(set(before) | set(found))} stems identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
