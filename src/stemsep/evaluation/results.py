"""Evaluation results: per-track framewise records, their files, and the summary over tracks.

Shared by ``stemsep score`` (any system's stems on disk) and ``stemsep test`` (a checkpoint,
distributed), so both write the same files and aggregate the same way:

* per track, ``<track>.json`` in museval's layout (``{"name", "targets": [{"name", "frames":
  [{"time", "duration", "metrics": {"SDR", "SIR", "ISR", "SAR"}}]}]}``, NaN as ``null``) plus
  the whole-track ``nSDR`` per source and, when asked for, the community's whole-track metrics
  (:mod:`stemsep.evaluation.community`: ``usdr``, ``si_sdr``, ``bleedless``, ...) under their names,
  and ``<track>.csv`` (one row per source and frame);
* the summary: per track and source the median over frames (NaN frames ignored); then per
  source the median and the mean over tracks; then the average of those over sources.
  nSDR (whole-track SDR) and the community's metrics, one number per track, are aggregated the same
  way from that number (their mean over tracks is the figure MDX and MSST quote).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemsep.errors import StemsepError
from stemsep.evaluation.bss_eval import METRICS, bss_eval
from stemsep.evaluation.community import COMMUNITY_METRICS, community_metrics
from stemsep.io.files import atomic_path

METRIC_NAMES = {"sdr": "SDR", "isr": "ISR", "sir": "SIR", "sar": "SAR"}
# Every metric ``stemsep score --metrics`` and ``test_metrics`` accept: museval's framewise four, then
# the community's whole-track ones.
SCORE_METRICS = (*METRICS, *COMMUNITY_METRICS)
# Keys of a record's target holding one whole-track number (not frames).
WHOLE_TRACK = ("nSDR", *COMMUNITY_METRICS)


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def track_record(track: str, sources: list[str], scores: dict[str, torch.Tensor], *, hop: float,
                 window: float, nsdr: torch.Tensor | None = None,
                 whole: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """museval-style record of one track: ``scores[metric]`` is ``(sources, frames)`` (no frames when
    empty); ``whole[name]`` ``(sources,)``: whole-track values stored beside ``nSDR`` under ``name``."""
    frames = next(iter(scores.values())).shape[-1] if scores else 0
    targets = []
    for j, source in enumerate(sources):
        target = {"name": source, "frames": [
            {"time": round(f * hop, 6), "duration": window,
             "metrics": {METRIC_NAMES[m]: _number(scores[m][j, f]) for m in scores}}
            for f in range(frames)]}
        if nsdr is not None:
            target["nSDR"] = _number(nsdr[j])
        for name, values in (whole or {}).items():
            target[name] = _number(values[j])
        targets.append(target)
    return {"name": track, "targets": targets}


def split_metrics(metrics: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(museval's framewise names, the community's names)`` of a selection; a one-line error
    naming any other."""
    unknown = [m for m in metrics if m not in SCORE_METRICS]
    if unknown:
        raise StemsepError(f"unknown metric(s) {', '.join(map(repr, unknown))}; choose from {', '.join(SCORE_METRICS)}")
    return (tuple(m for m in METRICS if m in metrics),
            tuple(m for m in COMMUNITY_METRICS if m in metrics))


def evaluate_track(track: str, sources: list[str], estimates: torch.Tensor, references: torch.Tensor,
                   samplerate: int, *, window: float = 1.0, hop: float = 1.0,
                   metrics: tuple[str, ...] = METRICS, mixture: torch.Tensor | None = None) -> dict[str, Any]:
    """BSS-eval (``(sources, channels, time)`` each), whole-track nSDR and the named community
    metrics as one track record. ``mixture`` ``(channels, time)``, for ``log_wmse``: default the sum
    of the references."""
    from stemsep.evaluation.metrics import nsdr

    framewise, community = split_metrics(metrics)
    scores = bss_eval(estimates, references, samplerate=samplerate, window=window, hop=hop,
                      metrics=framewise) if framewise else {}
    whole = community_metrics(community, estimates, references, mixture, samplerate) if community else {}
    return track_record(track, sources, scores, hop=hop, window=window,
                        nsdr=nsdr(estimates.double(), references.double()), whole=whole)


def write_track_record(out_dir: str | os.PathLike, record: dict[str, Any]) -> tuple[Path, Path]:
    """``<out_dir>/<track>.json`` and ``.csv``, each written atomically."""
    out_dir = Path(out_dir)
    json_path = out_dir / f"{record['name']}.json"
    csv_path = out_dir / f"{record['name']}.csv"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
    names = _metric_names(record)
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["track", "source", "time", *names])
        for target in record["targets"]:
            for frame in target["frames"]:
                writer.writerow([record["name"], target["name"], frame["time"],
                                 *[_csv_value(frame["metrics"].get(n)) for n in names]])
    return json_path, csv_path


def read_track_record(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _csv_value(value: float | None) -> str:
    return "nan" if value is None else repr(value)


def _metric_names(record: dict[str, Any]) -> list[str]:
    for target in record["targets"]:
        for frame in target["frames"]:
            return list(frame["metrics"])
    return []


def _frame_median(frames: list[dict[str, Any]], name: str) -> float:
    values = np.array([np.nan if f["metrics"].get(name) is None else f["metrics"][name] for f in frames],
                      dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if finite.size else math.nan


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate track records: ``{"tracks": n, "per_track": {...}, "sources": {...}, "all": {...}}``.

    ``per_track[track][source][metric]`` is the median over frames; ``sources[source][metric]``
    holds ``{"median": ..., "mean": ...}`` over tracks (tracks whose value is NaN are left out);
    ``all[metric]`` the average of the per-source median and mean. ``nSDR`` and the community's
    metrics are aggregated the same way from each track's whole-track value.
    """
    per_track: dict[str, dict[str, dict[str, float]]] = {}
    for record in records:
        per_track[record["name"]] = {
            target["name"]: {
                **{name: _frame_median(target["frames"], name) for name in _metric_names(record)},
                **{key: float("nan") if target[key] is None else target[key]
                   for key in WHOLE_TRACK if key in target},
            }
            for target in record["targets"]
        }
    sources = list(dict.fromkeys(s for track in per_track.values() for s in track))
    metrics = list(dict.fromkeys(m for track in per_track.values() for s in track.values() for m in s))
    by_source: dict[str, dict[str, dict[str, float]]] = {}
    for source in sources:
        by_source[source] = {}
        for metric in metrics:
            values = np.array([track[source][metric] for track in per_track.values()
                               if source in track and metric in track[source]], dtype=np.float64)
            values = values[~np.isnan(values)]
            by_source[source][metric] = {
                "median": float(np.median(values)) if values.size else math.nan,
                "mean": float(np.mean(values)) if values.size else math.nan,
            }
    overall = {metric: {stat: float(np.mean([by_source[s][metric][stat] for s in sources]))
                        for stat in ("median", "mean")} for metric in metrics} if sources else {}
    return {"tracks": len(records), "per_track": per_track, "sources": by_source, "all": overall}


def metric_unit(name: str) -> str:
    """``"dB"``, or ``"score"`` for the community's 0-100 (and log_wmse's) scales: axis and table labels."""
    return COMMUNITY_METRICS[name].unit if name in COMMUNITY_METRICS else "dB"


def format_summary(summary: dict[str, Any]) -> str:
    """Plain-text table: one row per source (and ``all``), ``median / mean`` over tracks."""
    metrics = list(summary["all"])
    header = f"{'source':<10}" + "".join(f"{m + ' med/mean':>22}" for m in metrics)
    scores = [m for m in metrics if metric_unit(m) != "dB"]
    unit = f"dB; {', '.join(scores)}: scores, higher is better" if scores else "dB"
    frames = "median over frames, then " if any(m in METRIC_NAMES.values() for m in metrics) else ""
    lines = [f"{summary['tracks']} track(s); {frames}median / mean over tracks ({unit})",
             header, "-" * len(header)]
    rows = list(summary["sources"].items()) + [("all", summary["all"])]
    for name, values in rows:
        cells = "".join(f"{values[m]['median']:>11.3f}/{values[m]['mean']:<10.3f}" for m in metrics)
        lines.append(f"{name:<10}{cells}")
    return "\n".join(lines)


def write_summary(out_dir: str | os.PathLike, summary: dict[str, Any]) -> tuple[Path, Path]:
    """``summary.json`` (everything, NaN as null) and ``summary.csv`` (source x metric x stat)."""
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / "summary.json", out_dir / "summary.csv"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(_nan_to_none(summary), indent=1, allow_nan=False) + "\n")
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "metric", "median", "mean"])
        for name, values in [*summary["sources"].items(), ("all", summary["all"])]:
            for metric, stats in values.items():
                writer.writerow([name, metric, repr(stats["median"]), repr(stats["mean"])])
    return json_path, csv_path


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
