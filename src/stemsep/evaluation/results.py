"""Evaluation results: per-track framewise records, their files, and the summary over tracks.

Shared by ``stemsep score`` (any system's stems on disk) and ``stemsep test`` (a checkpoint,
distributed), so both write the same files and aggregate the same way:

* per track, ``<track>.json`` in museval's layout (``{"name", "targets": [{"name", "frames":
  [{"time", "duration", "metrics": {"SDR", "SIR", "ISR", "SAR"}}]}]}``, NaN as ``null``) plus
  the whole-track ``nSDR`` per source, and ``<track>.csv`` (one row per source and frame);
* the summary: per track and source the median over frames (NaN frames ignored); then per
  source the median and the mean over tracks; then the average of those over sources.
  nSDR (whole-track SDR) is averaged over tracks (its usual, MDX-challenge aggregate).
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

from stemsep.evaluation.bss_eval import METRICS, bss_eval
from stemsep.io.files import atomic_path

METRIC_NAMES = {"sdr": "SDR", "isr": "ISR", "sir": "SIR", "sar": "SAR"}


def _number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def track_record(track: str, sources: list[str], scores: dict[str, torch.Tensor], *, hop: float,
                 window: float, nsdr: torch.Tensor | None = None) -> dict[str, Any]:
    """museval-style record of one track: ``scores[metric]`` is ``(sources, frames)``."""
    frames = next(iter(scores.values())).shape[-1]
    targets = []
    for j, source in enumerate(sources):
        target = {"name": source, "frames": [
            {"time": round(f * hop, 6), "duration": window,
             "metrics": {METRIC_NAMES[m]: _number(scores[m][j, f]) for m in scores}}
            for f in range(frames)]}
        if nsdr is not None:
            target["nSDR"] = _number(nsdr[j])
        targets.append(target)
    return {"name": track, "targets": targets}


def evaluate_track(track: str, sources: list[str], estimates: torch.Tensor, references: torch.Tensor,
                   samplerate: int, *, window: float = 1.0, hop: float = 1.0,
                   metrics: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """BSS-eval (``(sources, channels, time)`` each) and whole-track nSDR as one track record."""
    from stemsep.evaluation.metrics import nsdr

    scores = bss_eval(estimates, references, samplerate=samplerate, window=window, hop=hop, metrics=metrics)
    return track_record(track, sources, scores, hop=hop, window=window,
                        nsdr=nsdr(estimates.double(), references.double()))


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
    ``all[metric]`` the average of the per-source median and mean. ``nSDR`` is aggregated the
    same way from each track's whole-track value.
    """
    per_track: dict[str, dict[str, dict[str, float]]] = {}
    for record in records:
        per_track[record["name"]] = {
            target["name"]: {
                **{name: _frame_median(target["frames"], name) for name in _metric_names(record)},
                **({"nSDR": float("nan") if target["nSDR"] is None else target["nSDR"]}
                   if "nSDR" in target else {}),
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


def format_summary(summary: dict[str, Any]) -> str:
    """Plain-text table: one row per source (and ``all``), ``median / mean`` over tracks."""
    metrics = list(summary["all"])
    header = f"{'source':<10}" + "".join(f"{m + ' med/mean':>22}" for m in metrics)
    lines = [f"{summary['tracks']} track(s); median over frames, then median / mean over tracks (dB)",
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
