"""Cost of the community's metrics (stemsep.evaluation.community) and what they add to validation.

1. Per metric, the time to score one track of the synthetic corpus's music (4 stereo stems at
   44.1 kHz; estimates = 0.8 x each stem + 0.1 x the next), given as seconds per minute of audio;
   beside them museval-mode framewise SDR (``bss_eval(..., metrics=("sdr",))``) and all four
   BSS-eval metrics, for scale. Best of ``--repeats``.
2. ``--validation``: ``Trainer.validate`` of a 4-stem model (``configs/model/htdemucs_small.yaml``,
   random weights) over ``--tracks`` whole tracks, with ``model.metrics`` empty and with all eight
   community metrics; runs alternate (without, with, without, ...), best of ``--repeats``.

    python benchmarks/bench_metrics.py --seconds 60 --threads 1
    python benchmarks/bench_metrics.py --seconds 20 --validation --tracks 2 --threads 1
    python benchmarks/bench_metrics.py --device cuda --seconds 60 --validation

Wall-clock and CPU (this process's, all its threads) times are printed: on a loaded, shared machine the
CPU time of a one-thread run is the figure to compare. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

SOURCES = ["drums", "bass", "other", "vocals"]


def corpus(seconds: float, tracks: int, root: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``tracks`` synthetic songs: ``(mix (C, T), stems (S, C, T))`` each."""
    from stemsep.data.corpus.synth import generate_corpus
    from stemsep.io.audio import read_audio

    generate_corpus(root, songs=0, seconds=seconds, seed=3, test_songs=tracks, workers=1)
    songs = []
    for song in sorted((root / "test").iterdir()):
        stems = torch.stack([read_audio(song / f"{s}.wav")[0] for s in SOURCES])
        songs.append((stems.sum(0), stems))
    return songs


def timed(fn, device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()``, the device synchronised."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def best(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """The fastest (wall clock) of ``repeats`` runs: its wall and CPU seconds."""
    return min(timed(fn, device) for _ in range(repeats))


def metric_costs(song: tuple[torch.Tensor, torch.Tensor], seconds: float, repeats: int, device: torch.device) -> None:
    from stemsep.evaluation.bss_eval import bss_eval
    from stemsep.evaluation.community import COMMUNITY_METRICS, community_metrics

    mix, ref = (x.to(device) for x in song)
    est = 0.8 * ref + 0.1 * ref.roll(1, dims=0)
    per_minute = 60.0 / seconds
    print(f"\n1. metric cost, one {seconds:g} s track, 4 stereo sources, {device}: seconds per minute of audio")
    print(f"{'metric':<28}{'wall s / min':>14}{'CPU s / min':>14}")
    rows = [(name, lambda n=name: community_metrics([n], est, ref, mix, 44100)) for name in COMMUNITY_METRICS]
    rows.append(("all eight together", lambda: community_metrics(list(COMMUNITY_METRICS), est, ref, mix, 44100)))
    if device.type == "cpu":
        rows.append(("museval-mode SDR (framewise)", lambda: bss_eval(est, ref, samplerate=44100, metrics=("sdr",))))
        rows.append(("museval-mode SDR ISR SIR SAR", lambda: bss_eval(est, ref, samplerate=44100)))
    for name, fn in rows:
        fn()  # warm-up: filter banks, FFT plans, caches
        wall, cpu = best(fn, repeats, device)
        print(f"{name:<28}{wall * per_minute:>14.3f}{cpu * per_minute:>14.3f}")


def validation_costs(songs: list, repeats: int, device: torch.device) -> None:
    import lightning as L

    from stemsep.evaluation.community import COMMUNITY_METRICS
    from stemsep.models import HTDemucs
    from stemsep.training import SeparationModule

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/model/htdemucs_small.yaml").read_text())
    torch.manual_seed(0)
    net = HTDemucs(**config["init_args"])
    loader = torch.utils.data.DataLoader(songs, batch_size=1)  # whole tracks, one per batch (as EvalStream)
    modules = {"without": SeparationModule(net, metrics=()),
               "with all eight": SeparationModule(net, metrics=list(COMMUNITY_METRICS))}
    trainer = L.Trainer(accelerator=device.type, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    times = {name: [] for name in modules}
    for round_ in range(repeats + 1):  # the first round warms up
        order = list(modules) if round_ % 2 == 0 else list(modules)[::-1]
        for name in order:
            took = timed(lambda m=modules[name]: trainer.validate(m, loader, verbose=False), device)
            if round_:
                times[name].append(took)
    audio = sum(mix.shape[-1] for mix, _ in songs) / 44100
    print(f"\n2. validation of htdemucs_small (4 stems), {len(songs)} track(s), {audio:g} s of audio, {device}: "
          f"best of {repeats}")
    for name, values in times.items():
        wall, cpu = min(values)
        print(f"  metrics {name:<16}{wall:>8.2f} s wall, {cpu:>8.2f} s CPU   (wall of each run: "
              f"{', '.join(f'{v[0]:.2f}' for v in values)})")
    for i, kind in enumerate(("wall", "CPU")):
        extra = min(times["with all eight"])[i] - min(times["without"])[i]
        print(f"  the eight metrics add {extra:.2f} s {kind} = {extra / audio * 60:.2f} s per minute of validated audio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each track (default 60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all this process may use)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--validation", action="store_true", help="also time validation with and without the metrics")
    parser.add_argument("--tracks", type=int, default=2, help="validation tracks (default 2)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        songs = corpus(args.seconds, args.tracks if args.validation else 1, Path(tmp))
        metric_costs(songs[0], args.seconds, args.repeats, device)
        if args.validation:
            validation_costs(songs, args.repeats, device)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
