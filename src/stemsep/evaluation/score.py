"""``stemsep score``: BSS-eval any system's separated stems against references (museval-compatible).

    stemsep score --references musdb18hq/test --estimates separated/ -o scores/

Layout ``musdb``: references ``ROOT/[<split>/]<track>/<source>.<ext>`` (found at any depth) or
MUSDB18's ``ROOT/[<split>/]<track>.stem.mp4`` (streams mixture, drums, bass, other, vocals),
estimates ``ROOT/<track>/<source>.<ext>`` as ``stemsep separate`` writes them. ``<ext>``: any
format :mod:`stemsep.io.audio` reads (WAV, FLAC, MP3, OGG/Opus, M4A/AAC, ...). Estimates at
another sample rate are resampled to the references' (soxr ``"VHQ"``); lossy-codec estimates
up to ``CODEC_PADDING`` samples longer than the references (encoder padding) are cut.
Writes ``OUT/<track>.json|csv`` (framewise SDR/ISR/SIR/SAR, museval layout, plus nSDR and the
community's whole-track metrics asked for, :mod:`stemsep.evaluation.community`) and
``OUT/summary.json|csv``, and prints the summary table (:mod:`stemsep.evaluation.results` aggregates);
``--report DIR`` adds an HTML report with figures (:mod:`stemsep.evaluation.report`).
:func:`score` is the command as a library function.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from stemsep.errors import BadDataError, StemsepError
from stemsep.evaluation.bss_eval import METRICS
from stemsep.evaluation.community import COMMUNITY_METRICS
from stemsep.evaluation.report import require_matplotlib, write_report
from stemsep.evaluation.results import (
    evaluate_track,
    format_summary,
    split_metrics,
    summarize,
    write_summary,
    write_track_record,
)
from stemsep.evaluation.track_pages import System, dot_strips, write_track_pages
from stemsep.evaluation.tracks import (  # noqa: F401  (CODEC_PADDING, find_stem: importable from here as before)
    CODEC_PADDING,
    default_sources,
    find_stem,
    find_tracks,
    load_mixture,
    load_pair,
)
from stemsep.io.files import ensure_writable_dir


class ScoreSummary(dict):
    """The summary of :func:`stemsep.evaluation.results.summarize` (a plain ``dict``: ``tracks``,
    ``per_track``, ``sources``, ``all``), with :meth:`table` for printing; ``report``: the path of
    the HTML report when one was written, else ``None``."""

    report: Path | None = None

    def table(self) -> str:
        text = format_summary(self)
        return text if self.report is None else f"{text}\nreport: {self.report}"


def score(references: str | Path, estimates: str | Path, *, sources: Sequence[str] | None = None,
          out: str | Path | None = None, metrics: Sequence[str] = METRICS, window: float = 1.0, hop: float = 1.0,
          partial: bool = False, allow_silent: bool = False, layout: str = "musdb",
          progress: bool | None = None, report: str | Path | None = None, listen: bool = False,
          audio_max_size_mb: float = 500.0) -> ScoreSummary:
    """``stemsep score``: BSS-eval the stems under ``estimates`` against those under ``references``.

    ``sources`` default: the stems of the first reference track; ``out``: folder for
    ``<track>.json|csv`` and ``summary.json|csv`` (nothing written when ``None``); ``metrics``: any
    of museval's framewise ``sdr``, ``isr``, ``sir``, ``sar`` and the community's whole-track
    ``usdr``, ``si_sdr``, ``l1_freq``, ``log_wmse``, ``aura_stft``, ``aura_mrstft``, ``bleedless``,
    ``fullness`` (:mod:`stemsep.evaluation.community`; ``log_wmse`` reads the track's mixture,
    :func:`load_mixture`); ``window``/``hop`` in seconds; ``partial``: score only the
    reference tracks that have estimates; ``allow_silent``: accept all-zero stems (NaN frames);
    ``progress`` default: when stderr is a terminal; ``report``: folder for an HTML report
    (``report.html`` and PNG figures, :mod:`stemsep.evaluation.report`; needs matplotlib, the
    ``report`` extra); ``listen``: the report also gets a listening page per track (reference,
    estimate and residual of each stem under one transport; MP3s within ``audio_max_size_mb``;
    :mod:`stemsep.evaluation.track_pages`). Returns the summary.
    """
    from tqdm import tqdm

    if layout != "musdb":
        raise StemsepError(f"--layout must be musdb, got {layout!r}")
    split_metrics(tuple(metrics))  # an unknown name: a one-line error before any reading
    needs_mix = any(COMMUNITY_METRICS[m].needs_mix for m in metrics if m in COMMUNITY_METRICS)
    references, estimates = Path(references), Path(estimates)
    reference_tracks = find_tracks(references, sources)
    if not reference_tracks:
        raise BadDataError(f"{references}: no reference stems found (expected <track>/<source>.wav "
                           "or <track>.stem.mp4)")
    estimate_tracks = find_tracks(estimates, sources)
    if not estimate_tracks:
        raise BadDataError(f"{estimates}: no estimated stems found (expected <track>/<source>.wav)")
    sources = list(sources) if sources else default_sources(next(iter(reference_tracks.values())))
    unknown = sorted(set(estimate_tracks) - set(reference_tracks))
    if unknown:
        raise BadDataError(f"{estimates}: {len(unknown)} estimated track(s) have no reference under "
                           f"{references}, e.g. {unknown[0]!r}")
    missing = sorted(set(reference_tracks) - set(estimate_tracks))
    if missing and not partial:
        raise BadDataError(f"{estimates}: estimates missing for {len(missing)} of {len(reference_tracks)} reference "
                           f"track(s), e.g. {missing[0]!r} (use --partial to score the others)")
    if out is not None:
        out = ensure_writable_dir(out)
    if listen and report is None:
        raise BadDataError("--listen writes the report's listening pages: add --report DIR")
    if report is not None:
        require_matplotlib()  # before the scoring, not after it
        report = ensure_writable_dir(report)
    records = []
    names = sorted(estimate_tracks)
    show = sys.stderr.isatty() if progress is None else progress
    for track in tqdm(names, unit="track", desc="scoring", disable=not show):
        est, ref, samplerate = load_pair(track, reference_tracks[track], estimate_tracks[track], sources,
                                         allow_silent=allow_silent)
        mixture = load_mixture(track, reference_tracks[track], ref, samplerate) if needs_mix else None
        record = evaluate_track(track, sources, est, ref, samplerate, window=window, hop=hop,
                                metrics=tuple(metrics), mixture=mixture)
        if out is not None:
            write_track_record(out, record)
        records.append(record)
    summary = ScoreSummary(summarize(records))
    if out is not None:
        write_summary(out, summary)
    if report is not None:
        title = f"Evaluation: {estimates.resolve().name}"
        if listen:
            system = System(estimates.resolve().name, {r["name"]: r for r in records}, estimates)
            pages = write_track_pages([system], report, references, max_size_mb=audio_max_size_mb)
            summary.report = write_report(records, report, title=title, track_pages=pages,
                                          listen_html=dot_strips(system, pages, report))
        else:
            summary.report = write_report(records, report, title=title)
    return summary
