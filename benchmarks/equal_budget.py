"""Equal-budget comparison of the model families on the synthetic corpus (docs/models.md).

Trains HT Demucs small, BS-RoFormer small, Mel-Band RoFormer small and SCNet small
(configs/model/*_small.yaml) with `stemsep fit`, one subprocess each, on the same data, segment,
batch, optimizer and schedule -- only `model.net` (and, by default, the peak learning rate) differ
-- for the same CPU-time budget of the training process, then validates once on the corpus's
test songs and writes a markdown table of per-source validation nSDR and parameter counts.

    OMP_NUM_THREADS=1 python benchmarks/equal_budget.py --cpu-budget 150 --jobs 2 \
        --out runs/equal_budget/table.md

Setup (configs/setups/synthetic_htdemucs_small.yaml with recipes/quickstart.yaml's data keys):
the synthetic corpus (~/.cache/stemsep/quickstart, generated on first use), 1 s segments,
batch 4, demucs' augmentations, L1 waveform loss, Adam; one epoch long enough never to end,
stopped by benchmarks/cpu_budget.py's CPUBudget callback once the training process has used
--cpu-budget CPU seconds (user + system, all threads, from the first training step's start; the
data-loading worker process is not counted). The schedule is on CPU time, not steps
(OneCycleLR needs a step count, which differs per model at equal CPU): linear warm-up to the
peak lr over the first 20 % of the budget, cosine to zero at its end. Torch uses one thread
(OMP_NUM_THREADS=1, torch.set_num_threads(1) via the environment), so CPU time ~ work even on a
shared machine. Peak lr: --lr family (default) uses each family's usual value: HT Demucs 3e-3
(recipes/quickstart.yaml, tuned for this model on this corpus), BS-/Mel-Band RoFormer 5e-4
(recipes/bs_roformer.yaml), SCNet 5e-4 (the paper, recipes/scnet.yaml), HS-TasNet 3e-4 (the
reference implementation's documented default, hs-tasnet 0.3.4's Trainer); --lr 0.003 gives every
model the same value. --checkpoint keeps each run's final weights (run_dir/checkpoints/*.ckpt) for
later evaluation (benchmarks/equal_budget_stream.py streams them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # name: (model config, family's usual peak lr)
    "HT Demucs small": ("configs/model/htdemucs_small.yaml", 3e-3),
    "BS-RoFormer small": ("configs/model/bs_roformer_small.yaml", 5e-4),
    "Mel-Band RoFormer small": ("configs/model/mel_band_roformer_small.yaml", 5e-4),
    "SCNet small": ("configs/model/scnet_small.yaml", 5e-4),
    "HS-TasNet small": ("configs/model/hstasnet_small.yaml", 3e-4),
}
DEFAULT_MODELS = [name for name in MODELS if name != "HS-TasNet small"]  # the families of docs/models.md's table
SOURCES = ["drums", "bass", "other", "vocals"]


def fit_command(config: str, lr: float, budget: float, run_dir: Path, report: Path, segment: float,
                checkpoint: bool = False) -> list[str]:
    stemsep = str(Path(sys.executable).parent / "stemsep")
    return [
        stemsep, "fit", "--config", "configs/setups/synthetic_htdemucs_small.yaml",
        "--model.net", config,
        "--model.net.init_args.segment", str(segment),
        "--data.init_args.segment", str(segment),
        "--data.init_args.epoch_batches", "1000000",
        "--model.optimizer.init_args.lr", str(lr),
        "--trainer.max_epochs", "1",
        "--trainer.enable_checkpointing", str(checkpoint).lower(),
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.callbacks+=cpu_budget.CPUBudget",
        "--trainer.callbacks.budget", str(budget),
        "--trainer.callbacks.report", str(report),
    ]


def run_one(name: str, config: str, lr: float, args) -> dict:
    slug = name.lower().replace(" ", "_").replace("-", "_")
    run_dir = Path(args.runs) / slug
    run_dir.mkdir(parents=True, exist_ok=True)
    report = run_dir / "result.json"
    report.unlink(missing_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")])))
    cmd = fit_command(config, lr, args.cpu_budget, run_dir, report, args.segment, getattr(args, "checkpoint", False))
    start = time.monotonic()
    with open(run_dir / "fit.log", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.monotonic() - start
    if proc.returncode != 0 or not report.exists():
        tail = (run_dir / "fit.log").read_text().strip().splitlines()[-5:]
        print(f"{name}: FAILED (exit {proc.returncode}); {run_dir / 'fit.log'}:\n  " + "\n  ".join(tail), flush=True)
        return {"name": name, "error": f"exit {proc.returncode}: {tail[-1] if tail else ''}", "lr": lr}
    result = json.loads(report.read_text())
    result.update(name=name, lr=lr, wall_seconds=round(wall, 1))
    print(f"{name}: {result['steps']} steps in {result['train_cpu_seconds']:.0f} CPU s ({wall:.0f} s wall), "
          f"{result['parameters']:,} params, nSDR " +
          "  ".join(f"{s} {result['nsdr'][s]:.2f}" for s in SOURCES) + f"  mean {result['nsdr_mean']:.2f}", flush=True)
    return result


def table(results: list[dict]) -> str:
    lines = ["| model | parameters | peak lr | steps | train CPU s | " + " | ".join(SOURCES) + " | mean |",
             "|---|---:|---:|---:|---:|" + "---:|" * (len(SOURCES) + 1)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | | {r['lr']:g} | failed: {r['error']} |" + " |" * (len(SOURCES) + 2))
            continue
        lines.append(f"| {r['name']} | {r['parameters']:,} | {r['lr']:g} | {r['steps']} | {r['train_cpu_seconds']:.0f} | "
                     + " | ".join(f"{r['nsdr'][s]:.2f}" for s in SOURCES) + f" | {r['nsdr_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-budget", type=float, default=150.0, help="training CPU seconds per model (default 150)")
    parser.add_argument("--lr", default="family", help="'family' (each family's usual peak lr) or one value for all")
    parser.add_argument("--segment", type=float, default=1.0, help="training segment in seconds (default 1.0)")
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once (CPU budgets are per process)")
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS,
                        help="subset of: " + ", ".join(MODELS) + " (default: all but HS-TasNet, docs/models.md's table)")
    parser.add_argument("--checkpoint", action="store_true", help="keep each run's final checkpoint under its run dir")
    parser.add_argument("--runs", default="runs/equal_budget", help="run directories (logs, result.json)")
    parser.add_argument("--out", default=None, help="write the markdown table here too")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    lr_of = {m: MODELS[m][1] if args.lr == "family" else float(args.lr) for m in args.models}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda m: run_one(m, MODELS[m][0], lr_of[m], args), args.models))
    text = (f"CPU-time budget {args.cpu_budget:g} s of training per model (process CPU, 1 thread), "
            f"{args.segment:g} s segments, batch 4; validation nSDR (dB) on the 3 test songs.\n\n" + table(results))
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
