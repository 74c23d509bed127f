"""benchmarks/equal_budget_stream.py's evaluation on two tiny checkpoints and one synthetic song:
every mode scored, each stream equal to its offline geometry once aligned by its latency, the
table, JSON and PNG written (training is `stemsep fit`, tested elsewhere; it is skipped here)."""

from __future__ import annotations

import json
import sys

from helpers import REPO
from helpers.tools import small_network
from stemsep.io.checkpoint import save_checkpoint

sys.path.insert(0, str(REPO / "benchmarks"))
import equal_budget_stream  # noqa: E402

TINY = {"HS-TasNet small": ("hstasnet_tiny", {}),
        "HT Demucs small": ("htdemucs_small", {"channels": 4, "t_layers": 1, "segment": 1})}


def fake_runs(root):
    """A run folder per model as equal_budget.py --checkpoint leaves it: result.json and a checkpoint."""
    for name, (config_name, init_args) in TINY.items():
        folder = equal_budget_stream.run_dir(str(root), name)
        (folder / "checkpoints").mkdir(parents=True)
        net, config = small_network(config_name, **init_args)
        save_checkpoint(folder / "checkpoints" / "last.ckpt", net, config)
        (folder / "result.json").write_text(json.dumps({"steps": 1, "train_cpu_seconds": 1.0}))


def test_streamed_and_offline_scores(tmp_path, corpus_root):
    fake_runs(tmp_path / "runs")
    out = tmp_path / "out"
    equal_budget_stream.main(["--skip-training", "--runs", str(tmp_path / "runs"), "--corpus", str(corpus_root),
                              "--songs", "1", "--windows", "0.25", "--block", "1000", "--out", str(out / "t.md"),
                              "--json", str(out / "rows.json"), "--png", str(out / "fig.png")])
    rows = json.loads((out / "rows.json").read_text())
    modes = [(r["model"], r["mode"], r["window_s"], r["latency_samples"]) for r in rows]
    assert modes == [("HS-TasNet small", "offline (training segment)", None, None),
                     ("HS-TasNet small", "offline (whole track)", None, None),
                     ("HS-TasNet small", "streamed, causal", None, 1023),
                     ("HS-TasNet small", "streamed, windowed", 0.25, 11024),
                     ("HT Demucs small", "offline (training segment)", None, None),
                     ("HT Demucs small", "streamed, windowed", 0.25, 11024)]
    for row in rows:
        assert set(row["nsdr"]) == {"drums", "bass", "other", "vocals"}
        if row["mode"].startswith("streamed"):
            assert row["max_stream_diff"] < 1e-4, row
    # the causal stream is the whole-track network: the same scores
    whole, causal = rows[1], rows[2]
    assert all(abs(whole["nsdr"][s] - causal["nsdr"][s]) < 1e-3 for s in whole["nsdr"])
    table = (out / "t.md").read_text()
    assert "| HS-TasNet small | streamed, causal | 23.2 |" in table
    assert (out / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
