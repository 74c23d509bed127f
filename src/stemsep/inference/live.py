"""``stemsep stream``: separate a file, a folder, raw PCM on stdin or a sound card block by block,
as a live system would, and say whether it keeps up.

Kept as one module (over 400 lines): the command is one loop with three kinds of input (files,
raw stdin, a capture device), three kinds of output (stem files, raw stdout, a playback device)
and the meter that times it, each a small piece here; PortAudio stays in :mod:`.devices`.

:func:`stream_audio` loads the model once (:meth:`Separator.from_checkpoint
<stemsep.inference.separator.Separator.from_checkpoint>`), makes its
:class:`~stemsep.inference.stream.StreamingSeparator` (:meth:`Separator.stream
<stemsep.inference.separator.Separator.stream>`: HS-TasNet step by step, other networks on
``apply_model``'s chunk grid) and pushes the input ``block`` samples at a time:

* a file (or each file of a folder, found as ``stemsep separate`` finds them) is decoded, resampled
  to the model's rate and converted to its channels as ``separate`` does, one fresh stream per file;
* ``-``: raw interleaved little-endian PCM on stdin (``rate``, ``channels``, ``dtype``); the rate
  must be the model's (it is not resampled: a resampler would add its own delay to the stream), the
  channels are converted as for a file (mono duplicated, surround downmixed);
* ``input_device``: a capture device, until Ctrl-C or ``seconds``.

Outputs: ``out`` a folder: one file per stem laid out as ``separate`` lays it out (the ``{track}``
of stdin is ``stdin``, of a device ``live``), written to a staging folder and renamed at the end,
**aligned**: the first ``latency`` samples dropped and the flush included, so the files hold the
offline result (``net(whole)`` for a causal net, ``apply_model`` with the same chunking for the
others; no normalisation by the whole file's statistics, which a stream cannot know).
``out="-"``: raw PCM on stdout in ``dtype``, interleaved per frame as sources x channels
(``s0c0 s0c1 s1c0 s1c1 ...``, sources in the model's order or as ``stems``/``two_stems`` select),
the **live** signal: ``latency`` samples of silence first, the flush at the end (input length plus
latency), unless ``align``. ``output_device``: the sum of the selected stems, live.

The meter times every ``push``; with ``realtime`` a block is read only once its duration has passed
on the wall clock since the previous one (a capture device paces itself). A block's output is due
one block duration after the block arrived; a block that misses it is an under-run, counted, and
the clock restarts from then (no sample is dropped). :class:`StreamReport` sums it up.
"""

from __future__ import annotations

import io
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import torch

from stemsep.errors import BadArgumentError, BadAudioError, StemsepError
from stemsep.inference.devices import Capture, Device, Playback, find_device
from stemsep.inference.inputs import find_inputs, track_name
from stemsep.inference.separator import Separator
from stemsep.inference.stream import StreamingSeparator
from stemsep.inference.tracks import TrackWriter, _Job, check_clashes
from stemsep.inference.windowed import mix_blocks
from stemsep.inference.writing import DEFAULT_FILENAME, WriteOptions
from stemsep.io.audio import DownmixWarning, to_channels
from stemsep.io.files import ensure_writable_dir
from stemsep.io.provenance import provenance
from stemsep.io.staging import remove_stale_scratch

STDIN = "-"
# Raw PCM sample types: little-endian, and the scale of integers ((-scale .. scale-1) <-> [-1, 1)).
RAW_DTYPES = {"float32": ("<f4", None), "int16": ("<i2", 32768), "int32": ("<i4", 2 ** 31)}


def positive_count(value: int | str | None, option: str) -> int | None:
    """``value`` (an int, or the digits the command line gave) as a positive ``int``; None stays None."""
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) <= 0:
        raise BadArgumentError(f"{option} {value}: must be a positive whole number")
    return int(text)


class RawCodec:
    """Raw interleaved PCM of one ``dtype`` (:data:`RAW_DTYPES`) <-> float32 arrays."""

    def __init__(self, dtype: str):
        if dtype not in RAW_DTYPES:
            raise BadArgumentError(f"--dtype {dtype}: choose {', '.join(RAW_DTYPES)}")
        code, self.scale = RAW_DTYPES[dtype]
        self.dtype = np.dtype(code)

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        """Interleaved frames -> ``(channels, n)`` float32 (integers divided by their scale)."""
        frames = np.frombuffer(data, self.dtype).reshape(-1, channels).T.astype(np.float32)
        return frames / np.float32(self.scale) if self.scale else frames

    def encode(self, stems: np.ndarray) -> bytes:
        """``(sources, channels, n)`` -> frames of ``sources x channels`` samples (integers clipped)."""
        frames = np.ascontiguousarray(stems.transpose(2, 0, 1), dtype=np.float64 if self.scale else np.float32)
        if self.scale:
            frames = np.clip(np.rint(frames * self.scale), -self.scale, self.scale - 1)
        return frames.astype(self.dtype).tobytes()


# ------------------------------------------------------------------------------------------ inputs
def reblock(chunks: Iterable[np.ndarray], block: int) -> Iterator[np.ndarray]:
    """``(channels, any n)`` arrays -> ``(channels, block)`` ones (the last may be shorter)."""
    held: list[np.ndarray] = []
    count = 0
    for chunk in chunks:
        held.append(chunk)
        count += chunk.shape[-1]
        if count >= block:
            joined = np.concatenate(held, -1)
            whole = count - count % block
            yield from (joined[:, start:start + block] for start in range(0, whole, block))
            held, count = [joined[:, whole:]], count - whole
    if count:
        yield np.concatenate(held, -1)


def _read(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end of the stream."""
    parts, left = [], size
    while left:
        data = stream.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def raw_blocks(stream: BinaryIO, codec: RawCodec, channels: int, block: int, model_channels: int,
               name: str = "stdin") -> Iterator[np.ndarray]:
    """Blocks of ``block`` frames of raw PCM from ``stream``, as ``(model_channels, n)`` float32.
    NaN or Inf samples are a one-line error; a last incomplete frame is dropped with a note."""
    frame = channels * codec.dtype.itemsize
    done = 0
    while True:
        data = _read(stream, block * frame)
        whole = len(data) - len(data) % frame
        if whole < len(data):
            print(f"note: {name}: ended inside a frame; its last {len(data) - whole} byte(s) dropped",
                  file=sys.stderr)
        if not whole:
            return
        mix = codec.decode(data[:whole], channels)
        if not np.isfinite(mix).all():
            bad = int(np.flatnonzero(~np.isfinite(mix).all(0))[0])
            raise BadAudioError(f"{name}: NaN or Inf sample at frame {done + bad}")
        done += mix.shape[-1]
        yield from converted([mix], model_channels, name)
        if len(data) < block * frame:
            return


def converted(blocks: Iterable[np.ndarray], model_channels: int, name: str) -> Iterator[np.ndarray]:
    """``blocks`` in the model's channels, as ``separate`` converts a file's (mono duplicated,
    surround downmixed); the downmix is noted once, up front, by :func:`check_raw_channels`."""
    for mix in blocks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DownmixWarning)
            yield to_channels(mix, model_channels, name=name)


def check_raw_channels(channels: int, model_channels: int, name: str = "stdin") -> None:
    """Refuse a channel count the model cannot take (as ``separate`` would); note a downmix."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DownmixWarning)
        to_channels(np.zeros((channels, 0), np.float32), model_channels, name=f"{name} (--channels {channels})")
    for warning in caught:
        print(f"note: {warning.message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ outputs
class Sink(Protocol):
    """Where stems go, block by block: ``add((sources, channels, n))``; ``aligned``: wants the
    stems of input sample 0 first (the live signal's first ``latency`` samples dropped)."""

    aligned: bool

    def add(self, stems: torch.Tensor) -> None: ...


class RawSink:
    """The selected stems as raw PCM frames on a binary stream (stdout), flushed every block."""

    def __init__(self, stream: BinaryIO, codec: RawCodec, opts: WriteOptions, sources: list[str], aligned: bool):
        self.stream, self.codec, self.opts, self.sources, self.aligned = stream, codec, opts, sources, aligned

    def add(self, stems: torch.Tensor) -> None:
        chosen = torch.stack(self.opts.mix_outputs(stems, self.sources))
        try:
            self.stream.write(self.codec.encode(chosen.cpu().numpy()))
            self.stream.flush()
        except BrokenPipeError:
            _to_devnull(self.stream)
            raise StemsepError("stdout: the program reading the stems closed the pipe; stream stopped") from None


def _to_devnull(stream: BinaryIO) -> None:
    """Point a closed pipe's descriptor at /dev/null: the interpreter's last flush then cannot fail."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


class PlaySink:
    """The sum of the selected stems on a playback device (the live signal)."""

    aligned = False

    def __init__(self, playback: Playback, opts: WriteOptions, sources: list[str]):
        self.playback, self.opts, self.sources = playback, opts, sources

    def add(self, stems: torch.Tensor) -> None:
        self.playback.write(sum(self.opts.mix_outputs(stems, self.sources)).cpu().numpy())


class FileSink:
    """The selected stems into a track's :class:`~stemsep.inference.writing.StemSink` (aligned)."""

    aligned = True

    def __init__(self, sink, opts: WriteOptions, sources: list[str]):
        self.sink, self.opts, self.sources = sink, opts, sources

    def add(self, stems: torch.Tensor) -> None:
        self.sink.add(self.opts.mix_outputs(stems, self.sources))


class _Aligned:
    """A sink fed the live signal less its first ``latency`` samples."""

    def __init__(self, sink: Sink, latency: int):
        self.sink, self.skip = sink, latency

    def add(self, stems: torch.Tensor) -> None:
        drop = min(self.skip, stems.shape[-1])
        self.skip -= drop
        if stems.shape[-1] > drop:
            self.sink.add(stems[..., drop:])


# ------------------------------------------------------------------------------------------ meter
@dataclass(frozen=True)
class StreamReport:
    """What a :func:`stream_audio` run measured (also printed by the command, :meth:`summary`).

    ``latency``: algorithmic, in samples at ``samplerate`` (output sample ``n`` is the stem of input
    sample ``n - latency``); ``compute_ms``: per-block ``push`` time, (p50, p99, max);
    ``compute_share``: the same of each block's ``push`` time over its own duration; ``underruns``:
    blocks whose output was not ready one block duration after the block arrived (plus the blocks
    a playback device reported late); ``overflows``: blocks a capture device dropped input for;
    ``paced``: ``"realtime"`` (reads paced to the wall clock), ``"device"`` or ``"none"`` (as fast as
    possible); ``outputs``: the files written."""

    samplerate: int
    block: int
    latency: int
    blocks: int
    samples: int
    compute_ms: tuple[float, float, float]
    compute_share: tuple[float, float, float]
    compute_seconds: float
    underruns: int
    paced: str
    overflows: int = 0
    outputs: tuple[Path, ...] = ()

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency / self.samplerate

    @property
    def block_ms(self) -> float:
        return 1000.0 * self.block / self.samplerate

    @property
    def realtime_factor(self) -> float:
        """Compute time over audio time (below 1: faster than real time)."""
        return self.compute_seconds / (self.samples / self.samplerate) if self.samples else 0.0

    def summary(self) -> str:
        p50, p99, peak = self.compute_ms
        share = "/".join(f"{value:.2f}" for value in self.compute_share)
        paced = {"realtime": "paced to the wall clock", "device": "paced by the device",
                 "none": "as fast as possible"}[self.paced]
        lines = [f"stream: {self.blocks} block(s) of {self.block} samples ({self.block_ms:.1f} ms), "
                 f"{self.samples / self.samplerate:.2f} s of audio at {self.samplerate} Hz, {paced}",
                 f"  latency    {self.latency} samples = {self.latency_ms:.1f} ms (algorithmic)",
                 f"  compute    p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {peak:.2f} ms per block "
                 f"= {share} of the block's duration",
                 f"  real-time factor {self.realtime_factor:.3f}, under-runs {self.underruns}"
                 + (f", input overflows {self.overflows}" if self.overflows else "")]
        return "\n".join(lines)


@dataclass
class Meter:
    """Times blocks against their deadlines (see the module docstring); ``clock``/``sleep`` are
    the wall clock's."""

    samplerate: int
    realtime: bool = False
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    computes: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    total: float = 0.0
    samples: int = 0
    underruns: int = 0
    last: float | None = None  # when the previous block arrived (realtime), None: a new stream

    def restart(self) -> None:
        """A new stream: its first block arrives one block duration from now."""
        self.last = None

    def arrive(self, count: int) -> float:
        """Wait (realtime) until a block of ``count`` samples has arrived; returns its deadline."""
        duration = count / self.samplerate
        now = self.clock()
        if not self.realtime:
            return now + duration
        arrival = (now if self.last is None else self.last) + duration
        if arrival > now:
            self.sleep(arrival - now)
        self.last = arrival
        return arrival + duration

    def done(self, count: int, compute: float, deadline: float) -> None:
        """A block of ``count`` samples took ``compute`` seconds and was delivered now."""
        self.computes.append(compute)
        self.shares.append(compute * self.samplerate / count)
        self.total += compute
        self.samples += count
        finish = self.clock()
        if finish > deadline:
            self.underruns += 1
            if self.realtime:
                self.last = max(self.last, finish - count / self.samplerate)  # the clock restarts from now

    def report(self, block: int, latency: int, paced: str, **extra) -> StreamReport:
        return StreamReport(self.samplerate, block, latency, len(self.computes), self.samples,
                            _spread([1000.0 * c for c in self.computes]), _spread(self.shares), self.total,
                            self.underruns, paced, **extra)


def _spread(values: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) of ``values`` (zeros when there are none)."""
    data = np.asarray(values or [0.0])
    return float(np.percentile(data, 50)), float(np.percentile(data, 99)), float(data.max())


def pump(streamer: StreamingSeparator, blocks: Iterable[np.ndarray], sinks: Sequence[Sink], meter: Meter,
         interruptible: bool = False) -> int:
    """Push ``blocks`` through ``streamer`` into ``sinks`` (aligned ones less the first ``latency``
    samples), timed by ``meter``; flush at the end. Returns the input samples pushed. With
    ``interruptible`` (a capture device), Ctrl-C ends the input: what was pushed is flushed and delivered."""
    outs = [_Aligned(sink, streamer.latency) if sink.aligned else sink for sink in sinks]
    live = [sink for sink in outs if isinstance(sink, PlaySink)]  # may block: paced by the device
    timed = [sink for sink in outs if not isinstance(sink, PlaySink)]
    meter.restart()
    pushed = 0
    try:
        for block in blocks:
            deadline = meter.arrive(block.shape[-1])
            start = time.perf_counter()
            out = streamer.push(torch.from_numpy(np.ascontiguousarray(block)))
            compute = time.perf_counter() - start
            for sink in timed:
                sink.add(out)
            meter.done(block.shape[-1], compute, deadline)
            for sink in live:
                sink.add(out)
            pushed += block.shape[-1]
    except KeyboardInterrupt:
        if not interruptible:
            raise
    start = time.perf_counter()
    tail = streamer.flush()
    meter.total += time.perf_counter() - start
    for sink in outs:
        sink.add(tail)
    return pushed


# ------------------------------------------------------------------------------------------ the command
def natural_block(streamer: StreamingSeparator) -> int:
    """The default ``--block``: the largest step of the engines (a causal network's hop, e.g. 512
    for HS-TasNet; a windowed one's chunk stride), so that every push computes about one step."""
    steps = [engine.contract.hop if hasattr(engine, "contract") else engine.stride for engine in streamer.engines]
    return max(steps)


def _check_io(inputs: list[str], out: str | None, output_device, input_device, rate, channels, seconds) -> None:
    """Refuse combinations of inputs and outputs that make no stream (one line each)."""
    if not inputs and input_device is None:
        raise BadArgumentError("name an input: audio files or folders, '-' (raw PCM on stdin), or --input-device")
    if inputs and input_device is not None:
        raise BadArgumentError(f"--input-device and {inputs[0]}: choose one input")
    if STDIN in inputs and len(inputs) > 1:
        raise BadArgumentError("'-' (raw PCM on stdin) is a whole input: name no files with it")
    if out is None and output_device is None:
        raise BadArgumentError("choose where the stems go: -o DIR (stem files), -o - or --stdout (raw PCM), "
                               "or --output-device")
    if STDIN in inputs and (rate is None or channels is None):
        raise BadArgumentError("'-' (raw PCM on stdin) needs --rate and --channels (e.g. --rate 44100 --channels 2 "
                               "--dtype float32)")
    if STDIN not in inputs and rate is not None:
        raise BadArgumentError(f"--rate {rate}: only raw PCM on stdin ('-') needs it (a file's header gives its "
                               "rate; a device is opened at the model's)")
    if inputs and STDIN not in inputs and channels is not None:
        raise BadArgumentError(f"--channels {channels}: only raw PCM on stdin ('-') or --input-device takes it")
    if seconds is not None and (input_device is None or not seconds > 0):
        raise BadArgumentError(f"--seconds {seconds}: a positive duration, for --input-device only")


def stream_audio(inputs: Sequence[str | Path] = (), *, models: str | Path | Sequence[str | Path],
                 out: str | Path | None = None, rate: int | str | None = None, channels: int | str | None = None,
                 dtype: str = "float32", block: int | str | None = None, segment: float | None = None,
                 overlap: float | None = None, batch_size: int | None = None, device: str | None = None,
                 weights: Sequence[Sequence[float]] | None = None, realtime: bool = False, align: bool = False,
                 input_device: str | int | None = None, output_device: str | int | None = None,
                 seconds: float | None = None, format: str = "wav", bits: int = 24, clip_mode: str = "rescale",
                 filename: str = DEFAULT_FILENAME, two_stems: str | None = None,
                 stems: str | Sequence[str] | None = None, overwrite: bool = False,
                 stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> StreamReport:
    """``stemsep stream``: see the module docstring. ``inputs``: files, folders, or ``"-"`` (raw PCM
    on ``stdin``, default ``sys.stdin.buffer``); ``out``: a folder, or ``"-"`` (raw PCM on ``stdout``,
    default ``sys.stdout.buffer``). Writing options as ``separate``'s (``format``, ``bits``,
    ``clip_mode``, ``filename``, ``two_stems``, ``stems``; ``overwrite``: replace outputs of another
    input). ``block`` default: :func:`natural_block`. ``segment``/``overlap``/``batch_size``:
    windowed geometry (given, they stream a causal network windowed too)."""
    inputs = [str(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    rate, channels = positive_count(rate, "--rate"), positive_count(channels, "--channels")
    block = positive_count(block, "--block")
    out = None if out is None else str(out)
    _check_io(inputs, out, output_device, input_device, rate, channels, seconds)
    codec = RawCodec(dtype)
    opts = WriteOptions(format=format, bits=bits, clip_mode=clip_mode, filename=filename, two_stems=two_stems,
                        stems=stems)
    folder = None if out in (None, STDIN) else Path(out)
    found = find_inputs([Path(p) for p in inputs], folder) if inputs and STDIN not in inputs else []
    capture = None if input_device is None else find_device(input_device, "input")
    playback = None if output_device is None else find_device(output_device, "output")
    models = [models] if isinstance(models, (str, Path)) else list(models)
    if not models:
        raise BadArgumentError("--model: name the checkpoint to stream with (--model CKPT)")
    geometry = {k: v for k, v in (("segment", segment), ("overlap", overlap)) if v is not None}
    separator = Separator.from_checkpoint(models, device, shifts=0, weights=weights, batch_size=batch_size,
                                          **geometry)
    model_rate, model_channels = separator.samplerate, separator.audio_channels
    if STDIN in inputs:
        if rate != model_rate:
            raise BadArgumentError(f"--rate {rate}: the model runs at {model_rate} Hz and raw input is not "
                                   f"resampled; resample upstream (ffmpeg -ar {model_rate}, sox -r {model_rate}) "
                                   "or stream the file itself (files are resampled)")
        check_raw_channels(channels, model_channels)
    opts.output_stems(separator.sources)  # unknown --stems / --two-stems names: before anything runs
    streamer = separator.stream(**geometry)
    block = block or natural_block(streamer)
    causal = all(hasattr(engine, "contract") for engine in streamer.engines)
    separator.run_key.update(stream="causal" if causal else "windowed")  # not separate's stems: no normalisation
    meter = Meter(model_rate, realtime=realtime and capture is None)
    sinks: list[Sink] = []
    if out == STDIN:
        sinks.append(RawSink(stdout or sys.stdout.buffer, codec, opts, separator.sources, aligned=align))
    player = None if playback is None else Playback(playback, model_rate, model_channels, block)
    take = None
    try:
        if player is not None:
            sinks.append(PlaySink(player, opts, separator.sources))
        if found:
            sources = [_Source(track_name(item.path), item.path, item.folder) for item in found]
        elif capture is not None:
            take = _capture(capture, channels, model_rate, model_channels, block, seconds)
            sources = [_Source("live", blocks=lambda: converted(take, model_channels, "live"), live=True)]
        else:
            sources = [_Source("stdin", blocks=lambda: raw_blocks(stdin or sys.stdin.buffer, codec, channels, block,
                                                                  model_channels))]
        written = _run_all(separator, streamer, sources, sinks, meter, opts, folder, overwrite, block)
    finally:
        if player is not None:
            player.close()
        if take is not None:
            take.close()
    paced = "device" if capture is not None else "realtime" if realtime else "none"
    report = meter.report(block, streamer.latency, paced, overflows=take.overflows if take else 0,
                          outputs=tuple(written))
    return replace(report, underruns=report.underruns + player.underflows) if player else report


def _capture(device: Device, channels: int | None, rate: int, model_channels: int, block: int,
             seconds: float | None) -> Capture:
    """The capture of ``device`` at the model's rate, ``channels`` of it (default: as many as the
    model takes, at most the device's), converted to the model's as a file's are."""
    channels = channels or min(device.inputs, model_channels)
    check_raw_channels(channels, model_channels, "live")
    return Capture(device, rate, channels, block, seconds)


@dataclass(frozen=True)
class _Source:
    """One stream of the run: a file (``path``), else stdin or a device whose ``blocks()`` give
    ``(model channels, n)`` float32 at the model's rate; ``name`` its ``{track}``; ``live``: a
    capture device (Ctrl-C ends it)."""

    name: str
    path: Path | None = None
    folder: str = ""
    blocks: Callable[[], Iterable[np.ndarray]] | None = None
    live: bool = False


def _run_all(separator: Separator, streamer: StreamingSeparator, sources: list[_Source], sinks: list[Sink],
             meter: Meter, opts: WriteOptions, folder: Path | None, overwrite: bool, block: int) -> list[Path]:
    """Stream every input (a fresh stream each) into ``sinks`` and, with ``folder``, its track's files."""
    rate, channels = separator.samplerate, separator.audio_channels
    writer = jobs = None
    if folder is not None:
        writer = TrackWriter(separator, folder, opts)
        jobs = [_job(writer, source) for source in sources]
        check_clashes(jobs)
        if not overwrite:
            for job in jobs:
                writer.state(job)  # outputs of another input: a one-line error before anything is written
        ensure_writable_dir(folder)
        remove_stale_scratch(folder)
    written: list[Path] = []
    for index, source in enumerate(sources):
        info: dict = {}
        if source.path is not None:
            blocks = reblock(mix_blocks(source.path, rate, channels, info), block)  # resampled, channels as separate
        else:
            blocks = source.blocks()

        def produce(sink, _scratch, blocks=blocks, info=info, live=source.live):
            pushed = pump(streamer, blocks, [*sinks, FileSink(sink, opts, separator.sources)], meter, live)
            return pushed, info.get("frames", pushed)

        if writer is None:
            pump(streamer, blocks, sinks, meter, source.live)
            continue
        writer._write(jobs[index], produce)
        written += jobs[index].targets.values()
    return written


def _job(writer: TrackWriter, source: _Source) -> _Job:
    """The track of a file (as ``separate`` names it), or of stdin / a device (``{track}`` its name,
    ``{trackext}`` ``raw``; its provenance names ``<stdin>`` / ``<live>`` as the input)."""
    if source.path is not None:
        return writer.job(source.path, source.name, source.folder)
    name = source.name
    targets = writer.opts.paths(writer.out, name, "raw", writer.names)
    return _Job(Path(name), name, targets, provenance({"input": f"<{name}>"}, writer.key),
                folder=writer.opts.track_folder(writer.out, name, "raw"))
