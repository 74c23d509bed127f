"""Aggregating MUSHRA ratings (the JSON files the test page downloads) as ITU-R BS.1534-3 says.

    stemsep listen --collect ratings/*.json -o results/

Post-screening (BS.1534-3, 4.1.2): a listener who rates the hidden reference below 90 in more than
15 % of their trials is excluded. Then per stem and condition (hidden reference, each system, the
anchor), and over all stems ("all"), the mean of the kept listeners' ratings (every listener x
track one rating) and its 95 % confidence interval from Student's t distribution,
``mean +- t(0.975, n-1) * sd / sqrt(n)`` (sd with ``n - 1``; no interval for one rating).
Writes ``mushra.csv``, ``mushra.md`` and the figure ``mushra.png`` (matplotlib).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from stemsep.errors import BadDataError
from stemsep.evaluation.mushra_page import RATINGS_FORMAT
from stemsep.evaluation.report import require_matplotlib
from stemsep.io.files import atomic_path, ensure_writable_dir

REFERENCE_THRESHOLD = 90.0  # the hidden reference rated below this ...
EXCLUDE_SHARE = 0.15  # ... in more than this share of a listener's trials excludes the listener
ALL = "all"


@dataclass
class Listener:
    """One ratings file: who, and per trial ``{condition: rating}`` with the trial's stem."""

    name: str
    path: Path
    test: str
    systems: list[str]
    trials: list[dict[str, Any]]

    def reference_misses(self) -> int:
        """Trials in which the hidden reference got less than :data:`REFERENCE_THRESHOLD`."""
        return sum(t["ratings"]["reference"] < REFERENCE_THRESHOLD for t in self.trials)

    def excluded(self) -> bool:
        return self.reference_misses() > EXCLUDE_SHARE * len(self.trials)


@dataclass
class Row:
    """Mean rating of one condition on one stem (or ``all``) over ``n`` ratings, with its 95 % CI."""

    stem: str
    condition: str
    n: int
    mean: float
    ci95: float  # half-width; NaN for a single rating

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


@dataclass
class MushraResults:
    """Rows per stem and condition, the listeners kept and excluded, and the files written."""

    rows: list[Row]
    kept: list[str]
    excluded: dict[str, str]  # listener -> why
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        """The Markdown table (also ``mushra.md``)."""
        lines = ["| stem | condition | ratings | mean | 95% CI |", "| --- | --- | ---: | ---: | ---: |"]
        for row in self.rows:
            interval = "&ndash;" if math.isnan(row.ci95) else f"{row.low:.1f} .. {row.high:.1f}"
            lines.append(f"| {row.stem} | {row.condition} | {row.n} | {row.mean:.1f} | {interval} |")
        kept = ", ".join(self.kept) or "none"
        gone = "; ".join(f"{name} ({why})" for name, why in self.excluded.items()) or "none"
        return "\n".join(lines) + f"\n\nListeners kept: {kept}. Excluded: {gone}.\n"


def _bad(path: Path, problem: str) -> BadDataError:
    return BadDataError(f"{path}: {problem}")


def _check_trial(path: Path, trial: Any, systems: list[str]) -> dict[str, Any]:
    if not (isinstance(trial, dict) and isinstance(trial.get("stem"), str) and isinstance(trial.get("ratings"), dict)):
        raise _bad(path, "a trial without stem and ratings")
    expected = {"reference", "anchor", *systems}
    ratings = trial["ratings"]
    if set(ratings) != expected:
        raise _bad(path, f"trial {trial.get('id')!r} rates {sorted(ratings)}, expected {sorted(expected)}")
    for name, value in ratings.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise _bad(path, f"trial {trial.get('id')!r}: rating of {name!r} is {value!r}, not a number in 0..100")
    return trial


def read_ratings(path: str | os.PathLike) -> Listener:
    """One listener's ratings file, checked (format, conditions, values in 0..100)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _bad(path, "ratings file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _bad(path, f"not a readable ratings file ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or data.get("format") != RATINGS_FORMAT:
        raise _bad(path, f"not a MUSHRA ratings file (expected \"format\": \"{RATINGS_FORMAT}\")")
    systems, trials = data.get("systems"), data.get("trials")
    if not (isinstance(systems, list) and all(isinstance(s, str) for s in systems) and isinstance(trials, list)):
        raise _bad(path, "ratings file without its systems and trials lists")
    if not trials:
        raise _bad(path, f"listener {data.get('listener')!r} rated no trial")
    return Listener(name=str(data.get("listener")), path=path, test=str(data.get("test")), systems=systems,
                    trials=[_check_trial(path, t, systems) for t in trials])


def _check_same_test(listeners: list[Listener]) -> None:
    first, seen = listeners[0], {}
    for listener in listeners:
        if listener.test != first.test or listener.systems != first.systems:
            raise _bad(listener.path, f"ratings of test {listener.test!r} (systems {listener.systems}), but "
                                      f"{first.path} is of test {first.test!r} (systems {first.systems})")
        if listener.name in seen:
            raise _bad(listener.path, f"listener {listener.name!r} also rated in {seen[listener.name]}; keep one file")
        seen[listener.name] = listener.path


def confidence_interval(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, half-width)`` of the 95 % confidence interval (Student's t, ``n - 1`` degrees)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), math.nan
    return float(x.mean()), float(scipy.stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def aggregate(listeners: list[Listener]) -> list[Row]:
    """Rows per stem (in order of appearance, then ``all``) and condition (reference, systems, anchor)."""
    conditions = ["reference", *listeners[0].systems, "anchor"] if listeners else []
    stems: dict[str, None] = {}
    for listener in listeners:
        stems.update({t["stem"]: None for t in listener.trials})
    rows = []
    for stem in [*stems, ALL]:
        for condition in conditions:
            values = [t["ratings"][condition] for listener in listeners for t in listener.trials
                      if stem == ALL or t["stem"] == stem]
            rows.append(Row(stem, condition, len(values), *confidence_interval(values)))
    return rows


def collect_ratings(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> MushraResults:
    """Screen and aggregate the ratings files into ``out`` (default: the first file's folder):
    ``mushra.csv``, ``mushra.md``, ``mushra.png``."""
    if not paths:
        raise BadDataError("--collect: no ratings files given")
    require_matplotlib()
    listeners = [read_ratings(p) for p in paths]
    _check_same_test(listeners)
    kept = [listener for listener in listeners if not listener.excluded()]
    excluded = {listener.name: f"hidden reference below {REFERENCE_THRESHOLD:g} in {listener.reference_misses()} "
                               f"of {len(listener.trials)} trials" for listener in listeners if listener.excluded()}
    if not kept:
        raise BadDataError(f"{paths[0]}: every listener fails the post-screening (hidden reference below "
                           f"{REFERENCE_THRESHOLD:g} in more than {EXCLUDE_SHARE:.0%} of the trials)")
    results = MushraResults(aggregate(kept), [listener.name for listener in kept], excluded)
    out = ensure_writable_dir(Path(paths[0]).parent if out is None else out)
    results.files = [_write_text(out / "mushra.csv", _csv(results)), _write_text(out / "mushra.md", results.table()),
                     _figure(results, out / "mushra.png")]
    return results


def _write_text(target: Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def _csv(results: MushraResults) -> str:
    lines = ["stem,condition,ratings,mean,ci95,low,high"]
    for row in results.rows:
        lines.append(f"{row.stem},{row.condition},{row.n},{row.mean:.4f},{row.ci95:.4f},{row.low:.4f},{row.high:.4f}")
    return "\n".join(lines) + "\n"


def _figure(results: MushraResults, target: Path) -> Path:
    """Per stem (a panel each, and ``all``), each condition's mean with its 95 % interval."""
    from matplotlib.figure import Figure

    stems = list(dict.fromkeys(row.stem for row in results.rows))
    figure = Figure(figsize=(2.2 + 2.4 * len(stems), 3.8), layout="constrained")
    axes = figure.subplots(1, len(stems), sharey=True, squeeze=False)[0]
    for ax, stem in zip(axes, stems):
        rows = [row for row in results.rows if row.stem == stem]
        errors = [0.0 if math.isnan(row.ci95) else row.ci95 for row in rows]
        ax.errorbar(range(len(rows)), [row.mean for row in rows], yerr=errors, fmt="o", capsize=4)
        ax.set_xticks(range(len(rows)), [row.condition for row in rows], rotation=45, ha="right")
        ax.set_ylim(-3, 105)  # an interval may reach past 0 or 100
        ax.set_title(stem)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("MUSHRA score (mean, 95% CI)")
    figure.suptitle(f"MUSHRA: {len(results.kept)} listener(s) kept, {len(results.excluded)} excluded", fontsize=11)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return target
