"""``stemsep separate``: split audio files into stems with one or several trained models.

    stemsep separate song.wav other.flac --model htdemucs.ckpt -o separated/
    stemsep separate musdb/test --model a.ckpt --model b.ckpt --weights 1,0,1,1 0,1,0,0 -o out/

Writes ``OUTDIR/<track>/<source>.<wav|flac>`` (``<track>`` is the file name without suffix,
or the parent folder's name for MUSDB's ``<track>/mixture.wav``). A track's folder appears only
once all its stems are written (hidden ``.<track>.part`` folder, then renamed), so a rerun of a
killed run skips exactly the finished tracks; ``--overwrite`` redoes them. Several ``--model``
make a bag whose estimates are averaged per source (``--weights``: one list per model).
Chunks of one long file — or of many short files — go through the network ``--batch-size``
at a time (:func:`stemsep.inference.apply_model`). Memory: the mix and the stems of one
file at a time. :func:`separate_files` is the command as a library function.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from stemsep.contract import check_same_kind, segment_of
from stemsep.errors import BadAudioError, StemsepError
from stemsep.inference.bag import BagOfModels, check_weights
from stemsep.inference.chunked import apply_model_many, check_options, chunk_stride
from stemsep.inference.cpu import optimize_for_cpu
from stemsep.io.audio import MIX_EXTENSIONS, probe_mix, read_mix, write_audio
from stemsep.io.checkpoint import load_separator
from stemsep.io.files import ensure_writable_dir

FORMATS = ("wav", "flac")
BACKENDS = ("torch", "onnxruntime", "torchscript")
BITS = (16, 24, 32)


def collect_inputs(paths: list[Path]) -> list[Path]:
    """Audio files named on the command line or found under named folders (sorted, no hidden)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MIX_EXTENSIONS
                           and not p.name.startswith("."))
            if not found:
                raise BadAudioError(f"{path}: no audio files in this folder (looked for {', '.join(MIX_EXTENSIONS)})")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise BadAudioError(f"{path}: file not found")
    return list(dict.fromkeys(files))


def track_name(path: Path) -> str:
    """``song.wav`` -> ``song``; MUSDB's ``<track>/mixture.wav`` -> ``<track>``, ``<track>.stem.mp4`` -> ``<track>``."""
    if path.name.lower().endswith(".stem.mp4"):
        return path.name[:-len(".stem.mp4")]
    return path.parent.name if path.stem == "mixture" and path.parent.name else path.stem


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


def check_write_options(format: str, bits: int) -> None:
    """Refuse a ``format``/``bits`` pair :func:`write_track` cannot write."""
    if format not in FORMATS or bits not in BITS:
        raise StemsepError(f"--format {format} --bits {bits}: choose --format wav or flac and --bits 16, 24 or 32")
    if format == "flac" and bits == 32:
        raise StemsepError("--bits 32 is float WAV only; use --format wav or --bits 24 for FLAC")


def stem_paths(out: Path, track: str, sources: list[str], fmt: str) -> dict[str, Path]:
    return {source: out / track / f"{source}.{fmt}" for source in sources}


def write_track(out: Path, track: str, stems: dict[str, torch.Tensor], samplerate: int, *,
                format: str = "wav", bits: int = 24) -> Path:
    """Write the stems of one track into a hidden folder, then rename it to ``OUT/<track>``.

    A killed or failing run thus never leaves a track folder that looks done (the rerun skip
    test); leftovers are hidden ``.<track>.part`` folders, removed by the next attempt.
    An existing ``OUT/<track>`` (``--overwrite``, or an incomplete one) is swapped out whole;
    other files in it are carried over.
    """
    final, part, old = out / track, out / f".{track}.part", out / f".{track}.old"
    shutil.rmtree(part, ignore_errors=True)
    try:
        for source, stem in stems.items():
            write_audio(part / f"{source}.{format}", stem, samplerate, bits=bits, fmt=format)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            for extra in old.iterdir():
                if not (part / extra.name).exists():
                    extra.rename(part / extra.name)
        part.rename(final)
    except OSError as err:
        raise StemsepError(f"{final}: cannot write the separated track ({err.strerror or err})") from None
    finally:
        if old.exists() and not final.exists():  # failed between the two renames: put it back
            old.rename(final)
        shutil.rmtree(part, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_mix(path: Path, samplerate: int, channels: int) -> torch.Tensor:
    """The mix as ``(channels, time)`` at the model's rate, from any supported file
    (:func:`~stemsep.io.audio.read_mix`: resampled, mono duplicated, surround downmixed)."""
    return read_mix(path, samplerate, channels)


def separate_mixes(net: torch.nn.Module, mixes: list[torch.Tensor], *, segment: float | None = None,
                   overlap: float = 0.25, shifts: int = 1, batch_size: int = 1) -> list[torch.Tensor]:
    """``(channels, time)`` each -> ``(sources, channels, time)`` each, chunks batched across them.

    Each mix is normalised (in place) by its own mean and standard deviation and the stems
    scaled back, as demucs' command does.
    """
    stats, normalised = [], []
    for mix in mixes:
        reference = mix.mean(0)
        mean, std = reference.mean(), reference.std()
        scale = std if std > 1e-8 else torch.ones(())
        stats.append((mean, scale))
        normalised.append(mix.sub_(mean).div_(scale))  # in place: one copy of the audio, not two
    outs = apply_model_many(net, normalised, segment=segment, overlap=overlap, shifts=shifts,
                            batch_size=batch_size, progress=sys.stderr.isatty())
    return [out.mul_(scale).add_(mean) for out, (mean, scale) in zip(outs, stats, strict=True)]


def _chunk_estimate(frames: int, net: torch.nn.Module, segment: float | None, overlap: float) -> int:
    """About how many chunks a file of ``frames`` samples makes (to group short files)."""
    segment = segment or segment_of(net)
    if segment is None:
        return 1
    return -(-frames // chunk_stride(int(float(segment) * net.samplerate), overlap))


def group_files(jobs: list[tuple[Path, str]], net: torch.nn.Module, *, segment: float | None = None,
                overlap: float = 0.25, batch_size: int = 1) -> Iterator[list[tuple[Path, str]]]:
    """Consecutive files whose chunks together fill about one batch (long files go alone)."""
    group, chunks = [], 0
    for job in jobs:
        info = probe_mix(job[0])
        frames = info.frames * net.samplerate // max(info.samplerate, 1)
        count = _chunk_estimate(frames, net, segment, overlap)
        if group and chunks + count > batch_size:
            yield group
            group, chunks = [], 0
        group.append(job)
        chunks += count
    if group:
        yield group


@dataclass(frozen=True)
class Separated:
    """What :func:`separate_files` did: tracks written and tracks skipped (already done)."""

    done: int
    skipped: int
    out: Path


def _as_list(paths: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def separate_files(inputs: str | Path | Sequence[str | Path], out: str | Path, *,
                   models: str | Path | Sequence[str | Path],
                   weights: Sequence[Sequence[float]] | None = None, shifts: int = 1, overlap: float = 0.25,
                   segment: float | None = None, batch_size: int | None = None, device: str | None = None,
                   format: str = "wav", bits: int = 24, jobs: int | None = None, overwrite: bool = False,
                   backend: str = "torch") -> Separated:
    """``stemsep separate``: write ``out/<track>/<source>.<format>`` for every audio file of ``inputs``.

    ``inputs``: files (any of :data:`~stemsep.io.audio.MIX_EXTENSIONS`, any rate and channel count),
    or folders searched for them; ``models``: checkpoints (several:
    a bag, mixed with ``weights[model][source]``), or ``stemsep export`` files with ``backend``
    ``"onnxruntime"``/``"torchscript"``. ``batch_size`` default: 1 on CPU, 8 on GPU; ``device``
    default: cuda when available; ``jobs``: torch CPU threads. Tracks whose stems all exist are
    skipped unless ``overwrite``.
    """
    from tqdm import tqdm

    check_options(segment=segment, overlap=overlap, shifts=shifts, batch_size=1 if batch_size is None else batch_size)
    check_write_options(format, bits)
    if jobs:
        torch.set_num_threads(jobs)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if batch_size is None:
        batch_size = default_batch_size(torch_device)
    out = Path(out)
    files = collect_inputs([Path(p) for p in _as_list(inputs)])
    names = [track_name(f) for f in files]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        name = sorted(duplicates)[0]
        clash = [str(f) for f, n in zip(files, names, strict=True) if n == name]
        raise StemsepError(f"inputs {clash[0]} and {clash[1]} would both be written to track {name!r}")
    ensure_writable_dir(out)
    net = load_models([Path(m) for m in _as_list(models)], weights, torch_device, backend)
    todo, skipped = [], 0
    for path, name in zip(files, names, strict=True):
        targets = stem_paths(out, name, net.sources, format)
        if not overwrite and all(p.is_file() for p in targets.values()):
            skipped += 1
        else:
            todo.append((path, name))
    done = 0
    bar = tqdm(total=len(todo), unit="file", desc="separating", disable=not sys.stderr.isatty())
    for group in group_files(todo, net, segment=segment, overlap=overlap, batch_size=batch_size):
        mixes = [load_mix(path, net.samplerate, net.audio_channels) for path, _ in group]
        stems = separate_mixes(net, mixes, segment=segment, overlap=overlap, shifts=shifts, batch_size=batch_size)
        del mixes
        for (_, name), track_stems in zip(group, stems, strict=True):
            write_track(out, name, dict(zip(net.sources, track_stems, strict=True)), net.samplerate,
                        format=format, bits=bits)
        done += len(group)
        bar.update(len(group))
        del stems
    bar.close()
    return Separated(done=done, skipped=skipped, out=out)
