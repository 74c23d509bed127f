"""``stemsep report RESULTS --references R --estimates E``: a listening page per track, written from a
real ``stemsep score`` run and driven in headless Chromium from ``file://`` (frame click seeks every
player, play advances them together, solo/mute set the gains, a loop region wraps)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers.listening import STEMS, TRACKS, browser_fixture, write_corpus
from helpers.pretrained import cli_error
from stemsep.cli import main

browser = browser_fixture()
ALL_TIMES = "[...document.querySelectorAll('audio')].map(a => a.currentTime)"


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    root = write_corpus(tmp_path_factory.mktemp("pages"), seconds=3.0)
    assert main(["score", "--references", str(root / "refs"), "--estimates", str(root / "A"), "-o",
                 str(root / "scores"), "--metrics", "sdr"]) == 0
    return root


@pytest.fixture(scope="module")
def report(scored) -> Path:
    out = scored / "report"
    assert main(["report", str(scored / "scores"), "--references", str(scored / "refs"), "--estimates",
                 str(scored / "A"), "-o", str(out), "--audio-max-size", "5"]) == 0
    return out


def test_pages_link_their_audio_and_nothing_outside(report):
    index = (report / "report.html").read_text()
    pages = sorted((report / "tracks").glob("*.html"))
    assert [p.name for p in pages] == [f"{i:03d}-{t}.html" for i, t in enumerate(TRACKS)]
    for page in pages:
        assert f'href="tracks/{page.name}"' in index
        text = page.read_text()
        assert not re.search(r"(https?:)?//[A-Za-z0-9]", text), "no external URL"
        sources = re.findall(r'<audio preload="auto" src="([^"]+)"', text)
        assert len(sources) == len(STEMS) * 3
        assert all((page.parent / s).is_file() for s in sources)
        assert text.count('class="point"') == len(STEMS) * 3  # 3 s of 1 s frames per stem
    assert sum(f.stat().st_size for f in (report / "tracks").rglob("*.mp3")) <= 5e6


def test_residual_is_estimate_minus_reference(report):
    folder = report / "tracks" / f"000-{TRACKS[0]}"
    reference, _ = sf.read(folder / "bass-reference.mp3")
    residual, _ = sf.read(folder / "bass-residual.mp3")
    # system A is the reference plus noise at 0.02 (reference at 0.2): 20 dB under it
    ratio = np.sqrt(np.mean(residual ** 2) / np.mean(reference ** 2))
    assert 0.07 < ratio < 0.14


def test_bad_report_audio_options_are_one_line(scored, capsys, tmp_path):
    base = ["report", str(scored / "scores"), "-o", str(tmp_path / "r")]
    assert "give both --references and --estimates" in cli_error([*base, "--references", str(scored / "refs")],
                                                                 capsys)
    partial = tmp_path / "partial"
    shutil.copytree(scored / "A" / TRACKS[0], partial / TRACKS[0])
    assert f"have no track '{TRACKS[1]}'" in cli_error(
        [*base, "--references", str(scored / "refs"), "--estimates", str(partial)], capsys)
    assert "raise --audio-max-size" in cli_error(
        [*base, "--references", str(scored / "refs"), "--estimates", str(scored / "A"), "--audio-max-size", "0.1"],
        capsys)


def test_one_transport_seeks_plays_and_sets_gains(browser, report):
    page = browser.new_page()
    page.goto((report / "tracks" / f"000-{TRACKS[0]}.html").as_uri())
    page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
    point = page.locator("svg.plot circle.point").nth(2)  # the first stem's third frame: 2 s
    point.click()
    assert page.evaluate(ALL_TIMES) == [2.0] * 6
    page.locator("svg.plot rect.frame").nth(1).click()  # a frame's column: 1 s
    assert page.evaluate(ALL_TIMES) == [1.0] * 6
    page.click("#play")
    page.wait_for_function("document.querySelector('audio').currentTime > 1.3")
    times = page.evaluate(ALL_TIMES)
    assert all(abs(t - times[0]) < 0.15 for t in times), times  # together
    page.click("#play")  # pause
    paused = page.evaluate(ALL_TIMES)
    page.wait_for_timeout(300)
    assert page.evaluate(ALL_TIMES) == paused
    assert page.evaluate("[...document.querySelectorAll('audio')].every(a => a.paused)")
    volumes = "[...document.querySelectorAll('audio')].map(a => a.volume)"
    page.locator(".solo").nth(1).click()  # solo the first stem's estimate
    assert page.evaluate(volumes) == [0, 1, 0, 0, 0, 0]
    page.locator(".mute").nth(1).click()  # muted as well: silent
    assert page.evaluate(volumes) == [0, 0, 0, 0, 0, 0]
    page.locator(".solo").nth(1).click()
    assert page.evaluate(volumes) == [1, 0, 1, 1, 1, 1]
    page.check("#loop")
    page.fill("#loop-from", "0.5")
    page.fill("#loop-to", "0.9")
    page.locator("svg.plot rect.frame").nth(0).click()
    page.click("#play")
    page.wait_for_timeout(1500)  # past 0.9 s more than once: wrapped back each time
    assert 0.4 < page.evaluate("document.querySelector('audio').currentTime") < 1.1
    page.close()


# ---- several systems -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compared(scored) -> Path:
    assert main(["score", "--references", str(scored / "refs"), "--estimates", str(scored / "B"), "-o",
                 str(scored / "scores_b"), "--metrics", "sdr"]) == 0
    out = scored / "compare"
    assert main(["report", str(scored / "scores"), str(scored / "scores_b"), "--names", "A", "B", "--references",
                 str(scored / "refs"), "--estimates", str(scored / "A"), str(scored / "B"), "-o", str(out),
                 "--audio-max-size", "5"]) == 0
    return out


def test_comparison_lists_deltas_worst_first(scored, compared):
    import json

    per_track = {name: json.loads((scored / folder / "summary.json").read_text())["per_track"]
                 for name, folder in (("A", "scores"), ("B", "scores_b"))}
    expected = sorted((per_track["B"][t][s]["SDR"] - per_track["A"][t][s]["SDR"], t, s) for t in TRACKS for s in STEMS)
    page = (compared / "compare.html").read_text()
    found = re.findall(r'<td class="name">(?:<a href="tracks/[^"]+">)?([^<]+)(?:</a>)?</td><td class="name">([^<]+)'
                       r'</td><td>([-\d.]+)</td><td>([-\d.]+)</td><td[^>]*>([-+\d.]+)</td>', page)
    assert [(t, s) for _, t, s in expected] == [(t, s) for t, s, *_ in found]
    for (delta, *_), (*_, a, b, shown) in zip(expected, found):
        assert float(shown) == pytest.approx(delta, abs=0.006) and float(b) - float(a) == pytest.approx(delta, abs=0.02)
    assert expected[0][0] < -5  # B (10x the noise of A) loses everywhere: about -14 dB
    for name in ("A", "B"):
        assert (compared / "systems" / name / "report.html").is_file()
    audio = sorted(p.name for p in (compared / "tracks" / f"000-{TRACKS[0]}").iterdir())
    assert audio == sorted(f"{s}-{k}.mp3" for s in STEMS for k in
                           ("reference", "estimate-A", "estimate-B", "residual-A", "residual-B"))


def test_several_systems_bad_options_are_one_line(scored, capsys, tmp_path):
    base = ["report", str(scored / "scores"), str(scored / "scores_b"), "-o", str(tmp_path / "c")]
    assert "2 unique names needed" in cli_error([*base, "--names", "A"], capsys)
    assert "2 unique names needed" in cli_error([*base, "--names", "A", "A"], capsys)
    assert "one folder per results folder" in cli_error(
        [*base, "--references", str(scored / "refs"), "--estimates", str(scored / "A")], capsys)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    shutil.copy(scored / "scores" / f"{TRACKS[0]}.json", fewer)
    assert f"differ in track '{TRACKS[1]}'" in cli_error(["report", str(scored / "scores"), str(fewer), "-o",
                                                          str(tmp_path / "c")], capsys)
    assert "give the same file name" in cli_error([*base, "--names", "m v1", "m_v1"], capsys)
    one_stem = tmp_path / "one_stem"
    one_stem.mkdir()
    for track in TRACKS:  # the same tracks, one stem fewer scored
        record = json.loads((scored / "scores" / f"{track}.json").read_text())
        record["targets"] = record["targets"][:1]
        (one_stem / f"{track}.json").write_text(json.dumps(record))
    assert "compare results of the same stems" in cli_error(["report", str(scored / "scores"), str(one_stem), "-o",
                                                             str(tmp_path / "c")], capsys)


def test_ab_switch_keeps_the_position_and_changes_who_is_heard(browser, compared):
    page = browser.new_page()
    page.goto((compared / "tracks" / f"000-{TRACKS[0]}.html").as_uri())
    page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
    heard = ("[...document.querySelectorAll('audio')].filter(a => a.volume > 0)"
             ".map(a => a.dataset.kind + ':' + a.dataset.system)")
    assert page.evaluate(heard) == ["reference:", "estimate:A", "residual:A"] * 2
    page.click("#play")
    page.wait_for_function("document.querySelector('audio').currentTime > 0.5")
    page.click("#play")
    at = page.evaluate(ALL_TIMES)
    page.locator("button.system", has_text="B").click()
    assert page.evaluate(ALL_TIMES) == at and max(at) - min(at) < 0.15
    assert page.evaluate(heard) == ["reference:", "estimate:B", "residual:B"] * 2
    page.close()


def _worst_frame(results: Path, track: str, stem: str) -> float:
    import json

    record = json.loads((results / f"{track}.json").read_text())
    frames = next(t for t in record["targets"] if t["name"] == stem)["frames"]
    return min((f["metrics"]["SDR"], f["time"]) for f in frames if f["metrics"]["SDR"] is not None)[1]


def test_a_summary_dot_opens_its_track_at_the_worst_frame(browser, scored, report, compared):
    page = browser.new_page()
    page.goto((report / "report.html").as_uri())
    dot = page.locator("svg.strips a", has=page.locator("title", has_text=f"{TRACKS[1]}:")).nth(1)  # 2nd stem
    dot.click()
    page.wait_for_url(f"**/001-{TRACKS[1]}.html#t=*")
    worst = _worst_frame(scored / "scores", TRACKS[1], STEMS[1])
    assert worst > 0  # not where the players start anyway
    page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)")
    assert page.evaluate(ALL_TIMES) == [worst] * 6
    page.goto((compared / "systems" / "B" / "report.html").as_uri())  # a system's own report: that system chosen
    page.locator("svg.strips a", has=page.locator("title", has_text=f"{TRACKS[0]}:")).nth(1).click()
    page.wait_for_url("**#t=*&system=B")
    assert page.evaluate("document.querySelector('button.system.on').dataset.system") == "B"
    worst = _worst_frame(scored / "scores_b", TRACKS[0], STEMS[1])
    assert worst > 0 and page.evaluate(ALL_TIMES) == [worst] * 10
    page.close()


def test_score_report_listen_writes_the_same_pages(scored, report, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["score", "--references", str(scored / "refs"), "--estimates", str(scored / "A"), "--metrics", "sdr",
                 "--report", str(out), "--listen", "--audio-max-size", "5"]) == 0
    index = (out / "report.html").read_text()
    pages = sorted(p.name for p in (out / "tracks").glob("*.html"))
    assert pages == sorted(p.name for p in (report / "tracks").glob("*.html")) and pages
    assert all(f'href="tracks/{name}"' in index for name in pages)
    assert "click a dot to hear that track" in index  # the summary's dots open the pages
    assert "--listen writes the report's listening pages" in cli_error(
        ["score", "--references", str(scored / "refs"), "--estimates", str(scored / "A"), "--listen"], capsys)
