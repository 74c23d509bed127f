"""``stemsep separate``: split audio files into stems with one or several trained models.

    stemsep separate song.wav other.flac --model htdemucs.ckpt -o separated/
    stemsep separate musdb/test --model a.ckpt --model b.ckpt --weights 1,0,1,1 0,1,0,0 -o out/

Writes ``OUTDIR/<track>/<source>.<wav|flac|mp3>`` (``<track>`` is the file name without suffix,
or the parent folder's name for MUSDB's ``<track>/mixture.wav``; other layouts with a
``--filename`` template; :class:`~stemsep.inference.writing.WriteOptions`). A track's files are staged in a hidden
``.<track>.part`` folder (locked by the writing process; a killed run's is removed by the next:
:mod:`stemsep.io.staging`) and moved into place once all are written, so a rerun of a killed run
skips exactly the finished tracks (each stem records the input and options that produced it:
:mod:`stemsep.io.provenance`); ``--overwrite`` redoes them. Several ``--model`` make a bag whose estimates
are averaged per source (``--weights``: one list per model). Chunks of one long file — or of many
short files — go through the network ``--batch-size`` at a time
(:class:`~stemsep.inference.chunked.Chunking`). Memory: short files are separated whole; a file
longer than one window streams (:func:`~stemsep.inference.windowed.separate_stream`: one window in
memory, whatever the duration).

:func:`separate_files` is the command as a library function: a loop over one
:class:`~stemsep.inference.separator.Separator` (the engine) and a
:class:`~stemsep.inference.tracks.TrackWriter`; which files it separates, and their track names, come
from :mod:`stemsep.inference.inputs`; the writing options and provenance from
:mod:`stemsep.inference.writing`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from stemsep.errors import BadArgumentError, BadAudioError, StemsepError
from stemsep.inference.device import resolve_device
from stemsep.inference.ensemble import check_mode, ensemble_of, with_tta
from stemsep.inference.inputs import find_inputs, track_name
from stemsep.inference.separator import Separator, chunking_for, default_batch_size, load_models, model_name
from stemsep.inference.tracks import TrackWriter, _Job, check_clashes
from stemsep.inference.windowed import (
    WINDOW_SECONDS,
    check_window,
    mix_stats,
    separate_mixes,
    separate_stream,
)
from stemsep.inference.writing import (
    BITS,
    CLIP_MODES,
    DEFAULT_FILENAME,
    FORMATS,
    TEMPLATE_FIELDS,
    WriteOptions,
    check_template,
    check_write_options,
    seed_key,
    track_state,
)
from stemsep.io.audio import MP3_BITRATES
from stemsep.io.files import ensure_writable_dir
from stemsep.io.staging import remove_stale_scratch

BACKENDS = ("torch", "onnxruntime", "torchscript")

# Names that lived here before the separation was split along its pipeline (issue 24): still
# importable from this module; their homes are named in CHANGELOG.md.
__all__ = ["BACKENDS", "BITS", "CLIP_MODES", "DEFAULT_FILENAME", "FORMATS", "MP3_BITRATES", "TEMPLATE_FIELDS",
           "WINDOW_SECONDS", "Separated", "TrackWriter", "WriteOptions", "check_clashes", "check_template",
           "check_write_options", "default_batch_size", "load_models", "mix_stats", "seed_key", "separate_files",
           "separate_mixes", "separate_stream", "track_state"]


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
                   progress: Callable[[Path, int, int], None] | None = None, ensemble: str | None = None,
                   pick: Sequence[str] | None = None, derive: Sequence[str] = (), tta: bool = False) -> Separated:
    """``stemsep separate``: write every audio file of ``inputs`` as ``out/<filename template>``.

    ``inputs``: files (any of :data:`~stemsep.io.audio.MIX_EXTENSIONS`, any rate and channel count),
    or folders searched for them; ``models``: checkpoints (several:
    a bag, mixed with ``weights[model][source]``), or ``stemsep export`` files with ``backend``
    ``"onnxruntime"``/``"torchscript"``. ``ensemble``: combine the models by that mode
    (:mod:`stemsep.inference.ensemble`; any families, sources, rates and channels; ``weights`` then
    one number per model, ``pick`` ``["vocals=0", ...]`` per-stem members, ``derive`` extra stems such
    as ``instrumental``); ``tta``: add the channel-swapped and polarity-inverted passes. ``batch_size`` default: 1 on CPU, 8 on GPU; ``device``
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

    torch_device = resolve_device(device)
    chunking = chunking_for(torch_device, shifts=shifts, overlap=overlap, segment=segment, batch_size=batch_size,
                            seed=seed)
    opts = WriteOptions(format=format, bits=bits, mp3_bitrate=mp3_bitrate, clip_mode=clip_mode, filename=filename,
                        two_stems=two_stems, stems=stems, keep_rate=keep_rate)
    check_window(window)
    if jobs:
        torch.set_num_threads(jobs)
    out = Path(out)
    found = find_inputs([Path(p) for p in _as_list(inputs)], out)
    if ensemble is None and (pick or derive):
        raise BadArgumentError("--pick and --derive combine models: add --ensemble MODE")
    if ensemble is None and not tta:
        separator = Separator.from_checkpoint(_as_list(models), torch_device, weights=weights, backend=backend,
                                              chunking=chunking, window=window)
    else:
        separator = _combined(_as_list(models), torch_device, chunking, window, weights=weights, backend=backend,
                              ensemble=ensemble, pick=pick, derive=derive, tta=tta)
    terminal = sys.stderr.isatty()
    if progress is None and terminal:
        progress = _FileBars(separator.samplerate)
    writer = TrackWriter(separator, out, opts, progress=progress)
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


def _combined(paths: list[str | Path], device: torch.device, chunking, window: float, *, weights, backend: str,
              ensemble: str | None, pick, derive, tta: bool) -> Separator:
    """The :class:`Separator` of an ensemble of ``paths`` (any families) and/or with TTA."""
    if ensemble is None:
        net = load_models(paths, weights, device, backend)
        member_chunking = chunking
    else:
        check_mode(ensemble)
        nets = [load_models([path], None, device, backend) for path in paths]
        net = ensemble_of(nets, ensemble, chunking, weights=weights, pick=pick, derived=derive)
        member_chunking = replace(chunking, shifts=0)  # the members shift; the whole is not shifted again
    separator = Separator(with_tta(net) if tta else net, device=device, chunking=member_chunking, window=window,
                          models=[model_name(p) for p in paths])
    separator.run_key.update(weights=weights, backend=backend, ensemble=ensemble, pick=list(pick or []),
                             derive=list(derive), tta=tta, shifts=chunking.shifts,
                             **seed_key(chunking.shifts, chunking.seed))
    return separator


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
