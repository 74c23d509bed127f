"""Per-track listening pages of the report: hear the reference, the estimate and the residual of
every stem under one transport, and the framewise metric plot that seeks them.

    stemsep report scores/ --references musdb18hq/test --estimates separated/ -o report/

For each scored track, ``DIR/tracks/<nnn>-<track>.html`` with its audio beside it in
``DIR/tracks/<nnn>-<track>/<stem>-{reference,estimate,residual}.mp3`` (residual = estimate -
reference; MP3 at the highest bitrate, at least :data:`MIN_REPORT_BITRATE`, at which every page's
audio fits the budget). One transport plays, pauses, seeks and loops every player together (kept in
step by the first); each player has mute and solo (its ``volume``: 0 or 1). Under the players, per
stem, the framewise metric (SDR, else the first one there is) as an inline SVG: a moving cursor
shows the position, and clicking a frame's dot or its column seeks every player to the start of that
frame. Inline script and style only: the pages work from ``file://`` and any static server.
"""

from __future__ import annotations

import html
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stemsep.errors import BadDataError
from stemsep.evaluation.listening import choose_bitrate, write_mp3
from stemsep.evaluation.report import (
    read_results,
    report_from_results,
    require_matplotlib,
    slug,
    write_report,
)
from stemsep.evaluation.score import find_stem, find_tracks, load_pair
from stemsep.io.audio import MixInfo, is_stem_mp4, probe_mix
from stemsep.io.files import atomic_path

MIN_REPORT_BITRATE = 64  # kbit/s: enough to hear where a separation fails, small enough for whole songs
KINDS = ("reference", "estimate", "residual")
_PLOT_W, _PLOT_H, _PAD = 760, 110, 4

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 900px; }
#transport { position: sticky; top: 0; background: white; padding: 8px 0; border-bottom: 1px solid #ddd; }
#transport input[type=range] { width: 360px; vertical-align: middle; } #transport input[type=number] { width: 5em; }
.player { display: flex; align-items: center; gap: 8px; margin: 3px 0; } .label { width: 6em; }
button.on { background: #2a7; color: white; } .note { color: #555; font-size: 13px; margin: 12px 0 2px; }
svg.plot circle { fill: #36c; cursor: pointer; } svg.plot rect.frame { cursor: pointer; }
svg.plot rect.frame:hover { fill: rgba(0, 0, 0, 0.05); }
"""

# One transport: the first player is the clock; the others follow it (re-seeked when they drift by
# more than 80 ms). Gains are each player's volume: 0 when muted or when another player is soloed.
PAGE_SCRIPT = r"""
"use strict";
const CFG = JSON.parse(document.getElementById("config").textContent);
const players = [...document.querySelectorAll("audio")];
const clock = players[0];
const $ = (id) => document.getElementById(id);
let playing = false;
function seek(t) {
  t = Math.max(0, Math.min(t, CFG.duration));
  for (const a of players) a.currentTime = t;
  draw(t);
}
function play() {
  playing = true;
  const t = clock.currentTime;
  for (const a of players) { a.currentTime = t; a.play().catch(() => {}); }
  $("play").textContent = "pause";
}
function pause() {
  playing = false;
  for (const a of players) a.pause();
  $("play").textContent = "play";
}
function gains() {
  const solo = players.some((a) => a.solo);
  for (const a of players) a.volume = a.mute || (solo && !a.solo) ? 0 : 1;
}
function draw(t) {
  $("time").textContent = t.toFixed(2) + " s";
  $("seek").value = t;
  for (const svg of document.querySelectorAll("svg.plot")) {
    const x = 4 + (svg.viewBox.baseVal.width - 8) * t / CFG.duration;
    const line = svg.querySelector(".cursor");
    line.setAttribute("x1", x); line.setAttribute("x2", x);
  }
}
function tick() {
  const t = clock.currentTime;
  if ($("loop").checked && playing && t >= Number($("loop-to").value)) seek(Number($("loop-from").value));
  else if (playing) {
    for (const a of players) if (a !== clock && Math.abs(a.currentTime - t) > 0.08) a.currentTime = t;
  }
  draw(clock.currentTime);
  requestAnimationFrame(tick);
}
for (const a of players) {
  const row = a.parentElement;
  a.mute = false; a.solo = false;
  row.querySelector(".mute").onclick = (e) => { a.mute = !a.mute; e.target.classList.toggle("on", a.mute); gains(); };
  row.querySelector(".solo").onclick = (e) => { a.solo = !a.solo; e.target.classList.toggle("on", a.solo); gains(); };
}
clock.onended = pause;
$("play").onclick = () => (playing ? pause() : play());
$("seek").oninput = () => seek(Number($("seek").value));
for (const el of document.querySelectorAll("svg.plot [data-time]")) el.onclick = () => seek(Number(el.dataset.time));
gains();
requestAnimationFrame(tick);
"""


def report(results: str | os.PathLike, out: str | os.PathLike | None = None, *, title: str | None = None,
           references: str | os.PathLike | None = None, estimates: str | os.PathLike | None = None,
           audio_max_size_mb: float = 500.0) -> Path:
    """``stemsep report``: the HTML report of a results folder (:mod:`stemsep.evaluation.report`),
    with a listening page per track when ``references`` and ``estimates`` are given (both or none)."""
    if (references is None) != (estimates is None):
        raise BadDataError("report: give both --references and --estimates (the audio of the listening pages), "
                           "or neither")
    require_matplotlib()
    if references is None:
        return report_from_results(results, out, title=title)
    results = Path(results)
    records = read_results(results)
    out = results / "report" if out is None else Path(out)
    pages = write_track_pages(records, out, references, estimates, max_size_mb=audio_max_size_mb)
    return write_report(records, out, title=title or f"Evaluation: {results.resolve().name}", track_pages=pages)


def _probe(ref_dir: Path, source: str) -> MixInfo:
    """A reference stem's rate and length, from its header."""
    path = ref_dir if is_stem_mp4(ref_dir) else find_stem(ref_dir, source)
    if path is None:
        raise BadDataError(f"{ref_dir}: reference track has no {source!r} stem")
    return probe_mix(path)


def write_track_pages(records: Sequence[dict[str, Any]], out: str | os.PathLike, references: str | os.PathLike,
                      estimates: str | os.PathLike, *, max_size_mb: float = 500.0) -> dict[str, Path]:
    """Write a page per track record (its audio beside it) into ``out/tracks``; track -> page path."""
    refs, ests = find_tracks(Path(references)), find_tracks(Path(estimates))
    for record in records:
        for folder, found, what in ((references, refs, "references"), (estimates, ests, "estimates")):
            if record["name"] not in found:
                raise BadDataError(f"{folder}: the {what} have no track {record['name']!r} (it is in the results)")
    sources = {r["name"]: [t["name"] for t in r["targets"]] for r in records}
    infos = {name: _probe(refs[name], stems[0]) for name, stems in sources.items()}
    durations = [info.frames / info.samplerate for name, info in infos.items() for _ in sources[name] for _ in KINDS]
    rate = min(info.samplerate for info in infos.values())
    bitrate = choose_bitrate(durations, rate, max_size_mb, minimum=MIN_REPORT_BITRATE, option="--audio-max-size")
    pages = {}
    for index, record in enumerate(sorted(records, key=lambda r: r["name"])):
        name = record["name"]
        stem_names = sources[name]
        est, ref, samplerate = load_pair(name, refs[name], ests[name], stem_names, allow_silent=True)
        folder = f"{index:03d}-{slug(name)}"
        files: dict[str, dict[str, str]] = {}
        for i, stem in enumerate(stem_names):
            audio = {"reference": ref[i], "estimate": est[i], "residual": est[i] - ref[i]}
            files[stem] = {}
            for kind, wav in audio.items():
                relative = f"{folder}/{slug(stem)}-{kind}.mp3"
                write_mp3(Path(out) / "tracks" / relative, wav, samplerate, bitrate)
                files[stem][kind] = relative
        page = Path(out) / "tracks" / f"{folder}.html"
        _write_page(page, record, files, ref.shape[-1] / samplerate)
        pages[name] = page
    return pages


def _frames(entry: Mapping[str, Any]) -> tuple[str, list[tuple[float, float, float | None]]]:
    """The metric plotted for one target (SDR, else the first present) and its (time, duration, value)."""
    names = [m for f in entry["frames"] for m in f["metrics"]]
    metric = "SDR" if "SDR" in names else (names[0] if names else "SDR")
    frames = []
    for f in entry["frames"]:
        value = f["metrics"].get(metric)
        finite = value is not None and math.isfinite(value)
        frames.append((float(f["time"]), float(f["duration"]), float(value) if finite else None))
    return metric, frames


def _svg(entry: Mapping[str, Any], duration: float, low: float, high: float) -> str:
    """The framewise plot of one target: a clickable column and dot per frame, a median line, a cursor."""
    metric, frames = _frames(entry)
    span = max(high - low, 1e-9)

    def x(t: float) -> float:
        return _PAD + (_PLOT_W - 2 * _PAD) * t / max(duration, 1e-9)

    def y(v: float) -> float:
        return _PAD + (_PLOT_H - 2 * _PAD) * (high - v) / span

    parts = [f'<svg class="plot" viewBox="0 0 {_PLOT_W} {_PLOT_H}" width="{_PLOT_W}" height="{_PLOT_H}">',
             f'<rect width="{_PLOT_W}" height="{_PLOT_H}" fill="#fafafa" stroke="#ddd"/>']
    values = [v for _, _, v in frames if v is not None]
    if values:
        median = statistics.median(values)
        parts.append(f'<line x1="0" x2="{_PLOT_W}" y1="{y(median):.1f}" y2="{y(median):.1f}" stroke="#999" '
                     'stroke-dasharray="4 3"/>')
    points = []
    for time, length, value in frames:
        parts.append(f'<rect class="frame" data-time="{time:g}" x="{x(time):.1f}" y="0" '
                     f'width="{max(x(time + length) - x(time), 1):.1f}" height="{_PLOT_H}" fill="transparent"/>')
        if value is not None:
            cx = x(time + length / 2)
            points.append(f"{cx:.1f},{y(value):.1f}")
            parts.append(f'<circle class="point" data-time="{time:g}" cx="{cx:.1f}" cy="{y(value):.1f}" r="3.5">'
                         f'<title>{time:g} s: {metric} {value:.2f} dB</title></circle>')
    if points:
        parts.insert(2, f'<polyline points="{" ".join(points)}" fill="none" stroke="#36c" stroke-width="1.2"/>')
    parts.append(f'<line class="cursor" x1="{_PAD}" x2="{_PAD}" y1="0" y2="{_PLOT_H}" stroke="#d33" '
                 'stroke-width="1.5"/></svg>')
    return f"<p class=\"note\">{html.escape(entry['name'])}: framewise {metric} ({low:.1f} to {high:.1f} dB; " \
           f"dashed: median). Click a frame to hear it.</p>" + "".join(parts)


def _plot_range(record: Mapping[str, Any]) -> tuple[float, float]:
    values = [v for entry in record["targets"] for _, _, v in _frames(entry)[1] if v is not None]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    pad = 0.05 * (high - low) or 1.0
    return low - pad, high + pad


def _write_page(page: Path, record: Mapping[str, Any], files: Mapping[str, Mapping[str, str]],
                duration: float) -> None:
    esc = html.escape
    low, high = _plot_range(record)
    rows = []
    for stem, kinds in files.items():
        rows.append(f"<h3>{esc(stem)}</h3>")
        for kind, src in kinds.items():
            rows.append(f'<div class="player"><span class="label">{esc(kind)}</span>'
                        f'<button class="mute">mute</button><button class="solo">solo</button>'
                        f'<audio preload="auto" src="{esc(src)}" data-stem="{esc(stem)}" data-kind="{kind}"></audio></div>')
    plots = "".join(_svg(entry, duration, low, high) for entry in record["targets"])
    config = json.dumps({"duration": duration}).replace("</", "<\\/")
    text = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(record['name'])}</title>"
            f"<style>{PAGE_STYLE}</style></head><body><p><a href=\"../report.html\">&larr; report</a></p>"
            f"<h1>{esc(record['name'])}</h1>"
            '<div id="transport"><button id="play">play</button><input id="seek" type="range" min="0" '
            f'max="{duration:.3f}" step="0.01" value="0"><span id="time">0.00 s</span>'
            '<label><input type="checkbox" id="loop"> loop from <input id="loop-from" type="number" min="0" '
            f'step="0.1" value="0"> to <input id="loop-to" type="number" min="0" step="0.1" value="{duration:.1f}">'
            f" s</label></div>{''.join(rows)}<h2>Framewise metrics</h2>{plots}"
            f'<script type="application/json" id="config">{config}</script><script>{PAGE_SCRIPT}</script>'
            "</body></html>\n")
    with atomic_path(page) as tmp:
        tmp.write_text(text, encoding="utf-8")
