"""The comparison page of several systems' results: where does one system lose to another?

``stemsep report RESULTS_A RESULTS_B --names A B -o DIR`` writes ``DIR/compare.html``: per track
and stem, each system's value of the metric (the median over frames of SDR, else the first metric
there is: nSDR, the community's), and each other system's difference from the first, the rows
sorted worst difference first; the tracks link to their listening pages when there are some
(:mod:`stemsep.evaluation.track_pages`), and each system to its own report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stemsep.evaluation.community import COMMUNITY_METRICS
from stemsep.evaluation.report import slug
from stemsep.evaluation.results import METRIC_NAMES, summarize
from stemsep.io.files import atomic_path

_PREFERRED = ["SDR", *METRIC_NAMES.values(), "nSDR", *COMMUNITY_METRICS]
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 12px 0 24px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f0f0f0; }
td.name { text-align: left; } td.worse { background: #fbe3e3; } td.better { background: #e3f5e8; }
"""


def comparison_rows(records: Mapping[str, Mapping[str, dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    """``(metric, rows)``: a row per track and stem, ``values`` per system and ``deltas`` against the
    first system, sorted by the smallest delta (the worst loss) first; NaN where a value is missing."""
    per_system = {name: summarize(list(by_track.values()))["per_track"] for name, by_track in records.items()}
    first, *others = per_system
    present = {m for stems in per_system[first].values() for values in stems.values() for m in values}
    metric = next((m for m in _PREFERRED if m in present), "SDR")
    rows = []
    for track, stems in per_system[first].items():
        for stem in stems:
            values = {name: per_system[name].get(track, {}).get(stem, {}).get(metric, math.nan) for name in per_system}
            deltas = {name: values[name] - values[first] for name in others}
            rows.append({"track": track, "stem": stem, "values": values, "deltas": deltas})
    rows.sort(key=lambda r: min((d for d in r["deltas"].values() if not math.isnan(d)), default=math.inf))
    return metric, rows


def _cell(value: float, delta: bool = False) -> str:
    if math.isnan(value):
        return "<td>&ndash;</td>"
    style = (' class="worse"' if value < 0 else ' class="better"' if value > 0 else "") if delta else ""
    return f"<td{style}>{value:+.2f}</td>" if delta else f"<td>{value:.2f}</td>"


def write_comparison(records: Mapping[str, Mapping[str, dict[str, Any]]], out: Path, reports: Mapping[str, Path],
                     pages: Mapping[str, Path], *, title: str) -> Path:
    """Write ``out/compare.html`` for the systems' track records (system -> track -> record)."""
    esc = html.escape
    metric, rows = comparison_rows(records)
    first, *others = records
    links = ", ".join(f'<a href="{esc(reports[n].relative_to(out).as_posix())}">{esc(n)}</a>' for n in records)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>",
             f"<p>Each system's report: {links}. Per track and stem, {esc(metric)} (median over frames where "
             f"framewise) of each system and its difference from {esc(first)}, the worst loss first.</p>",
             "<table><tr><th>track</th><th>stem</th>" + "".join(f"<th>{esc(n)}</th>" for n in records)
             + "".join(f"<th>{esc(n)} &minus; {esc(first)}</th>" for n in others) + "</tr>"]
    for row in rows:
        track = esc(row["track"])
        if row["track"] in pages:
            track = f'<a href="{esc(pages[row["track"]].relative_to(out).as_posix())}">{track}</a>'
        parts.append(f'<tr class="row-{esc(slug(row["track"]))}"><td class="name">{track}</td>'
                     f'<td class="name">{esc(row["stem"])}</td>'
                     + "".join(_cell(v) for v in row["values"].values())
                     + "".join(_cell(d, delta=True) for d in row["deltas"].values()) + "</tr>")
    parts.append("</table></body></html>\n")
    target = out / "compare.html"
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return target
