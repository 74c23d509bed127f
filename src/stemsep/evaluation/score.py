"""``stemsep score``: BSS-eval any system's separated stems against references (museval-compatible).

    stemsep score --references musdb18hq/test --estimates separated/ -o scores/

Layout ``musdb``: references ``ROOT/[<split>/]<track>/<source>.wav|flac`` (found at any
depth), estimates ``ROOT/<track>/<source>.wav|flac`` as ``stemsep separate`` writes them.
Writes ``OUT/<track>.json|csv`` (framewise SDR/ISR/SIR/SAR, museval layout, plus nSDR) and
``OUT/summary.json|csv``, and prints the summary table (:mod:`stemsep.evaluation.results` aggregates).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from stemsep.contract import DEFAULT_SOURCES
from stemsep.errors import BadAudioError, BadDataError, StemsepError
from stemsep.evaluation.bss_eval import METRICS
from stemsep.evaluation.results import (
    evaluate_track,
    format_summary,
    summarize,
    write_summary,
    write_track_record,
)
from stemsep.io.audio import AUDIO_EXTENSIONS, find_audio, read_audio
from stemsep.io.files import ensure_writable_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--references", required=True, type=Path, help="root of the reference stems")
    parser.add_argument("--estimates", required=True, type=Path, help="root of the estimated stems")
    parser.add_argument("--layout", choices=["musdb"], default="musdb", help="directory layout (default: musdb)")
    parser.add_argument("--sources", nargs="+", help="sources to score (default: those of the references)")
    parser.add_argument("-o", "--out", type=Path, help="directory for per-track and summary files")
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS),
                        help="metrics to compute (SDR alone is much cheaper)")
    parser.add_argument("--window", type=float, default=1.0, help="frame length in seconds (default 1)")
    parser.add_argument("--hop", type=float, default=1.0, help="frame hop in seconds (default 1)")
    parser.add_argument("--partial", action="store_true",
                        help="score the reference tracks that have estimates, instead of requiring all")
    parser.add_argument("--allow-silent", action="store_true",
                        help="accept all-zero stems (their frames score NaN) instead of refusing them")


def find_tracks(root: Path, sources: list[str] | None = None) -> dict[str, Path]:
    """Track name -> directory, for every directory under ``root`` holding stem files."""
    if not root.is_dir():
        raise BadDataError(f"{root}: directory not found")
    wanted = set(sources) if sources else None
    tracks: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if (not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in AUDIO_EXTENSIONS
                or path.stem == "mixture" or (wanted is not None and path.stem not in wanted)):
            continue
        directory = path.parent
        name = directory.name if directory != root else root.name
        if name in tracks and tracks[name] != directory:
            raise BadDataError(f"{root}: track name {name!r} appears twice ({tracks[name]} and {directory}); "
                               "point at one split")
        tracks[name] = directory
    return tracks


def default_sources(track_dir: Path) -> list[str]:
    """The stems of one reference track, in the usual order (drums, bass, other, vocals first)."""
    found = sorted({p.stem for p in track_dir.iterdir()
                    if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.stem != "mixture"})
    return [s for s in DEFAULT_SOURCES if s in found] + [s for s in found if s not in DEFAULT_SOURCES]


def load_pair(track: str, ref_dir: Path, est_dir: Path, sources: list[str], *,
              allow_silent: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """References and estimates ``(sources, channels, time)`` of one track, checked."""
    refs, ests, samplerate = [], [], None
    for source in sources:
        ref_path, est_path = find_audio(ref_dir, source), find_audio(est_dir, source)
        if ref_path is None:
            raise BadDataError(f"{ref_dir}: reference track {track!r} has no {source!r} stem")
        if est_path is None:
            raise BadDataError(f"{est_dir}: estimates of {track!r} have no {source!r} stem")
        ref, sr = read_audio(ref_path, samplerate=samplerate)
        samplerate = samplerate or sr
        channels = refs[0].shape[0] if refs else ref.shape[0]
        if ref.shape[0] != channels:
            raise BadAudioError(f"{ref_path}: has {ref.shape[0]} channel(s), other stems of {track!r} have {channels}")
        est, _ = read_audio(est_path, samplerate=samplerate, channels=channels)
        if refs and ref.shape[-1] != refs[0].shape[-1]:
            raise BadAudioError(f"{ref_path}: {ref.shape[-1]} samples, other stems of {track!r} have {refs[0].shape[-1]}")
        if est.shape[-1] != ref.shape[-1]:
            raise BadAudioError(f"{est_path}: {est.shape[-1]} samples, reference {ref_path.name} has {ref.shape[-1]} "
                                "(estimates must be as long as the references)")
        if not allow_silent:
            for path, wav in ((ref_path, ref), (est_path, est)):
                if not wav.any():
                    raise BadAudioError(f"{path}: audio is silent (all samples zero); "
                                        "use --allow-silent to score it anyway (NaN frames)")
        refs.append(ref)
        ests.append(est)
    return torch.stack(ests), torch.stack(refs), int(samplerate)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    references = find_tracks(args.references, args.sources)
    if not references:
        raise BadDataError(f"{args.references}: no reference stems found (expected <track>/<source>.wav)")
    estimates = find_tracks(args.estimates, args.sources)
    if not estimates:
        raise BadDataError(f"{args.estimates}: no estimated stems found (expected <track>/<source>.wav)")
    sources = list(args.sources) if args.sources else default_sources(next(iter(references.values())))
    unknown = sorted(set(estimates) - set(references))
    if unknown:
        raise BadDataError(f"{args.estimates}: {len(unknown)} estimated track(s) have no reference under "
                           f"{args.references}, e.g. {unknown[0]!r}")
    missing = sorted(set(references) - set(estimates))
    if missing and not args.partial:
        raise BadDataError(f"{args.estimates}: estimates missing for {len(missing)} of {len(references)} reference "
                           f"track(s), e.g. {missing[0]!r} (use --partial to score the others)")
    if args.out is not None:
        ensure_writable_dir(args.out)
    records = []
    names = sorted(estimates)
    for track in tqdm(names, unit="track", desc="scoring", disable=not sys.stderr.isatty()):
        est, ref, samplerate = load_pair(track, references[track], estimates[track], sources,
                                         allow_silent=args.allow_silent)
        record = evaluate_track(track, sources, est, ref, samplerate, window=args.window, hop=args.hop,
                                metrics=tuple(args.metrics))
        if args.out is not None:
            write_track_record(args.out, record)
        records.append(record)
    summary = summarize(records)
    if args.out is not None:
        write_summary(args.out, summary)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="stemsep score")
    add_arguments(parser)
    try:
        sys.exit(run(parser.parse_args()))
    except StemsepError as err:
        print(f"stemsep: error: {err}", file=sys.stderr)
        sys.exit(2)
