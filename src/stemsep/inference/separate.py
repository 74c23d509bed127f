"""``stemsep separate``: split audio files into stems with one or several trained models.

    stemsep separate song.wav other.flac --model htdemucs.ckpt -o separated/
    stemsep separate musdb/test --model a.ckpt --model b.ckpt --weights 1,0,1,1 0,1,0,0 -o out/

Writes ``OUTDIR/<track>/<source>.<wav|flac|mp3>`` (``<track>`` is the file name without suffix,
or the parent folder's name for MUSDB's ``<track>/mixture.wav``; other layouts with a
``--filename`` template; :class:`WriteOptions`). A track's files are staged in a hidden
``.<track>.part`` folder (locked by the writing process; a killed run's is removed by the next:
:mod:`stemsep.io.staging`) and moved into place once all are written, so a rerun of a killed run
skips exactly the finished tracks (each stem records the input and options that produced it:
:mod:`stemsep.io.provenance`); ``--overwrite`` redoes them. Several ``--model`` make a bag whose estimates
are averaged per source (``--weights``: one list per model). Chunks of one long file — or of many
short files — go through the network ``--batch-size`` at a time
(:func:`stemsep.inference.apply_model`). Memory: short files are separated whole; a file longer
than one window streams (:func:`separate_stream`: one window in memory, whatever the duration).
:func:`separate_files` is the command as a library function; which files it separates, and their
track names, come from :mod:`stemsep.inference.inputs`.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import string
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from stemsep.contract import bag_members, check_same_kind, input_length, segment_of, uses_train_segment
from stemsep.errors import BadArgumentError, BadAudioError, StemsepError
from stemsep.inference.bag import BagOfModels, check_weights
from stemsep.inference.chunked import apply_model_many, check_options, chunk_stride
from stemsep.inference.cpu import optimize_for_cpu
from stemsep.inference.device import resolve_device
from stemsep.inference.inputs import find_inputs, track_name, trackext
from stemsep.io.audio import (
    MP3_BITRATES,
    READ_BLOCK,
    WRITE_FORMATS,
    Resampler,
    is_integer_format,
    iter_mix,
    open_writer,
    probe_mix,
)
from stemsep.io.checkpoint import load_separator
from stemsep.io.files import atomic_path, ensure_writable_dir
from stemsep.io.provenance import input_identity, provenance, read_provenance
from stemsep.io.staging import RAW_PREFIX, SCRATCH_NAME, TrackStaging, remove_stale_scratch

FORMATS = WRITE_FORMATS
BACKENDS = ("torch", "onnxruntime", "torchscript")
BITS = (16, 24, 32)


def default_batch_size(device: torch.device) -> int:
    """Chunks per network call: 1 on CPU (measured: batching chunks is slower there), 8 on GPU."""
    return 1 if device.type == "cpu" else 8


def load_models(paths: Sequence[Path], weights: Sequence[Sequence[float]] | None, device: torch.device,
                backend: str = "torch") -> torch.nn.Module:
    """The network (one model, or a bag of them mixed with ``weights``), on ``device``, in eval mode;
    on CPU with its CPU inference rewrites (:func:`~stemsep.inference.cpu.optimize_for_cpu`)."""
    if backend == "torch":
        nets = [load_separator(path, map_location="cpu") for path in paths]
    else:
        from stemsep.inference.exported import load_exported

        nets = [load_exported(path, backend) for path in paths]
    from stemsep.io.quantized import is_quantized

    if device.type != "cpu" and any(is_quantized(n) for n in nets):
        raise StemsepError(f"int8 models (stemsep quantize) run on the CPU only; add --device cpu (not {device})")
    check_same_kind(nets, [str(p) for p in paths])
    rows = check_weights(weights, len(nets), len(nets[0].sources))
    net = nets[0] if len(nets) == 1 and rows is None else BagOfModels(nets, weights=rows)
    net = net.to(device).eval()
    return optimize_for_cpu(net) if device.type == "cpu" and backend == "torch" else net


CLIP_MODES = ("rescale", "clamp", "none")
TEMPLATE_FIELDS = ("track", "trackext", "folder", "stem", "ext")
DEFAULT_FILENAME = "{track}/{stem}.{ext}"
WINDOW_SECONDS = 120.0  # output samples per streaming window (plus the context each side it needs)
_STATS_BLOCK = 1 << 16  # the mix statistics are summed in blocks of this many samples, in float64


def _names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(s.strip() for s in items if s.strip())


def check_template(template: str) -> None:
    """Refuse a ``--filename`` template with unknown variables, without ``{stem}``, or leaving ``OUT``."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise BadArgumentError(f"--filename {template!r}: not a valid template ({err})") from None
    unknown = sorted({f for f in fields if f not in TEMPLATE_FIELDS})
    if unknown:
        raise BadArgumentError(f"--filename {template!r}: unknown variable {{{unknown[0]}}} (use "
                               + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS) + ")")
    if "stem" not in fields:
        raise BadArgumentError(f"--filename {template!r}: must contain {{stem}} (each stem needs its own file)")
    if template.startswith(("/", "\\")) or ".." in Path(template).parts:
        raise BadArgumentError(f"--filename {template!r}: must be a relative path inside the output directory")


def check_write_options(format: str, bits: int, *, mp3_bitrate: int = 320, clip_mode: str = "rescale",
                        filename: str = DEFAULT_FILENAME, two_stems: str | None = None,
                        stems: Sequence[str] | str | None = None) -> None:
    """Refuse writing options :class:`TrackWriter` cannot honour (one-line :class:`BadArgumentError`)."""
    if format not in FORMATS:
        raise BadArgumentError(f"--format {format}: choose {', '.join(FORMATS)}")
    if format != "mp3" and bits not in BITS:
        raise BadArgumentError(f"--format {format} --bits {bits}: choose --bits 16, 24 or 32")
    if format == "flac" and bits == 32:
        raise BadArgumentError("--bits 32 is float WAV only; use --format wav or --bits 24 for FLAC")
    if format == "mp3" and mp3_bitrate not in MP3_BITRATES:
        raise BadArgumentError(f"--mp3-bitrate {mp3_bitrate}: choose one of {', '.join(map(str, MP3_BITRATES))}")
    if clip_mode not in CLIP_MODES:
        raise BadArgumentError(f"--clip-mode {clip_mode}: choose {', '.join(CLIP_MODES)}")
    if two_stems is not None and _names(stems):
        raise BadArgumentError("--two-stems and --stems: choose one")
    if stems is not None and not _names(stems):
        raise BadArgumentError("--stems: name at least one source (e.g. --stems drums,vocals)")
    check_template(filename)


@dataclass(frozen=True)
class WriteOptions:
    """How a track's stems are written: ``stemsep separate``'s writing options.

    ``format`` wav/flac/mp3 (``mp3_bitrate`` kbit/s, constant), ``bits`` 16/24/32 (32: float WAV;
    not for MP3), ``clip_mode`` rescale (all stems of a track divided by ``max(1, 1.01 * peak)``,
    the peak over every written stem: nothing clips and the stems still add up), clamp (to
    ±0.99) or none, ``filename`` template (variables ``{track}``, ``{trackext}``, ``{folder}``
    (:func:`find_inputs`; empty parts of the rendered path are dropped), ``{stem}``, ``{ext}``),
    ``two_stems`` (that source and ``no_<source>``, the sum of all the others), ``stems`` (a subset), ``keep_rate`` (write at the input's sample rate, not the model's).
    """

    format: str = "wav"
    bits: int = 24
    mp3_bitrate: int = 320
    clip_mode: str = "rescale"
    filename: str = DEFAULT_FILENAME
    two_stems: str | None = None
    stems: tuple[str, ...] | None = None
    keep_rate: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stems", _names(self.stems) if self.stems is not None else None)
        check_write_options(self.format, self.bits, mp3_bitrate=self.mp3_bitrate, clip_mode=self.clip_mode,
                            filename=self.filename, two_stems=self.two_stems, stems=self.stems)

    def output_stems(self, sources: Sequence[str]) -> list[str]:
        """Names of the files written for a model with ``sources`` (one-line error for unknown names)."""
        sources = list(sources)
        if self.two_stems is not None:
            if self.two_stems not in sources:
                raise BadArgumentError(f"--two-stems {self.two_stems}: the model has no such source "
                                       f"(its sources: {', '.join(sources)})")
            return [self.two_stems, f"no_{self.two_stems}"]
        if self.stems:
            unknown = [s for s in self.stems if s not in sources]
            if unknown:
                raise BadArgumentError(f"--stems: unknown source(s) {', '.join(unknown)} "
                                       f"(the model's sources: {', '.join(sources)})")
            return [s for s in sources if s in self.stems]
        return sources

    def mix_outputs(self, stems: torch.Tensor, sources: Sequence[str]) -> list[torch.Tensor]:
        """``(sources, channels, time)`` -> the written stems, in :meth:`output_stems`' order."""
        sources = list(sources)
        if self.two_stems is not None:
            keep = sources.index(self.two_stems)
            rest = [stems[j] for j in range(len(sources)) if j != keep]
            others = rest[0].clone()
            for other in rest[1:]:
                others += other
            return [stems[keep], others]
        return [stems[sources.index(name)] for name in self.output_stems(sources)]

    def _render(self, template: str, track: str, trackext: str, folder: str, stem: str) -> str:
        rel = template.format(track=track, trackext=trackext, folder=folder, stem=stem, ext=self.format)
        return "/".join(part for part in rel.split("/") if part not in ("", "."))

    def paths(self, out: Path, track: str, trackext: str, names: Sequence[str], folder: str = "") -> dict[str, Path]:
        """``{stem: OUT/<rendered template>}``; one-line error for a name leaving ``out`` or a clash."""
        paths = {}
        for name in names:
            rel = self._render(self.filename, track, trackext, folder, name)
            if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise BadArgumentError(f"--filename {self.filename!r}: {rel!r} (track {track!r}) is not a path "
                                       "inside the output directory")
            paths[name] = out / rel
        if len(set(paths.values())) < len(paths):
            raise BadArgumentError(f"--filename {self.filename!r}: two stems of track {track!r} get the same file")
        return paths

    def track_folder(self, out: Path, track: str, trackext: str, folder: str = "") -> Path | None:
        """The folder holding this track's files only: the template's path up to its first folder
        naming ``{track}`` (without ``{stem}``), e.g. ``OUT/<track>`` for ``{track}/{stem}.{ext}``;
        None when the template has none (``{stem}/{track}.{ext}``)."""
        parts = Path(self.filename).parts
        for i, part in enumerate(parts[:-1]):
            if "{track}" in part:
                prefix = "/".join(parts[:i + 1])
                return None if "{stem}" in prefix else out / self._render(prefix, track, trackext, folder, "")
        return None

    def content_key(self) -> dict:
        """The options that change what is written (not where): part of a track's provenance."""
        return {k: v for k, v in asdict(self).items() if k != "filename"}


# ---------------------------------------------------------------------------------------- provenance
def track_state(input_path: Path, track: str, targets: dict[str, Path], record: str,
                folder: Path | None = None) -> str:
    """``"todo"``, or ``"done"`` (every target written from this input with these options);
    a :class:`StemsepError` when a target holds the output of another input (or of no recorded one),
    or when the track's ``folder`` holds other stems that another input produced."""
    wanted = json.loads(record)
    if folder is not None and folder.is_dir():
        for sibling in sorted(folder.rglob("*")):
            found = read_provenance(sibling) if sibling.is_file() and sibling not in targets.values() else None
            if found is not None and found.get("input") != wanted["input"]:
                raise StemsepError(f"{input_path}: track {track!r} already has outputs of {found['input']} "
                                   f"({sibling}); add --overwrite to replace them, or write elsewhere with -o")
    existing = [p for p in targets.values() if p.exists()]
    if not existing:
        return "todo"
    records = [read_provenance(p) for p in existing]
    for path, found in zip(existing, records, strict=True):
        if found is None or found.get("input") != wanted["input"]:
            origin = f"of {found['input']}" if found else "with no record of their input"
            raise StemsepError(f"{input_path}: track {track!r} already has outputs {origin} ({path}); "
                               "add --overwrite to replace them, or write elsewhere with -o")
    return "done" if len(existing) == len(targets) and all(r == wanted for r in records) else "todo"


# ------------------------------------------------------------------------------------------- writing
class _StemSink:
    """A track's written stems, block by block: float32 temporaries (raw, interleaved) in the staging
    folder while the peak is tracked (``--clip-mode rescale`` needs it), then the final files."""

    def __init__(self, staging: Path, names: list[str], channels: int, model_rate: int, out_rate: int):
        staging.mkdir(parents=True, exist_ok=True)
        self.names, self.channels, self.peak = names, channels, 0.0
        self.raw = {n: staging / f"{RAW_PREFIX}{i}.f32" for i, n in enumerate(names)}
        self.handles = {n: open(p, "wb") for n, p in self.raw.items()}  # noqa: SIM115 (closed in close())
        self.resamplers = {n: Resampler(model_rate, out_rate, channels) for n in names}

    def add(self, outputs: Sequence[torch.Tensor]) -> None:
        for name, wav in zip(self.names, outputs, strict=True):
            self._put(name, self.resamplers[name](wav.detach().cpu().numpy()))

    def _put(self, name: str, data: np.ndarray) -> None:
        if data.shape[-1]:
            self.peak = max(self.peak, float(np.abs(data).max()))
            self.handles[name].write(np.ascontiguousarray(data.T, dtype=np.float32).tobytes())

    def close(self) -> None:
        for name, handle in self.handles.items():
            if not handle.closed:
                self._put(name, self.resamplers[name].flush())
                handle.close()

    def write(self, staged: dict[str, Path], length: int, samplerate: int, opts: WriteOptions, comment: str) -> None:
        """Convert the temporaries into the final files (``length`` frames each: trimmed or zero-padded)."""
        self.close()
        scale = 1.0 / max(1.01 * self.peak, 1.0) if opts.clip_mode == "rescale" else 1.0
        integer = is_integer_format(opts.format, opts.bits)
        for name in self.names:
            with atomic_path(staged[name]) as tmp, open(self.raw[name], "rb") as raw, \
                    open_writer(tmp, samplerate, self.channels, fmt=opts.format, bits=opts.bits,
                                mp3_bitrate=opts.mp3_bitrate, comment=comment) as writer:
                left = length
                while left > 0:
                    block = np.fromfile(raw, np.float32, count=min(READ_BLOCK, left) * self.channels)
                    block = block.reshape(-1, self.channels)
                    if block.shape[0] == 0:
                        block = np.zeros((min(READ_BLOCK, left), self.channels), np.float32)
                    if scale != 1.0:
                        block *= np.float32(scale)
                    if opts.clip_mode == "clamp":
                        np.clip(block, -0.99, 0.99, out=block)
                    if integer:
                        np.clip(block, -1.0, 1.0, out=block)
                    writer.write(block)
                    left -= block.shape[0]
            self.raw[name].unlink()


class _Stats:
    """Mean and standard deviation (unbiased) of a mix's channel average, fed block by block.

    Sums run in float64 over fixed blocks of :data:`_STATS_BLOCK` samples, whatever sizes the
    blocks arrive in, so the whole-file and streaming paths get bit-identical statistics.
    """

    def __init__(self):
        self.carry = np.zeros(0, np.float32)
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, mix: np.ndarray) -> None:
        ref = np.concatenate([self.carry, mix.mean(0, dtype=np.float32)])
        full = ref.shape[0] - ref.shape[0] % _STATS_BLOCK
        for start in range(0, full, _STATS_BLOCK):
            self._sum(ref[start:start + _STATS_BLOCK])
        self.carry = ref[full:].copy()

    def _sum(self, block: np.ndarray) -> None:
        wide = block.astype(np.float64)
        self.count += wide.shape[0]
        self.total += float(wide.sum())
        self.squares += float(np.square(wide).sum())

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, scale)`` as float32 scalars; ``scale`` is the std, or 1 for a (near) silent mix."""
        if self.carry.shape[0]:
            self._sum(self.carry)
            self.carry = np.zeros(0, np.float32)
        n = max(self.count, 1)
        mean = self.total / n
        std = math.sqrt(max(self.squares - n * mean * mean, 0.0) / max(n - 1, 1))
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std if std > 1e-8 else 1.0, dtype=torch.float32)


def mix_stats(mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, scale)`` of a ``(channels, time)`` mix (see :class:`_Stats`)."""
    stats = _Stats()
    stats.add(mix.detach().cpu().numpy())
    return stats.result()


def separate_mixes(net: torch.nn.Module, mixes: list[torch.Tensor], *, segment: float | None = None,
                   overlap: float = 0.25, shifts: int = 1, batch_size: int = 1,
                   seed: int = 0) -> list[torch.Tensor]:
    """``(channels, time)`` each -> ``(sources, channels, time)`` each, chunks batched across them.

    With ``shifts``, every mix gets the shift offsets of ``seed`` (its stems do not depend on the
    other mixes or their order). Each mix is normalised (in place) by the mean and standard
    deviation of its channel average (:func:`mix_stats`) and the stems scaled back, as demucs'
    command does.
    """
    stats, normalised = [], []
    for mix in mixes:
        mean, scale = mix_stats(mix)
        stats.append((mean, scale))
        normalised.append(mix.sub_(mean).div_(scale))  # in place: one copy of the audio, not two
    outs = apply_model_many(net, normalised, segment=segment, overlap=overlap, shifts=shifts,
                            batch_size=batch_size, progress=sys.stderr.isatty(), seed=seed)
    return [out.mul_(scale).add_(mean) for out, (mean, scale) in zip(outs, stats, strict=True)]


@dataclass(frozen=True)
class WindowPlan:
    """Sliding windows for :func:`separate_stream`: window starts are multiples of ``align`` (every
    chunk grid's stride, so each window's chunks are the whole-file chunks), and ``margin``
    samples each side of what a window emits give every chunk covering an emitted sample its
    full input. ``length``: samples per window."""

    align: int
    margin: int
    length: int


def window_plan(net: torch.nn.Module, *, segment: float | Fraction | None = None, overlap: float = 0.25,
                window: float = WINDOW_SECONDS) -> WindowPlan | None:
    """How to stream ``net`` (``window`` seconds emitted per window), or None when it cannot be
    streamed (a network without a segment runs on whole inputs; very different bag strides)."""
    members = bag_members(net)
    nets = [member for member, _ in members] if members is not None else [net]
    strides, margin = [], 0
    for member in nets:
        seconds = segment if segment is not None else segment_of(member)
        if seconds is None:
            return None
        length = max(1, int(member.samplerate * seconds))
        needed = length if uses_train_segment(member) else input_length(member, length)
        margin = max(margin, length + max(0, needed - length) + 1)
        strides.append(chunk_stride(length, overlap))
    align = math.lcm(*strides)
    emitted = max(1, int(window * net.samplerate))
    if align > 4 * emitted:
        return None
    return WindowPlan(align=align, margin=margin, length=emitted + 2 * margin + align)


def separate_stream(net: torch.nn.Module, path: Path, sink: Callable[[torch.Tensor], None], scratch: Path, plan: WindowPlan,
                    *, segment: float | Fraction | None = None, overlap: float = 0.25, shifts: int = 1,
                    batch_size: int = 1, progress: Callable[[int, int], None] | None = None,
                    seed: int = 0) -> tuple[int, int]:
    """Separate the file ``path`` window by window, handing ``sink`` the stems ``(sources, channels, n)``
    in order; returns ``(frames at the model's rate, frames of the input)``. ``progress(done, total)``
    (frames at the model's rate) is called once the file is decoded (``done`` 0) and after each window.

    Pass 1 decodes the mix block by block (resampled, channels converted) into the float32
    file ``scratch`` while summing its statistics; pass 2 separates windows of it with
    :func:`~stemsep.inference.chunked.apply_model_many`, whose chunks and cross-fade weights
    are those of the whole file. Memory: one window, whatever the file's duration. Output equals
    :func:`separate_mixes` on the whole mix with the same ``seed`` (with ``shifts``, every window
    draws the offsets of ``seed``, as the whole file does).
    """
    channels, rate = int(net.audio_channels), int(net.samplerate)
    stats, total, info = _Stats(), 0, {}
    with open(scratch, "wb") as handle:
        for block in iter_mix(path, rate, channels, info=info):
            stats.add(block)
            handle.write(np.ascontiguousarray(block.T).tobytes())
            total += block.shape[1]
    mean, scale = stats.result()
    emitted = 0
    if progress is not None:
        progress(0, total)
    with open(scratch, "rb") as handle:
        while emitted < total:
            start = max(0, emitted - plan.margin) // plan.align * plan.align
            stop = min(total, start + plan.length)
            end = stop if stop == total else stop - plan.margin
            handle.seek(start * channels * 4)
            window = np.fromfile(handle, np.float32, count=(stop - start) * channels).reshape(-1, channels)
            mix = torch.from_numpy(np.ascontiguousarray(window.T)).sub_(mean).div_(scale)
            out = apply_model_many(net, [mix], segment=segment, overlap=overlap, shifts=shifts,
                                   batch_size=batch_size, seed=seed)[0]  # the same offsets in every window
            del mix, window
            sink(out[..., emitted - start:end - start].mul_(scale).add_(mean))
            del out
            emitted = end
            if progress is not None:
                progress(emitted, total)
    scratch.unlink()
    return total, info.get("frames", total)


def _chunk_estimate(frames: int, net: torch.nn.Module, segment: float | None, overlap: float) -> int:
    """About how many chunks a file of ``frames`` samples makes (to group short files)."""
    segment = segment or segment_of(net)
    if segment is None:
        return 1
    return -(-frames // chunk_stride(int(float(segment) * net.samplerate), overlap))


@dataclass(frozen=True)
class Separated:
    """What :func:`separate_files` did: tracks written, tracks skipped (already done), and with
    ``skip_errors`` the inputs that failed, as ``(path, one-line reason)``."""

    done: int
    skipped: int
    out: Path
    failed: tuple[tuple[Path, str], ...] = ()


def _as_list(paths: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


@dataclass
class _Job:
    path: Path
    name: str
    targets: dict[str, Path]
    record: str
    frames: int = 0  # at the model's rate, from the header (estimated for some formats)
    samplerate: int = 0  # the input's
    folder: Path | None = None  # the folder of the track's own (WriteOptions.track_folder), if any


def seed_key(shifts: int, seed: int) -> dict:
    """The seed's part of a run's provenance key: ``{"seed": seed}`` with random shifts, else nothing
    (without shifts the seed changes no sample, and outputs made before it existed stay done)."""
    return {"seed": seed} if shifts > 0 else {}


class TrackWriter:
    """Separates files with one network and one set of options and writes their tracks
    (the engine of :func:`separate_files` and :meth:`~stemsep.inference.Separator.separate_file`)."""

    def __init__(self, net: torch.nn.Module, out: Path, opts: WriteOptions, *, run_key: dict,
                 segment: float | Fraction | None = None, overlap: float = 0.25, shifts: int = 1,
                 batch_size: int = 1, window: float = WINDOW_SECONDS,
                 progress: Callable[[Path, int, int], None] | None = None, seed: int = 0):
        self.net, self.out, self.opts = net, out, opts
        self.progress = progress  # (input, frames done, frames in all) at the model's rate, per file
        self.sources = list(net.sources)
        self.names = opts.output_stems(self.sources)
        self.key = {**run_key, **opts.content_key()}
        self.segment, self.overlap, self.shifts, self.batch_size = segment, overlap, shifts, batch_size
        self.seed = seed
        self.plan = window_plan(net, segment=segment, overlap=overlap, window=window)

    def job(self, path: Path, name: str, folder: str = "") -> _Job:
        """The track of the input ``path`` named ``name``, ``folder`` its ``{folder}`` field."""
        ext = trackext(path)
        targets = self.opts.paths(self.out, name, ext, self.names, folder)
        own = self.opts.track_folder(self.out, name, ext, folder)
        return _Job(path, name, targets, provenance(input_identity(path), self.key), folder=own)

    def layout(self, job: _Job) -> TrackStaging:
        return TrackStaging(self.out, job.name, job.targets, job.folder)

    def state(self, job: _Job) -> str:
        return track_state(job.path, job.name, job.targets, job.record, self.layout(job).folder)

    def _probe(self, job: _Job) -> _Job:
        info = probe_mix(job.path)
        job.samplerate = info.samplerate
        job.frames = info.frames * int(self.net.samplerate) // max(info.samplerate, 1)
        return job

    def streams(self, job: _Job) -> bool:
        """Whether ``job`` is separated window by window (longer than one window) or in memory."""
        return self.plan is not None and job.frames > self.plan.length

    def groups(self, jobs: list[_Job], on_error: Callable[[_Job, BadAudioError], None] | None = None,
               ) -> Iterator[list[_Job]]:
        """In order: a long file alone; consecutive short files whose chunks fill about one batch.
        A file whose header cannot be read is handed to ``on_error`` (if given; else raised)."""
        group, chunks = [], 0
        for job in jobs:
            try:
                self._probe(job)
            except BadAudioError as err:
                if group:  # the files before it first: errors come in the inputs' order
                    yield group
                group, chunks = [], 0
                if on_error is None:
                    raise
                on_error(job, err)
                continue
            if self.streams(job):
                if group:
                    yield group
                group, chunks = [], 0
                yield [job]
                continue
            count = _chunk_estimate(job.frames, self.net, self.segment, self.overlap)
            if group and chunks + count > self.batch_size:
                yield group
                group, chunks = [], 0
            group.append(job)
            chunks += count
        if group:
            yield group

    def run(self, group: list[_Job], on_error: Callable[[_Job, BadAudioError], None] | None = None) -> int:
        """Separate and write ``group`` (from :meth:`groups`); returns how many tracks were written.
        A file that cannot be decoded is handed to ``on_error`` (if given; else raised)."""
        if len(group) == 1 and self.streams(group[0]):
            job = group[0]
            report = None if self.progress is None else (lambda done, total: self.progress(job.path, done, total))
            try:
                self._write(job, lambda sink, scratch: separate_stream(
                    self.net, job.path, lambda stems: sink.add(self.opts.mix_outputs(stems, self.sources)),
                    scratch, self.plan, segment=self.segment, overlap=self.overlap, shifts=self.shifts,
                    batch_size=self.batch_size, progress=report, seed=self.seed))
            except BadAudioError as err:
                if on_error is None:
                    raise
                on_error(job, err)
                return 0
            return 1
        rate, channels = int(self.net.samplerate), int(self.net.audio_channels)
        loaded, decoded = [], []
        for job in group:
            info: dict = {}
            try:
                blocks = list(iter_mix(job.path, rate, channels, info=info))
            except BadAudioError as err:
                if on_error is None:
                    raise
                on_error(job, err)
                continue
            decoded.append(job)
            loaded.append((torch.from_numpy(np.concatenate(blocks, axis=1)), info["frames"]))
            del blocks
        if not loaded:
            return 0
        stems = separate_mixes(self.net, [mix for mix, _ in loaded], segment=self.segment, overlap=self.overlap,
                               shifts=self.shifts, batch_size=self.batch_size, seed=self.seed)
        for job, track_stems, (mix, frames) in zip(decoded, stems, loaded, strict=True):
            length = mix.shape[-1]
            self._write(job, lambda sink, _, s=track_stems, n=length, f=frames: (
                sink.add(self.opts.mix_outputs(s, self.sources)), (n, f))[1])
            if self.progress is not None:
                self.progress(job.path, length, length)
        del loaded, stems
        return len(decoded)

    def _write(self, job: _Job, produce: Callable) -> None:
        """Stage the track's files (``produce(sink, scratch)`` feeds the sink, returns the frame counts),
        then commit them."""
        layout = self.layout(job)
        rate = int(self.net.samplerate)
        out_rate = job.samplerate if self.opts.keep_rate else rate
        try:
            layout.acquire()
            sink = _StemSink(layout.staging, self.names, int(self.net.audio_channels), rate, out_rate)
            try:
                frames, input_frames = produce(sink, layout.staging / SCRATCH_NAME)
            finally:
                sink.close()
            sink.write(layout.staged, input_frames if self.opts.keep_rate else frames, out_rate, self.opts,
                       job.record)
            layout.commit(json.loads(job.record)["input"])
        except OSError as err:
            raise StemsepError(f"{layout.folder or job.targets[self.names[0]]}: cannot write the separated "
                               f"track ({err.strerror or err})") from None
        finally:
            layout.cleanup()


def separate_files(inputs: str | Path | Sequence[str | Path], out: str | Path, *,
                   models: str | Path | Sequence[str | Path],
                   weights: Sequence[Sequence[float]] | None = None, shifts: int = 1, seed: int = 0,
                   overlap: float = 0.25, segment: float | None = None, batch_size: int | None = None,
                   device: str | None = None,
                   format: str = "wav", bits: int = 24, mp3_bitrate: int = 320, clip_mode: str = "rescale",
                   filename: str = DEFAULT_FILENAME, two_stems: str | None = None,
                   stems: str | Sequence[str] | None = None, keep_rate: bool = False,
                   jobs: int | None = None, overwrite: bool = False, backend: str = "torch",
                   window: float = WINDOW_SECONDS, skip_errors: bool = False,
                   progress: Callable[[Path, int, int], None] | None = None) -> Separated:
    """``stemsep separate``: write every audio file of ``inputs`` as ``out/<filename template>``.

    ``inputs``: files (any of :data:`~stemsep.io.audio.MIX_EXTENSIONS`, any rate and channel count),
    or folders searched for them; ``models``: checkpoints (several:
    a bag, mixed with ``weights[model][source]``), or ``stemsep export`` files with ``backend``
    ``"onnxruntime"``/``"torchscript"``. ``batch_size`` default: 1 on CPU, 8 on GPU; ``device``
    default: cuda when available; ``jobs``: torch CPU threads. ``seed``: of the ``shifts`` random
    offsets, drawn afresh for every track (the stems of a file depend only on it and the options,
    not on the other inputs). Writing options: see
    :class:`WriteOptions`. Every written stem records (in its comment tag) the input file that
    produced it and a digest of the options (the seed only with ``shifts``): a track whose
    outputs all come from the same input
    with the same options is skipped; outputs of another input are a one-line error unless
    ``overwrite`` (which redoes every track). Files longer than ``window`` seconds are read,
    separated and written window by window (:func:`separate_stream`: memory does not grow with duration).

    Inputs: :func:`~stemsep.inference.inputs.find_inputs` (folders are searched without hidden
    files and folders, ``out``, and stems stemsep wrote); two inputs that would write the same
    file or share a track folder are a one-line error before anything is separated.
    ``skip_errors``: an input that cannot be separated (it does not decode, or its track holds
    another input's outputs) is reported on stderr in one line and the batch goes on; the
    failures are in the result's ``failed``.
    Without it the first such error stops the batch. ``progress(input, done, total)`` (frames at
    the model's rate): for a file separated window by window, once decoded (``done`` 0) and after
    each window; for the others once, ``done == total``; default: on a terminal, a bar for each
    long file. Staging folders that killed runs left in ``out`` are removed first
    (:func:`~stemsep.io.staging.remove_stale_scratch`); SIGTERM stops the run like Ctrl-C, cleaning up.
    """
    from tqdm import tqdm

    check_options(segment=segment, overlap=overlap, shifts=shifts, seed=seed,
                  batch_size=1 if batch_size is None else batch_size)
    opts = WriteOptions(format=format, bits=bits, mp3_bitrate=mp3_bitrate, clip_mode=clip_mode, filename=filename,
                        two_stems=two_stems, stems=stems, keep_rate=keep_rate)
    if not window > 0:
        raise BadArgumentError(f"window must be positive, got {window}")
    if jobs:
        torch.set_num_threads(jobs)
    torch_device = resolve_device(device)
    if batch_size is None:
        batch_size = default_batch_size(torch_device)
    out = Path(out)
    found = find_inputs([Path(p) for p in _as_list(inputs)], out)
    model_paths = [Path(m) for m in _as_list(models)]
    net = load_models(model_paths, weights, torch_device, backend)
    run_key = {"models": [str(p.resolve()) for p in model_paths], "weights": weights, "shifts": shifts,
               "overlap": overlap, "segment": segment, "backend": backend, **seed_key(shifts, seed)}
    terminal = sys.stderr.isatty()
    if progress is None and terminal:
        progress = _FileBars(int(net.samplerate))
    writer = TrackWriter(net, out, opts, run_key=run_key, segment=segment, overlap=overlap, shifts=shifts,
                         batch_size=batch_size, window=window, progress=progress, seed=seed)
    jobs = [writer.job(item.path, track_name(item.path), item.folder) for item in found]
    check_clashes(jobs)
    ensure_writable_dir(out)
    failed: list[tuple[Path, str]] = []
    bars: list = []  # the files bar, once made

    def fail(job: _Job, err: StemsepError) -> None:
        if not skip_errors:
            if len(jobs) > 1 and isinstance(err, BadAudioError):
                raise type(err)(f"{err} (add --skip-errors to go on with the other files)") from None
            raise err
        reason = str(err).removeprefix(f"{job.path}: ")
        failed.append((job.path, reason))
        tqdm.write(f"stemsep: skipped {job.path}: {reason}", file=sys.stderr)
        for bar in bars:
            bar.update(1)

    with _sigterm_raises():
        remove_stale_scratch(out)
        todo, skipped = [], 0
        for job in jobs:
            try:
                state = "todo" if overwrite else writer.state(job)
            except StemsepError as err:
                fail(job, err)
                continue
            if state == "todo":
                todo.append(job)
            else:
                skipped += 1
        done = 0
        bars.append(tqdm(total=len(todo), unit="file", desc="separating", disable=not terminal))
        for group in writer.groups(todo, on_error=fail):
            written = writer.run(group, on_error=fail)
            done += written
            bars[0].update(written)
        bars[0].close()
    return Separated(done=done, skipped=skipped, out=out, failed=tuple(failed))


def check_clashes(jobs: Sequence[_Job]) -> None:
    """Refuse two inputs that would write the same file, or share a track folder (one-line error)."""
    owner: dict[Path, _Job] = {}
    for job in jobs:
        for place in [*job.targets.values(), *([job.folder] if job.folder is not None else [])]:
            other = owner.setdefault(place, job)
            if other is not job:
                raise StemsepError(
                    f"inputs {other.path} and {job.path} would both be written to {place}; tell them apart "
                    "with {folder} or {trackext} in --filename (e.g. --filename '{folder}/{track}/{stem}.{ext}' "
                    "or '{track}_{trackext}/{stem}.{ext}'), or separate them into different -o folders")


class _FileBars:
    """The default ``progress`` on a terminal: a bar (seconds of audio) for each file separated
    window by window (the others are reported once, done: no bar)."""

    def __init__(self, samplerate: int):
        self.rate, self.bar = samplerate, None

    def __call__(self, path: Path, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None and done < total:
            self.bar = tqdm(total=round(total / self.rate, 1), unit="s", desc=path.name, leave=False)
        if self.bar is not None:
            self.bar.update(round(done / self.rate, 1) - self.bar.n)
            if done >= total:
                self.bar.close()
                self.bar = None


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While separating in the main thread: SIGTERM (when it would kill the process outright)
    raises ``SystemExit(143)`` instead, so staging folders are cleaned up as after Ctrl-C."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one does not interrupt the cleanup
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
