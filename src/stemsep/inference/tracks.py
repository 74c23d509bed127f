"""The tracks of a separation: which files a track writes, whether it is already done, and the
separation and writing of a group of tracks (staged, then committed by rename).

:class:`TrackWriter` is what :func:`~stemsep.inference.separate.separate_files` loops over and what
:meth:`Separator.separate_file <stemsep.inference.separator.Separator.separate_file>` uses for one
file: it asks the :class:`~stemsep.inference.separator.Separator` (the engine: network, device,
:class:`~stemsep.inference.chunked.Chunking`) for the stems, and writes them with
:class:`~stemsep.inference.writing.WriteOptions` into a track's staging folder
(:mod:`stemsep.io.staging`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from stemsep.errors import BadAudioError, StemsepError
from stemsep.inference.chunked import Chunking
from stemsep.inference.inputs import trackext
from stemsep.inference.windowed import mix_blocks, separate_stream
from stemsep.inference.writing import StemSink, WriteOptions, track_state
from stemsep.io.audio import probe_mix
from stemsep.io.provenance import input_identity, provenance
from stemsep.io.staging import SCRATCH_NAME, TrackStaging


class Engine(Protocol):
    """What a :class:`TrackWriter` needs of a :class:`~stemsep.inference.separator.Separator`."""

    net: torch.nn.Module
    chunking: Chunking
    window: float
    run_key: dict

    def separate_mixes(self, mixes: list[torch.Tensor]) -> list[torch.Tensor]: ...


@dataclass
class _Job:
    path: Path
    name: str
    targets: dict[str, Path]
    record: str
    frames: int = 0  # at the model's rate, from the header (estimated for some formats)
    samplerate: int = 0  # the input's
    folder: Path | None = None  # the folder of the track's own (WriteOptions.track_folder), if any




class TrackWriter:
    """Separates files with one :class:`~stemsep.inference.separator.Separator` and writes their
    tracks into ``out`` with ``opts`` (for :func:`~stemsep.inference.separate.separate_files` and
    :meth:`~stemsep.inference.separator.Separator.separate_file`)."""

    def __init__(self, separator: Engine, out: Path, opts: WriteOptions,
                 progress: Callable[[Path, int, int], None] | None = None):
        self.separator, self.net, self.out, self.opts = separator, separator.net, out, opts
        self.progress = progress  # (input, frames done, frames in all) at the model's rate, per file
        self.sources = list(self.net.sources)
        self.names = opts.output_stems(self.sources)
        self.key = {**separator.run_key, **opts.content_key()}
        self.chunking = separator.chunking
        self.plan = self.chunking.window_plan(self.net, separator.window)

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
            count = self.chunking.chunk_count(self.net, job.frames)
            if group and chunks + count > self.chunking.batch_size:
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
                    scratch, self.plan, self.chunking, progress=report))
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
                blocks = list(mix_blocks(job.path, rate, channels, info))
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
        stems = self.separator.separate_mixes([mix for mix, _ in loaded])
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
            sink = StemSink(layout.staging, self.names, int(self.net.audio_channels), rate, out_rate)
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
