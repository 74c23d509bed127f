"""An HTML report of evaluation results: what people look at, not only the summary numbers.

    stemsep score --references musdb18hq/test --estimates separated/ -o scores/ --report report/
    stemsep report scores/ -o report/            # any results folder: score -o or stemsep test

``DIR/report.html`` with PNG figures in ``DIR/figures/``:

* the summary (per source, median and mean over tracks of the per-track medians, and "all");
* per metric, one boxplot per source of the per-track medians (the whole-track value for the
  community's metrics: ``usdr``, ``bleedless``, ``fullness``, ...), every track a dot, as the
  SiSEC 2018 figures show them (where do the songs spread, which ones fail);
* per track, the framewise SDR of each source over time (where does a model fail within a
  song), its median dashed (when framewise metrics were computed);
* a table of the per-track, per-source medians of every metric (and nSDR, and the community's).

Built from track records (:mod:`stemsep.evaluation.results`): in memory by
``score(..., report=DIR)``, or read back from a results folder by :func:`report_from_results`
(``stemsep score -o`` and ``stemsep test`` write the same per-track JSON files). Every file is
written atomically. Needs matplotlib, the optional ``report`` extra.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemsep.errors import BadDataError, StemsepError
from stemsep.evaluation.community import COMMUNITY_METRICS
from stemsep.evaluation.results import METRIC_NAMES, metric_unit, read_track_record, summarize
from stemsep.io.files import atomic_path, ensure_writable_dir

REPORT_EXTRA = "pip install 'stemsep[report]'"
_METRIC_ORDER = [*METRIC_NAMES.values(), "nSDR", *COMMUNITY_METRICS]
_FRAMEWISE = set(METRIC_NAMES.values())
_PANELS_PER_ROW = 4
_DPI = 100


def require_matplotlib() -> None:
    """A one-line error naming the extra when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise StemsepError(f"the report needs matplotlib, which is not installed: {REPORT_EXTRA}") from None


def report_from_results(results: str | os.PathLike, out: str | os.PathLike | None = None, *,
                        title: str | None = None) -> Path:
    """Build the report from a results folder (``<track>.json`` files, as ``stemsep score -o``
    and ``stemsep test`` write them) into ``out`` (default ``<results>/report``). Returns the
    path of ``report.html``."""
    require_matplotlib()
    results = Path(results)
    records = read_results(results)
    return write_report(records, results / "report" if out is None else out,
                        title=title or f"Evaluation: {results.resolve().name}")


def read_results(results: Path) -> list[dict[str, Any]]:
    """The track records of a results folder (``<track>.json``; ``summary.json`` and hidden files
    skipped), each checked for museval's layout."""
    if not results.is_dir():
        raise BadDataError(f"{results}: results folder not found")
    records = []
    for path in sorted(results.glob("*.json")):
        if path.name.startswith(".") or path.name == "summary.json":
            continue
        try:
            record = read_track_record(path)
        except (OSError, ValueError) as err:
            raise BadDataError(f"{path}: not a readable track record ({err})") from None
        if not (isinstance(record, dict) and isinstance(record.get("name"), str)
                and isinstance(record.get("targets"), list)):
            raise BadDataError(f"{path}: not a track record (expected museval's layout: name, targets)")
        records.append(record)
    if not records:
        raise BadDataError(f"{results}: no per-track results (<track>.json) found")
    return records


def write_report(records: list[dict[str, Any]], out: str | os.PathLike, *,
                 title: str = "stemsep evaluation", track_pages: Mapping[str, Path] | None = None,
                 listen_html: str = "") -> Path:
    """Write ``out/report.html`` and ``out/figures/*.png`` for the track records; return the HTML path.
    ``track_pages``: track -> its listening page (:mod:`stemsep.evaluation.track_pages`), linked;
    ``listen_html``: shown under the boxplots (the pages' clickable per-track dots)."""
    require_matplotlib()
    out = ensure_writable_dir(out)
    figures = ensure_writable_dir(out / "figures")
    summary = summarize(records)
    sources = list(summary["sources"])
    metrics = [m for m in _METRIC_ORDER if any(m in s for s in summary["sources"].values())]
    boxplots = _boxplots(summary, sources, [m for m in metrics if m != "nSDR"] or metrics, figures / "medians.png")
    track_figures = {}
    for index, record in enumerate(sorted(records, key=lambda r: r["name"])):
        if not any(t["frames"] for t in record["targets"]):  # whole-track metrics only: no curve to draw
            continue
        name = f"track-{index:03d}-{slug(record['name'])}.png"
        track_figures[record["name"]] = _framewise(record, figures / name)
    page = _html(title, summary, sources, metrics, boxplots, track_figures, out, track_pages or {}, listen_html)
    target = out / "report.html"
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


def slug(name: str) -> str:
    """``name`` as a safe file name part (letters, digits, ``_-``; at most 60 characters)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:60] or "track"


def _save(figure, target: Path) -> Path:
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)
    return target


def _values(summary: dict[str, Any], source: str, metric: str) -> tuple[list[str], np.ndarray]:
    names, values = [], []
    for track, per_source in summary["per_track"].items():
        value = per_source.get(source, {}).get(metric, math.nan)
        if value is not None and not math.isnan(value):
            names.append(track)
            values.append(value)
    return names, np.array(values, dtype=np.float64)


def _boxplots(summary: dict[str, Any], sources: list[str], metrics: list[str], target: Path) -> Path:
    """One panel per metric (``_PANELS_PER_ROW`` a row): a box per source of the per-track medians
    (whole-track values for the community's metrics), the tracks as dots."""
    from matplotlib.figure import Figure

    columns = min(_PANELS_PER_ROW, len(metrics))
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(3.2 * columns + 0.6, 0.4 + 3.8 * rows), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for spare in grid[len(metrics):]:
        spare.set_visible(False)
    axes = grid[: len(metrics)]
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics):
        data = [_values(summary, source, metric)[1] for source in sources]
        shown = [d if d.size else np.array([np.nan]) for d in data]
        style = {"widths": 0.6, "showfliers": False, "medianprops": {"color": "black", "linewidth": 1.5}}
        try:
            ax.boxplot(shown, orientation="horizontal", **style)
        except TypeError:  # matplotlib < 3.10
            ax.boxplot(shown, vert=False, **style)
        for row, values in enumerate(data, start=1):
            ax.scatter(values, row + rng.uniform(-0.18, 0.18, values.size), s=12, alpha=0.6, zorder=3)
            if values.size:
                ax.annotate(f"median {np.median(values):.2f}", (np.median(values), row - 0.34), ha="center",
                            va="bottom", fontsize=8)
        finite = np.concatenate([np.empty(0)] + [values[np.isfinite(values)] for values in data])
        if finite.size:  # the extreme tracks' dots whole, not cut by the frame
            pad = 0.06 * (finite.max() - finite.min()) or 1.0
            ax.set_xlim(finite.min() - pad, finite.max() + pad)
        ax.set_yticks(range(1, len(sources) + 1), sources)
        ax.invert_yaxis()
        how = "median over frames" if metric in _FRAMEWISE else "whole track"
        ax.set_xlabel(f"{metric} ({metric_unit(metric)}), {how}")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(metric)
    figure.suptitle(f"Per-track medians, {summary['tracks']} track(s)")
    return _save(figure, target)


def _framewise(record: dict[str, Any], target: Path) -> Path:
    """Framewise SDR (or the first metric there is) of each source over time, one row per source."""
    from matplotlib.figure import Figure

    targets = record["targets"]
    present = [m for m in _METRIC_ORDER if any(m in f["metrics"] for t in targets for f in t["frames"])]
    metric = "SDR" if "SDR" in present else (present[0] if present else "SDR")
    figure = Figure(figsize=(10, 0.4 + 1.5 * max(1, len(targets))), layout="constrained")
    axes = figure.subplots(max(1, len(targets)), 1, sharex=True, squeeze=False)[:, 0]
    for ax, entry in zip(axes, targets):
        frames = entry["frames"]
        values = np.array([math.nan if f["metrics"].get(metric) is None else f["metrics"][metric]
                           for f in frames], dtype=np.float64)
        values[np.isinf(values)] = math.nan  # a perfect frame: off the chart
        if frames:  # each frame a level over its own span, NaN frames (silence) a gap
            edges = [f["time"] for f in frames] + [frames[-1]["time"] + frames[-1]["duration"]]
            ax.stairs(values, np.array(edges, dtype=np.float64), linewidth=1.4, baseline=None)
        finite = values[np.isfinite(values)]
        if finite.size:
            ax.axhline(np.median(finite), linestyle="--", linewidth=1, color="gray")
        ax.set_ylabel(f"{entry['name']}\n{metric} (dB)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    figure.suptitle(f"{record['name']}: framewise {metric} (dashed: median over frames)", fontsize=11)
    return _save(figure, target)


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    return f"{value:.2f}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 12px 0 24px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td.name { text-align: left; }
tr.all td { font-weight: bold; background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: 6px 0 18px; }
.note { color: #555; font-size: 13px; }
"""


def _html(title: str, summary: dict[str, Any], sources: list[str], metrics: list[str], boxplots: Path,
          track_figures: dict[str, Path], out: Path, track_pages: Mapping[str, Path], listen_html: str) -> str:
    esc = html.escape
    anchors = {track: f"track-{i:03d}" for i, track in enumerate(sorted(track_figures))}
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p class=\"note\">{summary['tracks']} track(s), sources: {esc(', '.join(sources))}. "
             + ("BSS-eval v4 (museval's image mode, 1 s frames): per track and source the median over "
                "frames; then per source the median and the mean over tracks. "
                if _FRAMEWISE & set(metrics) else "Per source the median and the mean over tracks. ")
             + "nSDR: whole-track SDR. "
             + ("usdr, si_sdr, l1_freq, log_wmse, aura_stft, aura_mrstft, bleedless, fullness: the community's "
                "(MSST's) metrics, one value per track (usdr = MSST's sdr = nSDR; dB for usdr and si_sdr, "
                "scores for the others; higher is better for all)." if set(COMMUNITY_METRICS) & set(metrics) else "")
             + "</p>",
             "<h2>Summary</h2><table><tr><th>source</th>"]
    parts += [f"<th>{esc(m)} median</th><th>{esc(m)} mean</th>" for m in metrics]
    parts.append("</tr>")
    for name, values in [*summary["sources"].items(), ("all", summary["all"])]:
        cells = "".join(f"<td>{_number(values.get(m, {}).get('median'))}</td>"
                        f"<td>{_number(values.get(m, {}).get('mean'))}</td>" for m in metrics)
        parts.append(f"<tr class=\"{'all' if name == 'all' else ''}\"><td class=\"name\">{esc(name)}</td>{cells}</tr>")
    parts.append("</table>")
    parts.append("<h2>Per-track medians by source</h2>"
                 f"<img src=\"{esc(boxplots.relative_to(out).as_posix())}\" alt=\"boxplots of per-track medians\">"
                 + listen_html)
    parts.append("<h2>Tracks</h2><table><tr><th>track</th><th>source</th>"
                 + "".join(f"<th>{esc(m)}</th>" for m in metrics) + "</tr>")
    for track in sorted(summary["per_track"]):
        per_source = summary["per_track"][track]
        for row, source in enumerate(sources):
            values = per_source.get(source, {})
            link = f"<a href=\"#{anchors[track]}\">{esc(track)}</a>" if track in anchors else esc(track)
            if track in track_pages:
                link += f" (<a href=\"{esc(Path(os.path.relpath(track_pages[track], out)).as_posix())}\">listen</a>)"
            head = f"<td class=\"name\" rowspan=\"{len(sources)}\">{link}</td>" if row == 0 else ""
            parts.append(f"<tr>{head}<td class=\"name\">{esc(source)}</td>"
                         + "".join(f"<td>{_number(values.get(m))}</td>" for m in metrics) + "</tr>")
    parts.append("</table>" + ("<h2>Framewise SDR over time</h2>" if track_figures else ""))
    for track in sorted(track_figures):
        parts.append(f"<h3 id=\"{anchors[track]}\">{esc(track)}</h3>"
                     f"<img src=\"{esc(track_figures[track].relative_to(out).as_posix())}\" "
                     f"alt=\"framewise metrics of {esc(track)}\">")
    parts.append("</body></html>\n")
    return "\n".join(parts)
