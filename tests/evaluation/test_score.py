"""stemsep score: files, aggregation, agreement with bss_eval, one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from stemsep.cli import main
from stemsep.evaluation.bss_eval import bss_eval
from stemsep.evaluation.metrics import nanmedian
from stemsep.evaluation.results import summarize
from stemsep.io.audio import write_audio

SR = 8000
SOURCES = ["drums", "bass", "other", "vocals"]


def _make(root: Path, tracks: int = 3, seconds: float = 3.0) -> tuple[Path, Path, dict]:
    """References under ROOT/refs/test/<track>/ and noisy estimates under ROOT/est/<track>/."""
    rng = np.random.default_rng(0)
    truth = {}
    for t in range(tracks):
        name = f"song{t}"
        refs = rng.standard_normal((4, 2, int(seconds * SR))).astype(np.float32) * 0.2
        ests = refs + rng.uniform(0.02, 0.2) * rng.standard_normal(refs.shape).astype(np.float32)
        for j, source in enumerate(SOURCES):
            write_audio(root / "refs" / "test" / name / f"{source}.wav", refs[j], SR, bits=32)
            write_audio(root / "est" / name / f"{source}.wav", ests[j], SR, bits=32)
        write_audio(root / "refs" / "test" / name / "mixture.wav", refs.sum(0), SR, bits=32)
        truth[name] = (torch.from_numpy(ests), torch.from_numpy(refs))
    return root / "refs", root / "est", truth


def test_score_writes_records_and_summary(tmp_path, capsys):
    refs, ests, truth = _make(tmp_path)
    out = tmp_path / "scores"
    assert main(["score", "--references", str(refs), "--estimates", str(ests), "-o", str(out)]) == 0
    table = capsys.readouterr().out
    assert "3 track(s)" in table and "vocals" in table and "all" in table
    record = json.loads((out / "song1.json").read_text())
    assert [t["name"] for t in record["targets"]] == SOURCES
    assert len(record["targets"][0]["frames"]) == 3
    assert set(record["targets"][0]["frames"][0]["metrics"]) == {"SDR", "ISR", "SIR", "SAR"}
    csv_lines = (out / "song1.csv").read_text().splitlines()
    assert csv_lines[0] == "track,source,time,SDR,ISR,SIR,SAR" and len(csv_lines) == 1 + 4 * 3
    # Values are bss_eval's; the summary is median over frames, then median/mean over tracks.
    per_track = {}
    for name, (est, ref) in truth.items():
        scores = bss_eval(est, ref, samplerate=SR)
        per_track[name] = {m: nanmedian(v, dim=-1) for m, v in scores.items()}
        got = [f["metrics"]["SAR"] for f in json.loads((out / f"{name}.json").read_text())["targets"][2]["frames"]]
        assert np.allclose(got, scores["sar"][2].numpy(), atol=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracks"] == 3
    for metric in ("sdr", "isr", "sir", "sar"):
        stacked = torch.stack([per_track[n][metric] for n in truth])  # (tracks, sources)
        for j, source in enumerate(SOURCES):
            got = summary["sources"][source][metric.upper()]
            assert math.isclose(got["median"], stacked[:, j].median().item(), abs_tol=1e-9)
            assert math.isclose(got["mean"], stacked[:, j].mean().item(), abs_tol=1e-9)
        assert math.isclose(summary["all"][metric.upper()]["mean"], stacked.mean().item(), abs_tol=1e-9)
    assert "nSDR" in summary["all"]
    assert (out / "summary.csv").read_text().startswith("source,metric,median,mean")


def test_summarize_ignores_nan_frames_and_tracks():
    frames = [{"time": 0, "duration": 1, "metrics": {"SDR": v}} for v in (1.0, None, 3.0, 10.0)]
    silent = [{"time": 0, "duration": 1, "metrics": {"SDR": None}}]
    records = [{"name": "a", "targets": [{"name": "x", "frames": frames}]},
               {"name": "b", "targets": [{"name": "x", "frames": silent}]},
               {"name": "c", "targets": [{"name": "x", "frames": frames[:1]}]}]
    summary = summarize(records)
    assert summary["per_track"]["a"]["x"]["SDR"] == 3.0
    assert math.isnan(summary["per_track"]["b"]["x"]["SDR"])
    assert summary["sources"]["x"]["SDR"] == {"median": 2.0, "mean": 2.0}


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stemsep: error: ") and "\n" not in err
    return err


def test_score_bad_inputs_are_one_line_errors(tmp_path, capsys):
    refs, ests, _ = _make(tmp_path, tracks=2, seconds=1.0)
    argv = ["score", "--references", str(refs), "--estimates", str(ests)]
    (ests / "song0" / "bass.wav").unlink()
    assert "no 'bass' stem" in _error(capsys, argv)
    write_audio(ests / "song0" / "bass.wav", np.zeros((2, SR // 2), np.float32) + 0.1, SR)
    assert "samples" in _error(capsys, argv)
    write_audio(ests / "song0" / "bass.wav", np.zeros((1, SR), np.float32) + 0.1, SR)
    assert "channel" in _error(capsys, argv)
    write_audio(ests / "song0" / "bass.wav", np.zeros((2, SR), np.float32), SR)
    assert "silent" in _error(capsys, argv)
    assert main([*argv, "--allow-silent", "--metrics", "sdr"]) == 0
    capsys.readouterr()
    (ests / "song0" / "bass.wav").write_bytes(b"not audio")
    assert "not a readable audio file" in _error(capsys, argv)
    import shutil

    shutil.rmtree(ests / "song0")
    assert "missing for 1 of 2" in _error(capsys, argv)
    assert main([*argv, "--partial", "--metrics", "sdr"]) == 0
    capsys.readouterr()
    assert "not found" in _error(capsys, ["score", "--references", str(tmp_path / "nope"), "--estimates", str(ests)])


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _report_images(page: Path) -> list[Path]:
    import re

    html = page.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert sources, "the report shows no figure"
    return [page.parent / s for s in sources]


def _check_png(path: Path) -> None:
    import matplotlib.image
    from PIL import Image

    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100
    assert matplotlib.image.imread(path).ndim == 3


def test_score_report_writes_html_with_valid_pngs(tmp_path, capsys):
    """`--report DIR`: the page, its summary and track table, and figures that exist and are PNGs;
    the same report builds from the results folder (as `stemsep test` writes it)."""
    import pytest

    pytest.importorskip("matplotlib")
    refs, ests, truth = _make(tmp_path, tracks=3, seconds=3.0)
    report = tmp_path / "report"
    out = tmp_path / "scores"
    assert main(["score", "--references", str(refs), "--estimates", str(ests), "-o", str(out),
                 "--report", str(report)]) == 0
    assert f"report: {report / 'report.html'}" in capsys.readouterr().out
    page = report / "report.html"
    html = page.read_text(encoding="utf-8")
    assert "Summary" in html and all(name in html for name in truth) and all(s in html for s in SOURCES)
    images = _report_images(page)
    assert len(images) == 1 + len(truth)  # the boxplots, then one framewise figure per track
    for image in images:
        _check_png(image)
    assert not [p for p in report.rglob(".*")]  # atomic writes leave no temporaries
    # From the results folder (the per-track JSON files `stemsep test` writes too).
    assert main(["report", str(out), "-o", str(tmp_path / "again")]) == 0
    again = tmp_path / "again" / "report.html"
    assert str(again) in capsys.readouterr().out
    for image in _report_images(again):
        _check_png(image)


def test_report_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import sys

    refs, ests, _ = _make(tmp_path, tracks=1, seconds=1.0)
    assert "no per-track results" in _error(capsys, ["report", str(tmp_path)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    err = _error(capsys, ["score", "--references", str(refs), "--estimates", str(ests), "--report",
                          str(tmp_path / "report")])
    assert "pip install 'stemsep[report]'" in err
