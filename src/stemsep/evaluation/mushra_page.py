"""The MUSHRA test's page: one HTML file, its style and script inline, no network.

The test's description (:mod:`stemsep.evaluation.listening`'s ``mushra.json``) is embedded as JSON
(a page opened from ``file://`` may not fetch files). The script shows the instructions, asks the
listener's name, then runs the trials in an order drawn from a generator seeded by the test id and
the name (the same listener gets the same order back after a reload; two listeners different
ones); the conditions of each trial (hidden reference, anchor, systems) are shuffled the same way
and labelled A, B, C... Switching condition keeps the playback position (a MUSHRA comparison is of
one passage). Each finished trial is saved in ``localStorage``; the last one offers the ratings as
a JSON download (the file ``stemsep listen --collect`` reads).
"""

from __future__ import annotations

import html
import json
from typing import Any

RATINGS_FORMAT = "stemsep-mushra-ratings"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; color: #222; max-width: 860px; }
button { font-size: 15px; padding: 5px 14px; margin: 2px; }
button.playing { background: #2a7; color: white; }
.condition { display: flex; align-items: center; gap: 12px; margin: 8px 0; }
.condition input[type=range] { width: 420px; }
.condition output { width: 3em; text-align: right; font-variant-numeric: tabular-nums; }
.scale { display: flex; margin-left: 72px; width: 420px; font-size: 12px; color: #555; }
.scale span { flex: 1; text-align: center; border-left: 1px solid #ccc; }
#hint { color: #a33; font-size: 13px; } .note { color: #555; font-size: 14px; }
"""

_BODY = """
<div id="start">
<h1>{title}</h1>
<p>In each trial you hear one stem (for example the vocals) of a music excerpt. The
<b>Reference</b> button plays the original stem. The buttons <b>A</b>, <b>B</b>, <b>C</b>, ... play
versions of it; one of them is the reference itself, hidden. Rate how close each version sounds to
the reference, from 0 (bad) to 100 (excellent, no difference): give the hidden reference 100.
Rate all versions of a trial against each other; switching between them keeps the position in the
excerpt. Listen with headphones in a quiet room, at a level you keep for the whole test.</p>
<p class="note">Your ratings are kept in this browser; at the end, download them and send the file
to the person running the test.</p>
<p><label>Your name or code: <input id="listener" autocomplete="off"></label>
<button id="begin">Start</button></p>
</div>
<div id="trial" hidden>
<h2 id="trial-title"></h2>
<p id="trial-stem" class="note"></p>
<p><button id="play-reference">Reference</button><button id="stop">Stop</button>
<label><input type="checkbox" id="loop" checked> loop</label></p>
<div class="scale"><span>Bad</span><span>Poor</span><span>Fair</span><span>Good</span><span>Excellent</span></div>
<div id="conditions"></div>
<p><button id="next" disabled>Next</button> <span id="hint">Move every slider to go on.</span></p>
</div>
<div id="done" hidden>
<h2>Thank you</h2>
<p>All trials are rated. Download your ratings and send the file on.</p>
<p><button id="download">Download ratings (JSON)</button></p>
</div>
"""

_SCRIPT = r"""
"use strict";
const CFG = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
function fnv1a(text) {
  let h = 0x811c9dc5;
  for (const c of text) { h ^= c.codePointAt(0); h = Math.imul(h, 0x01000193) >>> 0; }
  return h;
}
function mulberry32(a) {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function shuffle(items, rand) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}
let state = null, players = [], current = null, shownAt = 0;
function storageKey(listener) { return "stemsep-mushra:" + CFG.test + ":" + listener; }
function save() { localStorage.setItem(storageKey(state.listener), JSON.stringify(state)); }
function begin() {
  const listener = $("listener").value.trim();
  if (!listener) { $("listener").focus(); return; }
  const saved = localStorage.getItem(storageKey(listener));
  const seed = fnv1a(CFG.test + "\n" + listener);
  state = saved ? JSON.parse(saved) : {
    format: "%FORMAT%", version: 1, test: CFG.test, title: CFG.title, systems: CFG.systems,
    listener: listener, seed: seed, started: new Date().toISOString(),
    order: shuffle(CFG.trials.map((_, i) => i), mulberry32(seed)), trials: [],
  };
  $("start").hidden = true;
  show();
}
function stopAll() { for (const a of players) a.pause(); current = null; mark(); }
function mark() { for (const a of players) a.button.classList.toggle("playing", a === current); }
function play(audio) {
  const at = current ? current.currentTime : 0;
  for (const a of players) a.pause();
  audio.loop = $("loop").checked;
  audio.currentTime = isFinite(audio.duration) ? Math.min(at, audio.duration) : at;
  current = audio;
  audio.play().catch(() => {});
  mark();
}
function player(src, button) {
  const audio = new Audio(src);
  audio.preload = "auto";
  audio.button = button;
  button.onclick = () => play(audio);
  players.push(audio);
  return audio;
}
function show() {
  stopAll();
  players = [];
  const done = state.trials.length;
  if (done >= state.order.length) { finish(); return; }
  const trial = CFG.trials[state.order[done]];
  const names = shuffle(Object.keys(trial.conditions), mulberry32(state.seed ^ fnv1a(trial.id)));
  $("trial").hidden = false;
  $("trial-title").textContent = "Trial " + (done + 1) + " of " + state.order.length;
  $("trial-stem").textContent = "Stem: " + trial.stem + " (" + trial.track + ")";
  player(trial.reference, $("play-reference"));
  const box = $("conditions");
  box.textContent = "";
  const touched = new Set();
  names.forEach((name, i) => {
    const row = document.createElement("div");
    row.className = "condition";
    const button = document.createElement("button");
    button.textContent = String.fromCharCode(65 + i);
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", min: 0, max: 100, step: 1, value: 50 });
    slider.dataset.index = i;
    const out = document.createElement("output");
    out.textContent = "\u2013";
    slider.oninput = () => {
      out.textContent = slider.value;
      touched.add(name);
      $("next").disabled = touched.size < names.length;
      $("hint").hidden = !$("next").disabled;
    };
    row.append(button, slider, out, player(trial.conditions[name], button));
    row.slider = slider;
    box.append(row);
  });
  $("next").disabled = true;
  $("hint").hidden = false;
  shownAt = performance.now();
  $("next").onclick = () => {
    const ratings = {};
    names.forEach((name, i) => { ratings[name] = Number(box.children[i].slider.value); });
    state.trials.push({ id: trial.id, track: trial.track, stem: trial.stem, shown: names,
                        ratings: ratings, seconds: Math.round((performance.now() - shownAt) / 100) / 10 });
    save();
    show();
  };
}
function finish() {
  $("trial").hidden = true;
  $("done").hidden = false;
  if (!state.finished) { state.finished = new Date().toISOString(); save(); }
}
function download() {
  const blob = new Blob([JSON.stringify(state, null, 1)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "mushra-" + state.listener.replace(/[^A-Za-z0-9_.-]+/g, "_") + ".json";
  document.body.append(link);
  link.click();
  link.remove();
}
$("begin").onclick = begin;
$("listener").onkeydown = (e) => { if (e.key === "Enter") begin(); };
$("stop").onclick = stopAll;
$("download").onclick = download;
""".replace("%FORMAT%", RATINGS_FORMAT)


def render_page(config: dict[str, Any]) -> str:
    """The page of a test described by ``config`` (``mushra.json``'s content)."""
    title = html.escape(config["title"])
    data = json.dumps(config).replace("</", "<\\/")  # no "</script>" inside the JSON block
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n"
            f"<style>{_STYLE}</style></head><body>{_BODY.format(title=title)}"
            f"<script type=\"application/json\" id=\"config\">{data}</script>\n"
            f"<script>{_SCRIPT}</script></body></html>\n")
