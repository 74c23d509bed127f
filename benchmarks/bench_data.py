"""Training data throughput per worker: StemDataModule on shards vs demucs' wav-folder dataset.

Both pipelines produce the same training examples (4 stereo stems, ``--segment`` seconds at
44.1 kHz) with the demucs augmentations (shift 1 s, channel swap, sign flip, gain, remix in
groups of 4, repitch with probability 0.2), in one process with one thread — i.e. what one
DataLoader worker delivers. The reference is ``demucs.wav.Wavset`` + ``demucs.repitch``
(``soundstretch`` subprocess per repitched example) + ``demucs.augment`` on the batch.

    .venv/bin/python benchmarks/bench_data.py --songs 8 --seconds 30 --batches 20 --repeats 3 \
        --train-step configs/model/htdemucs_small.yaml configs/model/htdemucs.yaml

Repeats alternate the two pipelines (and the with/without repitch settings), so load changes
on a shared machine hit both; medians and the median of per-repeat ratios are printed.
It also times FLAC decoding alone (every stem of one example, ``--segment`` long, from a random
offset): the least work per example of any loader reading FLAC shards that decodes each
example's audio once, hence an upper bound on its segments/s on full-length songs, printed
against the reference's rate. (On the short generated songs the stream's segments of one song
overlap and share decoding, which no longer happens on 3-4 minute songs.)
``--train-step`` times a CPU training step of model configs at the same batch shape, to say
how many times over one data worker keeps up with training.

``--url http://HOST:PORT`` instead compares the same stream read over HTTP with reading the
local files, in the same run: the generated shards are served by a separate
``python -m http.server`` process bound to HOST:PORT (port 0: any free port), and the stream
(same augmentations, without repitch) is timed from ``http://HOST:PORT/train.json`` and from
the local ``train.json``, repeats interleaved. Remote shards are hashed (sha256) on every
read, local ones only until they matched once, so local files hashed on every read are timed
too: that ratio is the cost of the transport alone. The raw read rate of the shard bytes (MB/s,
no hashing or decoding) is printed as well::

    .venv/bin/python benchmarks/bench_data.py --url http://127.0.0.1:0 --songs 8 --seconds 30

demucs.wav imports ``dora`` only for distributed helpers it does not use here, and reads audio
with ``torchaudio.load``, which needs ffmpeg/torchcodec in recent torchaudio: the benchmark
stubs the former and routes audio reads/writes (also those around soundstretch) through
soundfile (same decoding work).

Our training stream tunes the process's allocator (``tune_malloc``: big freed buffers stay in
the heap, no page faults per batch). That setting is process-wide, so by default the benchmark
turns it on before either pipeline runs: the reference gets the same allocator, and the ratio
compares only the work each pipeline does. ``--reference-malloc default`` instead runs the
reference in a fresh (spawned) process with glibc's defaults, as demucs' loader runs when
training: each loader as it ships.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

from stemsep import DEFAULT_SOURCES
from stemsep.data.augment import FlipChannels, FlipSign, Remix, Repitch, Scale, Shift
from stemsep.data.corpus.synth import generate_corpus
from stemsep.data.loaders.allocator import keep_large_buffers
from stemsep.data.loaders.datamodule import StemDataModule
from stemsep.io.audio import audio_info, read_audio, write_audio

SR = 44100


def ours(shards: Path | str, segment: float, batch: int, batches: int, repitch: bool) -> float:
    augs = ([Repitch(proba=0.2)] if repitch else []) + [Shift(SR), FlipChannels(), FlipSign(), Scale(),
                                                       Remix(group_size=4)]
    dm = StemDataModule(train_manifest=f"{shards}/train.json", segment=segment, batch_size=batch,
                        num_workers=0, augmentations=augs, epoch_batches=None, shuffle=16)
    stream = iter(dm.train_dataset())
    next(stream)  # warm-up: fills the buffers
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch / (time.perf_counter() - start)


def decode_floor(shards: Path, segment: float, count: int = 40) -> float:
    """Median seconds to decode one training example's FLAC alone: every stem, ``segment`` long,
    from a random offset, sharing nothing with other examples (as on full-length songs)."""
    import random

    from stemsep.data.shards.codec import decode_flac, flac_header
    from stemsep.data.shards.tarstream import iter_shard

    songs = [sample for tar in sorted(shards.glob("train-*.tar")) for _, sample in iter_shard(str(tar), tar.name)]
    frames = int(segment * SR)
    rng = random.Random(0)
    times = []
    for k in range(count):
        stems = [songs[k % len(songs)][f"{stem}.flac"] for stem in DEFAULT_SOURCES]
        offset = rng.randrange(max(1, flac_header(stems[0], "stem").frames - frames))
        start = time.perf_counter()
        for data in stems:
            decode_flac(data, "stem", offset, frames)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _import_demucs():
    if "dora" not in sys.modules:  # demucs.wav -> demucs.distrib -> dora.distrib (unused here)
        dora = types.ModuleType("dora")
        dora.distrib = types.SimpleNamespace(rank=0, world_size=1)
        sys.modules["dora"], sys.modules["dora.distrib"] = dora, dora.distrib
    import demucs.augment
    import demucs.repitch
    import demucs.wav

    def load(path, frame_offset=0, num_frames=-1):
        return read_audio(path, start=frame_offset, frames=num_frames)

    def info(path):
        header = audio_info(path)
        return types.SimpleNamespace(sample_rate=header.samplerate, num_frames=header.frames,
                                     num_channels=header.channels)

    demucs.wav.ta = types.SimpleNamespace(load=load, info=info)
    demucs.repitch.ta = types.SimpleNamespace(load=lambda path: read_audio(path))

    def save_audio(wav, path, samplerate, **_):  # soundstretch reads 16-bit WAV, as demucs writes
        write_audio(path, wav, samplerate, bits=16)

    demucs.repitch.save_audio = save_audio
    return demucs


def reference(root: Path, segment: float, batch: int, batches: int, repitch: bool) -> float:
    demucs = _import_demucs()
    metadata = demucs.wav.build_metadata(root / "train", DEFAULT_SOURCES, normalize=False)
    dataset = demucs.wav.Wavset(root / "train", metadata, DEFAULT_SOURCES, segment=(segment + 1.0) * 1.12,
                                shift=1.0, samplerate=SR, channels=2, normalize=False)
    if repitch:
        dataset = demucs.repitch.RepitchedWrapper(dataset, proba=0.2, max_pitch=2, max_tempo=12, tempo_std=5,
                                                  vocals=[DEFAULT_SOURCES.index("vocals")])
    augment = torch.nn.Sequential(demucs.augment.Shift(shift=SR, same=False), demucs.augment.FlipChannels(),
                                  demucs.augment.FlipSign(), demucs.augment.Scale(proba=1, min=0.25, max=1.25),
                                  demucs.augment.Remix(proba=1, group_size=4))
    order = torch.randperm(len(dataset)).tolist()
    length = int(segment * SR)

    def one_batch(k: int) -> torch.Tensor:
        items = [dataset[order[(k * batch + i) % len(order)]] for i in range(batch)]
        stems = augment(torch.stack(items))[..., :length]
        return stems.sum(1), stems

    one_batch(0)
    start = time.perf_counter()
    for k in range(1, batches + 1):
        one_batch(k)
    return batches * batch / (time.perf_counter() - start)


def train_step_seconds(config: Path, segment: float, batch: int, repeats: int) -> float:
    """Median seconds of one CPU training step (forward, L1 loss, backward, Adam) at this shape."""
    import yaml

    from stemsep.io.checkpoint import build_from_config

    net = build_from_config(yaml.safe_load(config.read_text()), origin=str(config))
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    mix = torch.randn(batch, 2, int(segment * SR)) * 0.1
    stems = torch.randn(batch, len(net.sources), 2, mix.shape[-1]) * 0.05
    times = []
    for _ in range(repeats + 1):  # the first step warms up allocators
        start = time.perf_counter()
        loss = (net(mix) - stems).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def serve(folder: Path, url: str) -> tuple[subprocess.Popen, str]:
    """Serve ``folder`` with ``python -m http.server`` at ``url`` (``http://HOST:PORT``, port 0: any)."""
    parsed = urlparse(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise SystemExit(f"--url {url}: expected http://HOST:PORT (the benchmark serves its shards there)")
    host, port = parsed.hostname, parsed.port or 0
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", host, "--directory",
                               str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://{host}:{port}"
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"{base}/train.json", timeout=1):
                return server, base
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"--url {url}: the HTTP server did not start")


def read_rate(base: Path | str, names: list[str]) -> float:
    """MB/s of reading the shards' bytes alone (no tar parsing or decoding)."""
    from stemsep.data.shards.tarstream import open_url

    start, total = time.perf_counter(), 0
    for name in names:
        with open_url(f"{base}/{name}") as f:
            while block := f.read(1 << 20):
                total += len(block)
    return total / 1e6 / (time.perf_counter() - start)


class _NeverVerified(set):
    def add(self, item) -> None:  # local shards are hashed on every read, as remote ones are
        pass


@contextlib.contextmanager
def _hash_every_read():
    from stemsep.data import tarstream

    saved, tarstream._verified = tarstream._verified, _NeverVerified()
    try:
        yield
    finally:
        tarstream._verified = saved


def compare_http(work: Path, args: argparse.Namespace) -> None:
    shards = work / "shards"
    names = sorted(p.name for p in shards.glob("train-*.tar"))
    size = sum((shards / n).stat().st_size for n in names) / 1e6
    server, base = serve(shards, args.url)
    try:
        print(f"{args.songs} songs x {args.seconds:.0f} s in {len(names)} shards ({size:.0f} MB), segment "
              f"{args.segment} s, batch {args.batch}, {args.batches} batches, {args.repeats} interleaved repeats, "
              f"1 thread = one worker; HTTP: python -m http.server at {base}")
        local, hashed, remote, local_mb, remote_mb = [], [], [], [], []
        for _ in range(args.repeats):
            local.append(ours(shards, args.segment, args.batch, args.batches, False))
            remote.append(ours(base, args.segment, args.batch, args.batches, False))
            with _hash_every_read():
                hashed.append(ours(shards, args.segment, args.batch, args.batches, False))
            local_mb.append(read_rate(shards, names))
            remote_mb.append(read_rate(base, names))
        for label, other in (("local files", local), ("local files hashed on every read", hashed)):
            ratios = [r / x for r, x in zip(remote, other, strict=True)]
            print(f"training stream: HTTP {statistics.median(remote):6.2f} segments/s per worker vs {label} "
                  f"{statistics.median(other):6.2f}: ratio HTTP/local {statistics.median(ratios):.2f}x (per repeat: "
                  f"{', '.join(f'{r:.1f}/{x:.1f}' for r, x in zip(remote, other, strict=True))})")
        print(f"shard bytes alone (no hashing, no decoding): HTTP {statistics.median(remote_mb):6.0f} MB/s   "
              f"local files {statistics.median(local_mb):6.0f} MB/s")
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--segment", type=float, default=7.8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    parser.add_argument("--reference-malloc", choices=["same", "default"], default="same",
                        help="same: the reference runs with our allocator tuning too; default: in a spawned "
                             "process with glibc's default malloc settings (as demucs ships)")
    parser.add_argument("--train-step", nargs="*", default=[], metavar="MODEL_YAML",
                        help="also time a CPU training step of these model configs at the same segment "
                             "(with all torch threads of this machine) and compare with one worker's supply")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="batch size of the timed training step (default --batch; the released htdemucs "
                             "needs ~10 GB of RAM per example at 7.8 s)")
    parser.add_argument("--url", default=None, metavar="http://HOST:PORT",
                        help="compare the stream over HTTP (the shards served at this address) with local files, "
                             "instead of the demucs comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tuned = keep_large_buffers()  # process-wide (see the docstring)
    pool = None
    if args.reference_malloc == "default":  # a fresh interpreter: fork would inherit the tuning
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
                                   initargs=(1,))
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        root = generate_corpus(work / "corpus", songs=args.songs, seconds=args.seconds, test_songs=0)
        from stemsep.data.corpus.layouts import discover_songs
        from stemsep.data.shards.shard import shard_split

        songs = discover_songs(root, "folder", "train")
        shard_split(songs, work / "shards", "train", DEFAULT_SOURCES, max_shard_size=256 * 10**6)
        if args.url:
            compare_http(work, args)
            return
        has_soundstretch = shutil.which("soundstretch") is not None
        print(f"{args.songs} songs x {args.seconds:.0f} s, segment {args.segment} s, batch {args.batch}, "
              f"{args.batches} batches, {args.repeats} interleaved repeats, 1 thread, "
              f"malloc tuning {'unavailable' if not tuned else 'ours only' if pool else 'on for both'}; "
              f"soundstretch {'found' if has_soundstretch else 'NOT installed: demucs cannot repitch'}")
        configs = [True, False] if has_soundstretch else [False]
        results: dict[tuple[bool, str], list[float]] = {(r, side): [] for r in configs for side in ("ours", "ref")}
        for _ in range(args.repeats):
            for repitch in configs:
                results[repitch, "ours"].append(ours(work / "shards", args.segment, args.batch, args.batches, repitch))
                ref_args = (root, args.segment, args.batch, args.batches, repitch)
                results[repitch, "ref"].append(pool.submit(reference, *ref_args).result() if pool
                                               else reference(*ref_args))
        for repitch in configs:
            a, b = results[repitch, "ours"], results[repitch, "ref"]
            label = "with repitch" if repitch else "without repitch"
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            print(f"{label:>16}: stemsep {statistics.median(a):7.2f} segments/s   demucs {statistics.median(b):7.2f} "
                  f"segments/s   ratio {statistics.median(ratios):5.2f}x  (per repeat: "
                  f"{', '.join(f'{x:.1f}/{y:.1f}' for x, y in zip(a, b, strict=True))})")
        floor = decode_floor(work / "shards", args.segment)
        print(f"FLAC decode alone, {len(DEFAULT_SOURCES)} stems x {args.segment} s from a random offset: "
              f"{floor * 1e3:.1f} ms per example = at most {1 / floor:.1f} segments/s for any FLAC loader that "
              f"decodes each example's audio once; = {1 / floor / statistics.median(results[configs[0], 'ref']):.2f}x "
              f"the reference {'with' if configs[0] else 'without'} repitch")
        supply = statistics.median(results[configs[0], "ours"])
        if not has_soundstretch:
            a = ours(work / "shards", args.segment, args.batch, args.batches, True)
            print(f"stemsep with in-process repitch: {a:7.2f} segments/s (demucs cannot repitch without soundstretch)")
            supply = a
        torch.set_num_threads(os.cpu_count() or 1)
        train_batch = args.train_batch or args.batch
        for config in args.train_step:
            seconds = train_step_seconds(Path(config), args.segment, train_batch, 2)
            consumed = train_batch / seconds
            print(f"train step {config} ({torch.get_num_threads()} threads, batch {train_batch} x {args.segment} s): "
                  f"{seconds:.2f} s = {consumed:.2f} segments/s consumed; one worker with repitch supplies "
                  f"{supply:.1f} segments/s = {supply / consumed:.0f}x")
    finally:
        if pool is not None:
            pool.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
