"""benchmarks/device_check.sh, the one prepared GPU script, run as a user runs it: `bash ... --dry-run`.

Its dry run executes every step at tiny sizes on CPU so the script cannot rot between GPU sessions:
the whole dry run is slow (every benchmark imports torch and builds its networks), so the default
tests run one real step, the keep-going path (every step failing) and the argument check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "device_check.sh"
STEPS = ["separate", "train_bf16", "models", "roformers", "attention", "scnet", "stream"]


def run(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The script with ``args`` and ``env`` on top of ours (this interpreter as PYTHON, logs in tmp_path)."""
    full = {**os.environ, "PYTHON": sys.executable, "DEVICE_CHECK_LOGS": str(tmp_path / "logs"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=900,
                          cwd=tmp_path)


def table(stdout: str) -> dict[str, list[tuple[str, str]]]:
    """The final table as ``{step: [(status, figure), ...]}`` (a step's later rows have an empty status)."""
    rows: dict[str, list[tuple[str, str]]] = {}
    step = None
    lines = stdout[stdout.index("| step | status | s | figure |"):].splitlines()[2:]
    for line in lines:
        if not line.startswith("|"):
            break
        name, status, _, figure = (cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|")))
        step = name or step
        rows.setdefault(step, []).append((status or rows[step][0][0], figure))
    return rows


def test_one_step_reports_its_figures(tmp_path):
    done = run(tmp_path, "--dry-run", STEPS="separate")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = table(done.stdout)
    assert list(rows) == ["separate"]
    figures = [figure for status, figure in rows["separate"] if status == "ok"]
    assert any(figure.startswith("demucs apply_model:") for figure in figures), figures
    assert any(figure.startswith("ratio ours/demucs:") for figure in figures), figures
    assert (tmp_path / "logs" / "separate.log").is_file()


def test_failing_steps_are_reported_and_the_rest_still_run(tmp_path):
    done = run(tmp_path, PYTHON="false", QUICK="1")  # every step's interpreter fails at once
    assert done.returncode == 1
    rows = table(done.stdout)
    assert list(rows) == STEPS
    assert all(status == "FAILED (exit 1)" for values in rows.values() for status, _ in values), rows


def test_spent_budget_skips_steps(tmp_path):
    done = run(tmp_path, "--dry-run", DEVICE_CHECK_BUDGET="0", STEPS="separate,stream")
    assert done.returncode == 1
    assert table(done.stdout) == {"separate": [("SKIPPED (budget spent)", "")],
                                  "stream": [("SKIPPED (budget spent)", "")]}


def test_unknown_argument_is_one_line(tmp_path):
    done = run(tmp_path, "--dryrun")
    assert done.returncode == 2
    assert done.stderr.strip() == "device_check.sh: error: unknown argument '--dryrun' (the only one is --dry-run)"


@pytest.mark.slow
def test_dry_run_every_step_reports_a_figure(tmp_path):
    done = run(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = table(done.stdout)
    assert list(rows) == STEPS
    for step, values in rows.items():
        assert all(status == "ok" for status, _ in values), (step, values)
        assert any(any(ch.isdigit() for ch in figure) for _, figure in values), (step, values)
    # one figure line per family of the training step, and per network of the streaming step
    assert len(rows["train_bf16"]) == 6 and len(rows["stream"]) == 2
