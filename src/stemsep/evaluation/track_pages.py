"""Per-track listening pages of the report: hear the reference, the estimate and the residual of
every stem under one transport, and the framewise metric plot that seeks them.

    stemsep report scores/ --references musdb18hq/test --estimates separated/ -o report/
    stemsep report scores_a/ scores_b/ --names A B --references musdb18hq/test --estimates sep_a/ sep_b/ -o cmp/

For each scored track, ``DIR/tracks/<nnn>-<track>.html`` with its audio beside it in
``DIR/tracks/<nnn>-<track>/<stem>-{reference,estimate,residual}.mp3`` (residual = estimate -
reference; MP3 at the highest bitrate, at least :data:`MIN_REPORT_BITRATE`, at which every page's
audio fits the budget). One transport plays, pauses, seeks and loops every player together (kept in
step by the first); each player has mute and solo (its ``volume``: 0 or 1). Under the players, per
stem, the framewise metric (SDR, else the first one there is) as an inline SVG: a moving cursor
shows the position, and clicking a frame's dot or its column seeks every player to the start of that
frame. Several systems: every system's estimate and residual play along, and the system buttons
choose which one is heard (A/B switching at the same position), the others' series dimmed; the
comparison page is :mod:`stemsep.evaluation.compare`'s. Inline script and style only: the pages
work from ``file://`` and any static server.
"""

from __future__ import annotations

import html
import json
import math
import os
import statistics
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stemsep.errors import BadDataError
from stemsep.evaluation.compare import write_comparison
from stemsep.evaluation.listening import choose_bitrate, write_mp3
from stemsep.evaluation.report import (
    read_results,
    report_from_results,
    require_matplotlib,
    slug,
    write_report,
)
from stemsep.evaluation.tracks import find_stem, find_tracks, load_pair
from stemsep.io.audio import MixInfo, is_stem_mp4, probe_mix
from stemsep.io.files import atomic_path

MIN_REPORT_BITRATE = 64  # kbit/s: enough to hear where a separation fails, small enough for whole songs
KINDS = ("reference", "estimate", "residual")
_PLOT_W, _PLOT_H, _PAD = 760, 110, 4
_COLORS = ("#36c", "#d62", "#2a7", "#a3c", "#888")

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 900px; }
#transport { position: sticky; top: 0; background: white; padding: 8px 0; border-bottom: 1px solid #ddd; }
#transport input[type=range] { width: 360px; vertical-align: middle; } #transport input[type=number] { width: 5em; }
.player { display: flex; align-items: center; gap: 8px; margin: 3px 0; } .label { width: 6em; }
button.on { background: #2a7; color: white; } .note { color: #555; font-size: 13px; margin: 12px 0 2px; }
svg.plot circle { cursor: pointer; } svg.plot rect.frame { cursor: pointer; }
svg.plot rect.frame:hover { fill: rgba(0, 0, 0, 0.05); } button.system { border: 2px solid; }
"""

# One transport: the first player is the clock; the others follow it (re-seeked when they drift by
# more than 80 ms). Gains are each player's volume: 0 when its row is muted, when another row is
# soloed, or when it is another system's than the one chosen (A/B: every system plays all along, so
# switching keeps the position exactly).
PAGE_SCRIPT = r"""
"use strict";
const CFG = JSON.parse(document.getElementById("config").textContent);
const players = [...document.querySelectorAll("audio")];
const rows = [...document.querySelectorAll(".player")];
const clock = players[0];
const $ = (id) => document.getElementById(id);
let playing = false, selected = CFG.systems[0];
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
  const solo = rows.some((r) => r.solo);
  for (const r of rows) {
    for (const a of r.querySelectorAll("audio")) {
      const other = a.dataset.system && a.dataset.system !== selected;
      a.volume = r.mute || (solo && !r.solo) || other ? 0 : 1;
    }
  }
  for (const g of document.querySelectorAll("g.series")) g.style.opacity = g.dataset.system === selected ? 1 : 0.25;
}
function choose(button) {
  selected = button.dataset.system;
  for (const b of document.querySelectorAll("button.system")) b.classList.toggle("on", b === button);
  gains();
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
for (const r of rows) {
  r.mute = false; r.solo = false;
  r.querySelector(".mute").onclick = (e) => { r.mute = !r.mute; e.target.classList.toggle("on", r.mute); gains(); };
  r.querySelector(".solo").onclick = (e) => { r.solo = !r.solo; e.target.classList.toggle("on", r.solo); gains(); };
}
for (const b of document.querySelectorAll("button.system")) b.onclick = () => choose(b);
clock.onended = pause;
$("play").onclick = () => (playing ? pause() : play());
$("seek").oninput = () => seek(Number($("seek").value));
for (const el of document.querySelectorAll("svg.plot [data-time]")) el.onclick = () => seek(Number(el.dataset.time));
function fromHash() {  // "#t=SECONDS&system=NAME": the summary's dots open a page at a track's worst frame
  const wanted = new URLSearchParams(location.hash.slice(1));
  const button = [...document.querySelectorAll("button.system")].find((b) => b.dataset.system === wanted.get("system"));
  if (button) choose(button);
  if (wanted.has("t")) seek(Number(wanted.get("t")));
}
window.onhashchange = fromHash;
gains();
fromHash();
requestAnimationFrame(tick);
"""


@dataclass
class System:
    """One system's results: its name, its track records by track, and its estimates folder (or None)."""

    name: str
    records: dict[str, dict[str, Any]]
    estimates: Path | None = None


def report(results: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
           title: str | None = None, names: Sequence[str] | None = None,
           references: str | os.PathLike | None = None,
           estimates: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
           audio_max_size_mb: float = 500.0) -> Path:
    """``stemsep report``: the HTML report of a results folder (:mod:`stemsep.evaluation.report`), with
    a listening page per track when ``references`` and ``estimates`` are given (both or none).
    Several results folders (``names`` them, default their folder names; one ``estimates`` folder
    each): a report per system in ``out/systems/<name>/``, and ``out/compare.html`` (the metric
    deltas against the first system, worst first) whose listening pages switch between systems."""
    folders = [Path(results)] if isinstance(results, (str, os.PathLike)) else [Path(r) for r in results]
    guesses = [Path(estimates)] if isinstance(estimates, (str, os.PathLike)) else [Path(e) for e in estimates or ()]
    if (references is None) != (not guesses):
        raise BadDataError("report: give both --references and --estimates (the audio of the listening pages), "
                           "or neither")
    require_matplotlib()
    if len(folders) == 1 and references is None:
        return report_from_results(folders[0], out, title=title)
    systems = _systems(folders, names, guesses)
    out = folders[0] / "report" if out is None else Path(out)
    pages = {} if references is None else write_track_pages(systems, out, references, max_size_mb=audio_max_size_mb)
    if len(systems) == 1:
        return write_report(list(systems[0].records.values()), out, track_pages=pages,
                            title=title or f"Evaluation: {folders[0].resolve().name}",
                            listen_html=dot_strips(systems[0], pages, out))
    reports = {}
    for system in systems:
        folder = out / "systems" / slug(system.name)
        reports[system.name] = write_report(list(system.records.values()), folder, title=f"Evaluation: {system.name}",
                                            track_pages=pages, listen_html=dot_strips(system, pages, folder))
    return write_comparison({system.name: system.records for system in systems}, out, reports, pages,
                            title=title or "Comparison: " + " vs ".join(system.name for system in systems))


def _systems(folders: list[Path], names: Sequence[str] | None, estimates: list[Path]) -> list[System]:
    """The systems of the results folders, checked: as many names and estimates folders as results, the same tracks."""
    names = list(names) if names else [folder.resolve().name for folder in folders]
    if len(names) != len(folders) or len(set(names)) != len(names):
        raise BadDataError(f"report --names: {len(folders)} unique names needed (one per results folder), got {names}")
    if len({slug(name) for name in names}) != len(names):  # they name files and folders
        raise BadDataError(f"report --names: {names} give the same file name ({[slug(n) for n in names]}); "
                           "choose names that differ in letters or digits")
    if estimates and len(estimates) != len(folders):
        raise BadDataError(f"report --estimates: one folder per results folder ({len(folders)}), got {len(estimates)}")
    systems = [System(name, {r["name"]: r for r in read_results(folder)}, estimates[i] if estimates else None)
               for i, (name, folder) in enumerate(zip(names, folders))]
    for system, folder in zip(systems[1:], folders[1:]):
        missing = sorted(set(systems[0].records) ^ set(system.records))
        if missing:
            raise BadDataError(f"{folder}: the results of {system.name!r} and {systems[0].name!r} differ in track "
                               f"{missing[0]!r}; compare results of the same tracks")
        for track, record in system.records.items():
            stems = sorted(t["name"] for t in record["targets"])
            first = sorted(t["name"] for t in systems[0].records[track]["targets"])
            if stems != first:
                raise BadDataError(f"{folder}: {system.name!r} scored the stems {stems} of {track!r}, {systems[0].name!r} "
                                   f"scored {first}; compare results of the same stems")
    return systems


def dot_strips(system: System, pages: Mapping[str, Path], base: Path) -> str:
    """Per stem, every track's median framewise metric as a dot; a click opens the track's page (a
    link relative to ``base``) at its worst frame, this system chosen. Empty without pages."""
    dots = []  # (stem, track, median, worst frame's time)
    for track, record in system.records.items():
        for entry in record["targets"]:
            metric, frames = _frames(entry)
            timed = [(value, time) for time, _, value in frames if value is not None]
            if track in pages and timed:
                dots.append((entry["name"], track, statistics.median(v for v, _ in timed), min(timed)[1]))
    if not dots:
        return ""
    stems = list(dict.fromkeys(stem for stem, *_ in dots))
    low, high = min(d[2] for d in dots), max(d[2] for d in dots)
    width, row, left = _PLOT_W, 26, 90
    parts = [f'<p class="note">Listen: each track\'s median {metric} per stem (dB, {low:.1f} to {high:.1f}); click a '
             f"dot to hear that track from its worst frame.</p><svg class=\"strips\" width=\"{width}\" "
             f'height="{row * len(stems) + 8}" style="border:1px solid #eee">']
    for index, stem in enumerate(stems):
        y = 4 + row * index + row / 2
        parts.append(f'<text x="4" y="{y + 4:.0f}" font-size="12">{html.escape(stem)}</text>')
        for _, track, median, worst in (d for d in dots if d[0] == stem):
            x = left + (width - left - 10) * (median - low) / max(high - low, 1e-9)
            href = f"{Path(os.path.relpath(pages[track], base)).as_posix()}#t={worst:g}&system={urllib.parse.quote(system.name)}"
            parts.append(f'<a href="{html.escape(href)}"><circle class="track-dot" cx="{x:.1f}" cy="{y:.1f}" r="5" '
                         f'fill="#36c" fill-opacity="0.7"><title>{html.escape(track)}: {median:.2f} dB</title>'
                         "</circle></a>")
    return "".join(parts) + "</svg>"


def _probe(ref_dir: Path, source: str) -> MixInfo:
    """A reference stem's rate and length, from its header."""
    path = ref_dir if is_stem_mp4(ref_dir) else find_stem(ref_dir, source)
    if path is None:
        raise BadDataError(f"{ref_dir}: reference track has no {source!r} stem")
    return probe_mix(path)


def _find_estimates(systems: Sequence[System], references: Path) -> dict[str, dict[str, Path]]:
    """Reference tracks, and each system's estimate tracks, by track; every scored track must be there."""
    found = {"": find_tracks(references), **{s.name: find_tracks(s.estimates) for s in systems}}
    for system in systems:
        for track in system.records:
            for key, folder, what in (("", references, "references"), (system.name, system.estimates, "estimates")):
                if track not in found[key]:
                    raise BadDataError(f"{folder}: the {what} have no track {track!r} (it is in the results)")
    return found


def write_track_pages(systems: Sequence[System], out: str | os.PathLike, references: str | os.PathLike, *,
                      max_size_mb: float = 500.0) -> dict[str, Path]:
    """Write a page per track (its audio beside it) into ``out/tracks``; track -> page path."""
    found = _find_estimates(systems, Path(references))
    first = systems[0].records
    sources = {track: [t["name"] for t in record["targets"]] for track, record in first.items()}
    infos = {track: _probe(found[""][track], stems[0]) for track, stems in sources.items()}
    files_per_stem = 1 + 2 * len(systems)  # the reference, each system's estimate and residual
    durations = [info.frames / info.samplerate for track, info in infos.items()
                 for _ in range(len(sources[track]) * files_per_stem)]
    rate = min(info.samplerate for info in infos.values())
    bitrate = choose_bitrate(durations, rate, max_size_mb, minimum=MIN_REPORT_BITRATE, option="--audio-max-size")
    pages = {}
    for index, track in enumerate(sorted(first)):
        folder, stems = f"{index:03d}-{slug(track)}", sources[track]
        files: dict[str, dict[str, dict[str, str]]] = {stem: {kind: {} for kind in KINDS} for stem in stems}
        for system in systems:
            est, ref, samplerate = load_pair(track, found[""][track], found[system.name][track], stems,
                                             allow_silent=True)
            tag = f"-{slug(system.name)}" if len(systems) > 1 else ""
            for i, stem in enumerate(stems):
                audio = {"estimate": est[i], "residual": est[i] - ref[i]}
                if system is systems[0]:
                    audio["reference"] = ref[i]
                for kind, wav in audio.items():
                    relative = f"{folder}/{slug(stem)}-{kind}{'' if kind == 'reference' else tag}.mp3"
                    write_mp3(Path(out) / "tracks" / relative, wav, samplerate, bitrate)
                    files[stem][kind]["" if kind == "reference" else system.name] = relative
        page = Path(out) / "tracks" / f"{folder}.html"
        _write_page(page, track, {s.name: s.records[track] for s in systems}, files, infos[track])
        pages[track] = page
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


def _svg(stem: str, entries: Mapping[str, Mapping[str, Any]], duration: float, low: float, high: float) -> str:
    """The framewise plot of one stem, a series per system (a dot per frame, a dashed median), a
    clickable column per frame, and the cursor."""
    span = max(high - low, 1e-9)

    def x(t: float) -> float:
        return _PAD + (_PLOT_W - 2 * _PAD) * t / max(duration, 1e-9)

    def y(v: float) -> float:
        return _PAD + (_PLOT_H - 2 * _PAD) * (high - v) / span

    parts = [f'<svg class="plot" viewBox="0 0 {_PLOT_W} {_PLOT_H}" width="{_PLOT_W}" height="{_PLOT_H}">',
             f'<rect width="{_PLOT_W}" height="{_PLOT_H}" fill="#fafafa" stroke="#ddd"/>']
    metric, frames = _frames(next(iter(entries.values())))
    for time, length, _ in frames:
        parts.append(f'<rect class="frame" data-time="{time:g}" x="{x(time):.1f}" y="0" '
                     f'width="{max(x(time + length) - x(time), 1):.1f}" height="{_PLOT_H}" fill="transparent"/>')
    for index, (system, entry) in enumerate(entries.items()):
        color = _COLORS[index % len(_COLORS)]
        metric, frames = _frames(entry)
        dots = [(time, x(time + length / 2), y(value)) for time, length, value in frames if value is not None]
        parts.append(f'<g class="series" data-system="{html.escape(system)}" fill="{color}" stroke="{color}">')
        if dots:
            middle = y(statistics.median(v for _, _, v in frames if v is not None))
            parts.append(f'<line x1="0" x2="{_PLOT_W}" y1="{middle:.1f}" y2="{middle:.1f}" stroke-dasharray="4 3" '
                         'stroke-width="0.8"/>'
                         f'<polyline points="{" ".join(f"{cx:.1f},{cy:.1f}" for _, cx, cy in dots)}" fill="none" '
                         'stroke-width="1.2"/>')
        parts += [f'<circle class="point" data-time="{time:g}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" stroke="none">'
                  f'<title>{html.escape(system)} {time:g} s</title></circle>' for time, cx, cy in dots]
        parts.append("</g>")
    parts.append(f'<line class="cursor" x1="{_PAD}" x2="{_PAD}" y1="0" y2="{_PLOT_H}" stroke="#d33" '
                 'stroke-width="1.5"/></svg>')
    return (f"<p class=\"note\">{html.escape(stem)}: framewise {metric} ({low:.1f} to {high:.1f} dB; dashed: "
            "median). Click a frame to hear it.</p>" + "".join(parts))


def _plot_range(records: Mapping[str, Mapping[str, Any]]) -> tuple[float, float]:
    """One dB scale for every stem and system of a track."""
    values = [v for record in records.values() for entry in record["targets"] for _, _, v in _frames(entry)[1]
              if v is not None]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    pad = 0.05 * (high - low) or 1.0
    return low - pad, high + pad


def _players(files: Mapping[str, Mapping[str, Mapping[str, str]]]) -> str:
    """A row per stem and kind (mute, solo), holding one player per system (the reference: one)."""
    esc = html.escape
    rows = []
    for stem, kinds in files.items():
        rows.append(f"<h3>{esc(stem)}</h3>")
        for kind, by_system in kinds.items():
            audio = "".join(f'<audio preload="auto" src="{esc(src)}" data-stem="{esc(stem)}" data-kind="{kind}" '
                            f'data-system="{esc(system)}"></audio>' for system, src in by_system.items())
            rows.append(f'<div class="player"><span class="label">{esc(kind)}</span><button class="mute">mute'
                        f'</button><button class="solo">solo</button>{audio}</div>')
    return "".join(rows)


def _write_page(page: Path, track: str, records: Mapping[str, Mapping[str, Any]],
                files: Mapping[str, Mapping[str, Mapping[str, str]]], info: MixInfo) -> None:
    esc = html.escape
    duration = info.frames / info.samplerate
    low, high = _plot_range(records)
    targets = {t["name"]: t for t in next(iter(records.values()))["targets"]}
    plots = "".join(_svg(stem, {system: {t["name"]: t for t in record["targets"]}[stem]
                                for system, record in records.items()}, duration, low, high) for stem in targets)
    systems = list(records)
    choose = "" if len(systems) < 2 else ('<span id="systems"> system: ' + "".join(
        f'<button class="system{" on" if i == 0 else ""}" data-system="{esc(s)}" '
        f'style="border-color: {_COLORS[i % len(_COLORS)]}">{esc(s)}</button>' for i, s in enumerate(systems))
        + "</span>")
    config = json.dumps({"duration": duration, "systems": systems}).replace("</", "<\\/")
    back = "../report.html" if len(systems) < 2 else "../compare.html"
    text = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(track)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body><p><a href=\"{back}\">&larr; report</a></p>"
            f"<h1>{esc(track)}</h1>"
            '<div id="transport"><button id="play">play</button><input id="seek" type="range" min="0" '
            f'max="{duration:.3f}" step="0.01" value="0"><span id="time">0.00 s</span>'
            '<label><input type="checkbox" id="loop"> loop from <input id="loop-from" type="number" min="0" '
            f'step="0.1" value="0"> to <input id="loop-to" type="number" min="0" step="0.1" value="{duration:.1f}">'
            f" s</label>{choose}</div>{_players(files)}<h2>Framewise metrics</h2>{plots}"
            f'<script type="application/json" id="config">{config}</script><script>{PAGE_SCRIPT}</script>'
            "</body></html>\n")
    with atomic_path(page) as tmp:
        tmp.write_text(text, encoding="utf-8")
