"""``stemsep listen``: the MUSHRA test page written from real stem folders, its ratings aggregated.

The aggregation tests compare with values computed here by hand; the browser tests drive the real
page in headless Chromium (Playwright using Debian's ``chromium``) from ``file://``: a listener
rates every trial, downloads the JSON, and ``--collect`` on two such files gives the means and the
exclusion computed here from the ratings the test set.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers.listening import SET_SLIDER, SR, STEMS, TRACKS, browser_fixture, write_corpus
from helpers.pretrained import cli_error
from stemsep.cli import main
from stemsep.evaluation.listening import loudest_start, lowpass
from stemsep.evaluation.mushra_collect import read_ratings


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("listen"))


@pytest.fixture(scope="module")
def mushra(corpus) -> Path:
    out = corpus / "test"
    assert main(["listen", "--mushra", "--references", str(corpus / "refs"), "--systems", f"A={corpus / 'A'}",
                 f"B={corpus / 'B'}", "-o", str(out), "--duration", "1", "--max-size", "2"]) == 0
    return out


def _band_energy(wav: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(wav, axis=0)) ** 2
    freqs = np.fft.rfftfreq(wav.shape[0], 1 / SR)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_lowpass_passes_below_and_stops_above_3_5_khz_without_delay():
    t = torch.arange(SR) / SR
    for freq, low, high in ((1000.0, 0.999, 1.001), (3000.0, 0.99, 1.01), (5000.0, 0.0, 1e-3)):
        sine = torch.sin(2 * math.pi * freq * t).repeat(2, 1)
        out = lowpass(sine, SR)
        middle = slice(2000, -2000)  # away from the zero-padded ends
        gain = float(out[:, middle].pow(2).mean().sqrt() / sine[:, middle].pow(2).mean().sqrt())
        assert low <= gain <= high, (freq, gain)
        if freq < 3500:  # zero phase: the passed sine is where it was
            assert torch.allclose(out[:, middle], sine[:, middle], atol=0.01)


def test_loudest_start_finds_the_loud_second():
    wav = torch.zeros(2, 5 * SR)
    wav[:, 3 * SR: 4 * SR] = 0.5
    assert loudest_start(wav, SR, 1.0) == 3.0
    assert loudest_start(wav[:, : SR // 2], SR, 1.0) == 0.0  # shorter than the excerpt: all of it


def test_page_and_audio_are_self_contained_and_within_budget(mushra):
    config = json.loads((mushra / "mushra.json").read_text())
    assert [t["id"] for t in config["trials"]] == [f"{t}/{s}" for t in TRACKS for s in STEMS]
    page = (mushra / "index.html").read_text()
    assert not re.search(r"(https?:)?//[A-Za-z0-9]", page.replace("://", "")), "no external URL in the page"
    assert "<script src" not in page and "<link" not in page
    files = sorted((mushra / "audio").rglob("*.mp3"))
    assert len(files) == len(TRACKS) * len(STEMS) * 4  # reference, anchor, A, B
    assert sum(f.stat().st_size for f in files) <= 2e6
    for trial in config["trials"]:
        assert set(trial["conditions"]) == {"reference", "anchor", "A", "B"}
        for path in trial["conditions"].values():
            assert (mushra / path).is_file() and path in page
    first = config["trials"][0]["conditions"]
    reference, sr = sf.read(mushra / first["reference"])
    anchor, _ = sf.read(mushra / first["anchor"])
    assert sr == SR and abs(reference.shape[0] - SR) < 3000  # 1 s excerpt (+ MP3 padding)
    # The anchor keeps the band below 3 kHz and loses what is above 5 kHz.
    assert _band_energy(anchor, 100, 3000) > 0.9 * _band_energy(reference, 100, 3000)
    assert _band_energy(anchor, 5000, 16000) < 1e-4 * _band_energy(reference, 5000, 16000)


def test_size_budget_lowers_the_bitrate_or_is_one_line(corpus, capsys, tmp_path):
    args = ["listen", "--mushra", "--references", str(corpus / "refs"), "--systems", f"A={corpus / 'A'}",
            "--duration", "1", "-o", str(tmp_path / "t")]
    assert main([*args, "--max-size", "0.25"]) == 0
    out = capsys.readouterr().out
    bitrate = int(re.search(r"MP3 (\d+) kbit/s", out).group(1))
    assert 128 <= bitrate < 320
    assert sum(f.stat().st_size for f in (tmp_path / "t").rglob("*.mp3")) <= 0.25e6
    assert "raise --max-size" in cli_error([*args, "--max-size", "0.05"], capsys)


def test_bad_inputs_are_one_line_errors(corpus, capsys, tmp_path):
    refs, a = str(corpus / "refs"), f"A={corpus / 'A'}"
    partial = tmp_path / "partial"
    shutil.copytree(corpus / "A" / "song1", partial / "song1")
    base = ["listen", "--mushra", "--references", refs, "-o", str(tmp_path / "t"), "--duration", "1"]
    assert "has no estimates of track 'song2'" in cli_error([*base, "--systems", a, f"P={partial}"], capsys)
    assert "'reference'" in cli_error([*base, "--systems", f"reference={corpus / 'A'}"], capsys)
    assert "NAME=FOLDER" in cli_error([*base, "--systems", str(corpus / "A")], capsys)
    assert "given twice" in cli_error([*base, "--systems", a, a], capsys)
    assert "no 'drums' stem" in cli_error([*base, "--systems", a, "--sources", "drums"], capsys)
    assert "needs --references" in cli_error(["listen", "--mushra", "--systems", a], capsys)


def test_a_silent_reference_stem_is_skipped_and_start_is_used(corpus, capsys, tmp_path):
    refs = tmp_path / "refs"
    shutil.copytree(corpus / "refs", refs)
    sf.write(refs / "song2" / "vocals.wav", np.zeros((round(1.5 * SR), 2), np.float32), SR, subtype="PCM_16")
    out = tmp_path / "t"
    assert main(["listen", "--mushra", "--references", str(refs), "--systems", f"A={corpus / 'A'}", "-o", str(out),
                 "--duration", "0.5", "--start", "0.25"]) == 0
    assert "skipped song2/vocals: the reference excerpt is silent" in capsys.readouterr().out
    trials = json.loads((out / "mushra.json").read_text())["trials"]
    assert [t["id"] for t in trials] == ["song1/bass", "song1/vocals", "song2/bass"]
    assert {(t["start"], t["duration"]) for t in trials} == {(0.25, 0.5)}
    assert "is only 1.5 s long" in cli_error(["listen", "--mushra", "--references", str(refs), "--systems",
                                             f"A={corpus / 'A'}", "-o", str(out), "--start", "2"], capsys)


# ---- aggregation ---------------------------------------------------------------------------------------


def _ratings_file(folder: Path, listener: str, trials: list[tuple[str, dict[str, float]]], test: str = "t1") -> Path:
    data = {"format": "stemsep-mushra-ratings", "version": 1, "test": test, "systems": ["A", "B"],
            "listener": listener,
            "trials": [{"id": f"x/{stem}", "track": "x", "stem": stem, "ratings": r} for stem, r in trials]}
    path = folder / f"{listener}.json"
    path.write_text(json.dumps(data))
    return path


def _r(reference, a, b, anchor) -> dict[str, float]:
    return {"reference": reference, "A": a, "B": b, "anchor": anchor}


def _rows(csv: Path) -> dict[tuple[str, str], list[str]]:
    lines = csv.read_text().splitlines()
    assert lines[0] == "stem,condition,ratings,mean,ci95,low,high"
    return {(c[0], c[1]): c[2:] for c in (line.split(",") for line in lines[1:])}


def test_collect_screens_and_averages_as_hand_computed(tmp_path, capsys):
    # Listener 1: 1 reference miss in 7 trials (14 %, kept); listener 2: 2 of 7 (29 %, excluded);
    # listener 3: no miss (kept).
    vocals = [_r(100, 60, 30, 10), _r(95, 80, 40, 20), _r(85, 70, 50, 15)]
    bass = [_r(100, 50, 20, 5)] * 4
    one = _ratings_file(tmp_path, "one", [("vocals", r) for r in vocals] + [("bass", r) for r in bass])
    two = _ratings_file(tmp_path, "two", [("vocals", _r(80, 99, 99, 99))] * 2 + [("bass", _r(100, 0, 0, 0))] * 5)
    three = _ratings_file(tmp_path, "three", [("vocals", _r(100, 40, 10, 0))] * 3 + [("bass", _r(90, 70, 60, 0))] * 4)
    assert main(["listen", "--collect", str(one), str(two), str(three), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "Excluded: two (hidden reference below 90 in 2 of 7 trials)" in printed
    rows = _rows(tmp_path / "out" / "mushra.csv")
    # vocals A: 60, 80, 70, 40, 40, 40 -> mean 55, squares 1550, sd = sqrt(1550 / 5), t(0.975, 5) = 2.570582
    n, mean, ci = rows[("vocals", "A")][:3]
    assert (int(n), float(mean)) == (6, 55.0)
    assert float(ci) == pytest.approx(2.570582 * math.sqrt(310) / math.sqrt(6), abs=1e-3)
    # bass anchor: 5 x4, 0 x4 -> mean 2.5, sd = sqrt(8 * 6.25 / 7), t(0.975, 7) = 2.364624
    n, mean, ci = rows[("bass", "anchor")][:3]
    assert (int(n), float(mean)) == (8, 2.5)
    assert float(ci) == pytest.approx(2.364624 * math.sqrt(50 / 7) / math.sqrt(8), abs=1e-3)
    # all stems, reference: (100+95+85+400+300+360) / 14
    assert float(rows[("all", "reference")][1]) == pytest.approx(1340 / 14, abs=1e-4)
    assert list(dict.fromkeys(c for _, c in rows)) == ["reference", "A", "B", "anchor"]
    assert (tmp_path / "out" / "mushra.png").stat().st_size > 5000
    assert "| vocals | A | 6 | 55.0 |" in (tmp_path / "out" / "mushra.md").read_text()


def test_fifteen_percent_exactly_is_kept(tmp_path):
    trials = [("bass", _r(50, 1, 1, 1))] * 3 + [("bass", _r(100, 1, 1, 1))] * 17  # 3 of 20 = 15 %
    assert not read_ratings(_ratings_file(tmp_path, "edge", trials)).excluded()
    assert read_ratings(_ratings_file(tmp_path, "over", trials[:3] + trials[4:])).excluded()  # 3 of 19


def test_bad_ratings_files_are_one_line_errors(tmp_path, capsys):
    good = _ratings_file(tmp_path, "good", [("bass", _r(100, 1, 1, 1))])
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "stemsep-mushra-ratings", "trials": [')
    assert "broken.json: not a readable ratings file" in cli_error(["listen", "--collect", str(broken)], capsys)
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    assert "not a MUSHRA ratings file" in cli_error(["listen", "--collect", str(other)], capsys)
    high = _ratings_file(tmp_path, "high", [("bass", _r(100, 101, 1, 1))])
    assert "rating of 'A' is 101" in cli_error(["listen", "--collect", str(high)], capsys)
    missing = _ratings_file(tmp_path, "missing", [("bass", {"reference": 100, "A": 1, "anchor": 1})])
    assert "expected ['A', 'B', 'anchor', 'reference']" in cli_error(["listen", "--collect", str(missing)], capsys)
    elsewhere = _ratings_file(tmp_path, "elsewhere", [("bass", _r(100, 1, 1, 1))], test="t2")
    assert "of test 't2'" in cli_error(["listen", "--collect", str(good), str(elsewhere)], capsys)
    assert "not found" in cli_error(["listen", "--collect", str(tmp_path / "nope.json")], capsys)
    failing = _ratings_file(tmp_path, "failing", [("bass", _r(10, 1, 1, 1))])
    assert "every listener fails" in cli_error(["listen", "--collect", str(failing)], capsys)


# ---- in a real browser ---------------------------------------------------------------------------------


browser = browser_fixture()


def _condition(row) -> str:
    return row.locator("audio").get_attribute("src").rsplit("/", 1)[-1].removesuffix(".mp3")


def _rate_all(page, scores: dict[str, int], downloads: Path) -> tuple[Path, list[list[str]]]:
    """Rate every trial of the open page with ``scores`` by condition; download; the orders shown."""
    shown = []
    while page.locator("#trial").is_visible():
        rows = page.locator(".condition")
        names = [_condition(rows.nth(i)) for i in range(rows.count())]
        shown.append(names)
        for i, name in enumerate(names):
            assert page.locator("#next").is_disabled()  # until every slider is moved
            rows.nth(i).locator("input").evaluate(SET_SLIDER, scores[name])
        page.click("#next")
    with page.expect_download() as download:
        page.click("#download")
    target = downloads / download.value.suggested_filename
    download.value.save_as(target)
    return target, shown


def _open(browser, mushra: Path, listener: str):
    page = browser.new_page()
    page.goto(mushra.joinpath("index.html").as_uri())
    page.fill("#listener", listener)
    page.click("#begin")
    return page


def test_switching_condition_keeps_the_playback_position(browser, mushra):
    page = _open(browser, mushra, "switcher")
    rows = page.locator(".condition")
    rows.nth(0).locator("button").click()
    page.wait_for_function("() => document.querySelector('.condition audio').currentTime > 0.3")
    at = rows.nth(0).locator("audio").evaluate("a => a.currentTime")
    rows.nth(1).locator("button").click()
    state = rows.nth(1).locator("audio").evaluate("a => [a.currentTime, a.paused]")
    assert state[0] >= at - 0.05 and not state[1]
    assert rows.nth(0).locator("audio").evaluate("a => a.paused")
    page.close()


def test_two_listeners_rate_in_the_browser_and_collect_screens_one_out(browser, mushra, tmp_path, capsys):
    good = {"reference": 100, "A": 75, "B": 40, "anchor": 15}
    careless = {"reference": 60, "A": 90, "B": 90, "anchor": 90}
    page = _open(browser, mushra, "alice")
    first = page.locator(".condition")
    names = [_condition(first.nth(i)) for i in range(first.count())]
    for i, name in enumerate(names):  # one trial rated, then the page reloaded: alice resumes at trial 2
        first.nth(i).locator("input").evaluate(SET_SLIDER, good[name])
    page.click("#next")
    page.reload()
    page.fill("#listener", "alice")
    page.click("#begin")
    assert page.locator("#trial-title").inner_text() == "Trial 2 of 4"
    alice, _ = _rate_all(page, good, tmp_path)
    page.close()
    page = _open(browser, mushra, "bob")
    bob, _ = _rate_all(page, careless, tmp_path)
    page.close()
    alice_data = json.loads(alice.read_text())
    assert alice.name == "mushra-alice.json" and len(alice_data["trials"]) == 4
    assert sorted(t["id"] for t in alice_data["trials"]) == sorted(f"{t}/{s}" for t in TRACKS for s in STEMS)
    bob_data = json.loads(bob.read_text())
    orders = [(d["order"], [t["shown"] for t in d["trials"]]) for d in (alice_data, bob_data)]
    assert orders[0] != orders[1]  # each listener an order of their own (seeded by the name)
    assert all(t["ratings"] == good for t in alice_data["trials"])
    assert main(["listen", "--collect", str(alice), str(bob), "-o", str(tmp_path / "out")]) == 0
    assert "Excluded: bob (hidden reference below 90 in 4 of 4 trials)" in capsys.readouterr().out
    rows = _rows(tmp_path / "out" / "mushra.csv")
    for stem in (*STEMS, "all"):
        for condition, score in good.items():
            n, mean, ci = rows[(stem, condition)][:3]
            assert (int(n), float(mean), float(ci)) == ((4 if stem == "all" else 2), score, 0.0)


def test_rates_that_differ(corpus, capsys, tmp_path):
    """A system at another sample rate is resampled to the references' (as `score` does); references
    whose stems differ in rate are a one-line error naming the file."""
    half = tmp_path / "half"
    shutil.copytree(corpus / "A", half)
    for path in half.rglob("*.wav"):
        wav, rate = sf.read(path)
        sf.write(path, wav[::2], rate // 2)
    out = tmp_path / "t"
    assert main(["listen", "--mushra", "--references", str(corpus / "refs"), "--systems", f"H={half}",
                 "-o", str(out), "--duration", "1"]) == 0
    assert (out / "index.html").is_file()
    refs = tmp_path / "refs"
    shutil.copytree(corpus / "refs", refs)
    stem = sorted(refs.rglob("*.wav"))[0]
    wav, rate = sf.read(stem)
    sf.write(stem, wav[::2], rate // 2)
    line = cli_error(["listen", "--mushra", "--references", str(refs), "--systems", f"A={corpus / 'A'}",
                      "-o", str(tmp_path / "t2"), "--duration", "1"], capsys)
    assert str(stem.parent) in line and "sample rate is 44100 Hz, expected 22050 Hz" in line
