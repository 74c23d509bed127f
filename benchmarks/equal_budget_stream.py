"""Quality against latency at an equal CPU budget: HS-TasNet small vs HT Demucs small, offline and streamed.

Trains both networks with benchmarks/equal_budget.py (same data, segment, batch, schedule and CPU-time
budget; ``--checkpoint`` keeps the weights), then separates the synthetic corpus's test songs with
each checkpoint

* offline, as validation does (``apply_model`` with the training segment, overlap 0.25), and for
  HS-TasNet also in one call on the whole track (``net(mix)``, what its causal stream equals);
* streamed with :class:`~stemsep.inference.stream.StreamingSeparator`, blocks pushed one after the
  other as a live input would arrive: windowed at ``--windows`` seconds (both networks; the latency is
  the window geometry, read from ``.latency``) and, for HS-TasNet, causally hop by hop (23.2 ms at
  44.1 kHz with the paper's framing).

A streamed output is ``latency`` samples late: it is aligned by dropping its first ``latency`` samples
before scoring, and checked against the offline separation with the same geometry (the column
``max |stream - offline|``: the engine's contract is equality up to float rounding). Scores are
whole-track nSDR per source (:func:`stemsep.evaluation.metrics.nsdr`, validation's metric), averaged over
the songs. Writes a markdown table and a PNG of nSDR against latency (log scale; offline as dashed lines).

    OMP_NUM_THREADS=1 python benchmarks/equal_budget_stream.py --cpu-budget 1000 --jobs 2 \
        --runs runs/equal_budget_stream --out docs/img/stream_quality.md --png docs/img/stream_quality.png

``--skip-training`` evaluates the checkpoints already in ``--runs`` (from an earlier run of this script
or of ``equal_budget.py --checkpoint`` with the same ``--runs``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # equal_budget, when imported from elsewhere
import equal_budget  # noqa: E402

from stemsep.contract import stream_step_of  # noqa: E402
from stemsep.data.corpus.layouts import discover_songs, read_stem  # noqa: E402
from stemsep.evaluation.metrics import nsdr  # noqa: E402
from stemsep.inference import apply_model, optimize_for_cpu  # noqa: E402
from stemsep.inference.stream import StreamingSeparator  # noqa: E402
from stemsep.io.checkpoint import load_separator  # noqa: E402

MODELS = ["HS-TasNet small", "HT Demucs small"]
SOURCES = equal_budget.SOURCES
CORPUS = Path("~/.cache/stemsep/quickstart").expanduser()  # configs/data/synthetic.yaml's prepare.root
OVERLAP = 0.25  # validation's eval_overlap (configs/setups/synthetic_htdemucs_small.yaml)


def run_dir(runs: str, name: str) -> Path:
    """The run folder equal_budget.run_one uses for ``name``."""
    return Path(runs) / name.lower().replace(" ", "_").replace("-", "_")


def checkpoint_in(folder: Path) -> Path:
    """The newest checkpoint Lightning wrote under ``folder`` (one per run: training stops once)."""
    found = sorted(folder.glob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{folder}: no checkpoints/*.ckpt (train with --checkpoint, or drop --skip-training)")
    return found[-1]


def test_songs(root: Path, limit: int | None) -> list[tuple[str, torch.Tensor]]:
    """``(name, stems (S, C, T))`` of the corpus's test songs; the mix is their sum, as in validation."""
    songs = discover_songs(root, "musdb", "test", sources=SOURCES)[:limit]
    return [(song.name, torch.stack([read_stem(song, song.stems[s][0], s) for s in SOURCES])) for song in songs]


def streamed(separator: StreamingSeparator, mix: torch.Tensor, block: int) -> torch.Tensor:
    """``mix (C, T)`` pushed ``block`` samples at a time, then flushed; the stems ``(S, C, T)``
    aligned to the input (the first ``latency`` output samples dropped)."""
    outs = [separator.push(mix[:, at:at + block]) for at in range(0, mix.shape[-1], block)]
    outs.append(separator.flush())
    return torch.cat(outs, -1)[..., separator.latency:]


def modes(net: torch.nn.Module, windows: list[float], block: int):
    """``(mode, window seconds or None, latency or None, separate)`` for every way ``net`` is evaluated;
    ``separate(mix (C, T))`` gives ``(stems, the offline stems a stream must equal, or None)``."""
    yield "offline (training segment)", None, None, lambda mix: (apply_model(net, mix[None], overlap=OVERLAP)[0], None)
    if stream_step_of(net) is not None:
        yield "offline (whole track)", None, None, lambda mix: (net(mix[None])[0], None)
        causal = StreamingSeparator(net, causal=True)
        yield "streamed, causal", None, causal.latency, lambda mix: (streamed(causal, mix, block), net(mix[None])[0])
    for window in windows:
        separator = StreamingSeparator(net, segment=window, overlap=OVERLAP)

        def stream_windowed(mix, separator=separator, window=window):
            return streamed(separator, mix, block), apply_model(net, mix[None], segment=window, overlap=OVERLAP)[0]
        yield "streamed, windowed", window, separator.latency, stream_windowed


def evaluate(name: str, checkpoint: Path, songs, windows: list[float], block: int) -> list[dict]:
    """One row per mode: per-source nSDR averaged over ``songs``, the latency, the stream check."""
    net = optimize_for_cpu(load_separator(checkpoint))
    rows = []
    for mode, window, latency, separate in modes(net, windows, block):
        scores, diff = [], None
        with torch.no_grad():
            for _, stems in songs:
                estimate, offline = separate(stems.sum(0))
                scores.append(nsdr(estimate, stems).double())
                if offline is not None:
                    diff = max(diff or 0.0, (estimate - offline).abs().max().item())
        values = torch.stack(scores).mean(0)
        row = {"model": name, "mode": mode, "window_s": window, "latency_samples": latency,
               "latency_ms": None if latency is None else 1000 * latency / net.samplerate,
               "nsdr": dict(zip(SOURCES, values.tolist())), "nsdr_mean": values.mean().item(),
               "max_stream_diff": diff}
        rows.append(row)
        print(f"{name:16s} {describe(row):50s} " + "  ".join(f"{s} {row['nsdr'][s]:6.2f}" for s in SOURCES)
              + f"  mean {row['nsdr_mean']:6.2f}", flush=True)
    return rows


def describe(row: dict) -> str:
    """The mode of a row in words: 'offline ...', 'streamed, windowed 0.25 s (1234 samples = 28.0 ms)'."""
    if row["latency_samples"] is None:
        return row["mode"]
    window = f" {row['window_s']:g} s" if row["window_s"] is not None else ""
    return f"{row['mode']}{window} ({row['latency_samples']} samples = {row['latency_ms']:.1f} ms)"


def table(rows: list[dict]) -> str:
    lines = ["| model | separation | latency (ms) | " + " | ".join(SOURCES) + " | mean nSDR (dB) | max abs stream - offline |",
             "|---|---|---:|" + "---:|" * (len(SOURCES) + 2)]
    for r in rows:
        latency = "offline" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        window = f" {r['window_s']:g} s" if r["window_s"] is not None else ""
        check = "" if r["max_stream_diff"] is None else f"{r['max_stream_diff']:.1e}"
        lines.append(f"| {r['model']} | {r['mode']}{window} | {latency} | "
                     + " | ".join(f"{r['nsdr'][s]:.2f}" for s in SOURCES) + f" | {r['nsdr_mean']:.2f} | {check} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Per-source and mean nSDR against latency (log x), one colour per model; offline as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["mean", *SOURCES]
    fig, grid = plt.subplots(2, 3, figsize=(10, 6), sharex=True)
    axes, legend_ax = grid.flat[:len(panels)], grid.flat[len(panels)]
    for color, model in zip(("tab:orange", "tab:blue"), MODELS):
        mine = [r for r in rows if r["model"] == model]
        streamed_rows = sorted((r for r in mine if r["latency_ms"] is not None), key=lambda r: r["latency_ms"])
        offline = next((r for r in mine if r["mode"].startswith("offline (training")), None)
        for ax, panel in zip(axes, panels):
            value = (lambda r: r["nsdr_mean"]) if panel == "mean" else (lambda r, p=panel: r["nsdr"][p])
            ax.plot([r["latency_ms"] for r in streamed_rows], [value(r) for r in streamed_rows], "o-", color=color,
                    label=f"{model}, streamed")
            if offline is not None:
                ax.axhline(value(offline), color=color, ls="--", lw=1, label=f"{model}, offline")
    for ax, panel in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_title(f"{panel} nSDR", fontsize=10)
        ax.set_xlabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in grid[:, 0]:
        ax.set_ylabel("nSDR (dB)")
    legend_ax.axis("off")
    legend_ax.legend(*axes[0].get_legend_handles_labels(), loc="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-budget", type=float, default=1000.0, help="training CPU seconds per model (default 1000)")
    parser.add_argument("--segment", type=float, default=1.0, help="training segment in seconds (default 1.0)")
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once (CPU budgets are per process)")
    parser.add_argument("--lr", default="family", help="as equal_budget.py: 'family' or one value for both")
    parser.add_argument("--runs", default="runs/equal_budget_stream", help="run directories (logs, checkpoints)")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the checkpoints already in --runs")
    parser.add_argument("--windows", type=float, nargs="+", default=[0.25, 1.0, 3.0], help="streaming windows (s)")
    parser.add_argument("--block", type=int, default=2048, help="samples pushed per streaming call")
    parser.add_argument("--songs", type=int, default=None, help="first N test songs only (default all)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help=f"corpus root, musdb layout (default {CORPUS})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the evaluation")
    parser.add_argument("--out", default=None, help="markdown table here")
    parser.add_argument("--png", default=None, help="figure here")
    parser.add_argument("--json", default=None, help="rows as JSON here")
    args = parser.parse_args(argv)
    args.checkpoint = True  # read by equal_budget.run_one
    if not args.skip_training:
        lrs = {m: equal_budget.MODELS[m][1] if args.lr == "family" else float(args.lr) for m in MODELS}
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            trained = list(pool.map(lambda m: equal_budget.run_one(m, equal_budget.MODELS[m][0], lrs[m], args), MODELS))
        failed = [r["name"] for r in trained if "error" in r]
        if failed:
            raise SystemExit(f"training failed for {failed}; see the fit.log files under {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    songs = test_songs(args.corpus, args.songs)
    rows, budgets = [], []
    for name in MODELS:
        folder = run_dir(args.runs, name)
        result = json.loads((folder / "result.json").read_text())
        budgets.append(f"{name}: {result['steps']} steps, {result['train_cpu_seconds']:.0f} CPU s")
        rows += evaluate(name, checkpoint_in(folder), songs, args.windows, args.block)
    header = (f"Trained for {', '.join(budgets)} (1 thread), {args.segment:g} s segments, batch 4, on the synthetic "
              f"corpus; nSDR (dB) on its {len(songs)} test songs; streamed with {args.block}-sample blocks.\n\n")
    text = header + table(rows)
    print("\n" + text)
    if args.out:
        write_text(Path(args.out), text)
    if args.json:
        write_text(Path(args.json), json.dumps(rows, indent=1))
    if args.png:
        plot(rows, Path(args.png), f"equal CPU budget ({'; '.join(budgets)}), synthetic corpus")


if __name__ == "__main__":
    main()
