"""A bag of separation networks whose per-source outputs are averaged with weights.

Demucs' best results come from bags: several models (often one fine-tuned per source) whose
estimates are mixed per source, e.g. ``weights=[[1, 0, 0, 0], [0, 1, 0, 0], ...]`` takes each
source from its specialist. :func:`stemsep.inference.apply_model` applies each member with its own
segment length and shifts (as demucs does); ``forward`` is the plain one-shot version.

:func:`make_bag` is ``stemsep bag``: it assembles trained checkpoints into one bag checkpoint whose
``init_args.models`` are the members' own network configs, so
:func:`~stemsep.io.checkpoint.load_separator` rebuilds it without pickled code (``stemsep separate
--model bag.ckpt`` takes it as is; ``stemsep test`` evaluates it through
:class:`~stemsep.io.FromCheckpoint`). ``per_source``: model ``i`` supplies source ``i`` alone (the
per-source fine-tuned models of the paper, in source order); ``weights``: per-source weights of each
model; neither: plain average.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from stemsep.contract import check_same_kind, segment_of
from stemsep.errors import StemsepError
from stemsep.inference.ensemble import load_member, make_ensemble
from stemsep.io.checkpoint import save_checkpoint


class BagOfModels(nn.Module):
    """Networks with the same sources, sample rate and channels, mixed with ``weights[model][source]``."""

    def __init__(self, models: list[nn.Module], weights: list[list[float]] | None = None,
                 segment: float | Fraction | None = None):
        super().__init__()
        if not models:
            raise ValueError("a bag needs at least one model")
        first = models[0]
        check_same_kind(models)
        self.models = nn.ModuleList(models)
        self.sources = list(first.sources)
        self.samplerate = int(first.samplerate)
        self.audio_channels = int(first.audio_channels)
        if weights is None:
            weights = [[1.0] * len(self.sources) for _ in models]
        if len(weights) != len(models) or any(len(row) != len(self.sources) for row in weights):
            raise ValueError(f"weights must be {len(models)} models x {len(self.sources)} sources")
        if any(sum(row[s] for row in weights) <= 0 for s in range(len(self.sources))):
            raise ValueError("every source needs a positive total weight over the models")
        self.weights = [[float(w) for w in row] for row in weights]
        segments = [segment_of(m) for m in models]
        # Segment of the bag as a whole: what every member can take (used by `forward` callers).
        self.segment = segment if segment is not None else (
            min(s for s in segments if s is not None) if any(s is not None for s in segments) else None)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, S, C, T)``: weighted per-source mean of every member's output."""
        weights = torch.tensor(self.weights, dtype=mix.dtype, device=mix.device)
        out = None
        for model, model_weights in zip(self.models, weights, strict=True):
            part = model(mix) * model_weights[:, None, None]
            out = part if out is None else out + part
        return out / weights.sum(0)[:, None, None]


def per_source_weights(paths: list[Path], sources: list[str], hparams: list[dict]) -> list[list[float]]:
    """One-hot rows: model ``i`` for source ``i``; warns when a member was fine-tuned on another source."""
    if len(paths) != len(sources):
        raise StemsepError(f"per_source: {len(paths)} model(s) for {len(sources)} sources {sources}; "
                           "give one model per source, in source order")
    for index, (path, params) in enumerate(zip(paths, hparams, strict=True)):
        trained = params.get("source_weights")
        if isinstance(trained, (list, tuple)) and len(trained) == len(sources) and max(trained) > 0:
            best = max(range(len(sources)), key=lambda s: trained[s])
            if best != index and sum(1 for w in trained if w > 0) == 1:
                print(f"stemsep: warning: {path} was fine-tuned on {sources[best]!r} but supplies "
                      f"{sources[index]!r} in this bag", file=sys.stderr)
    return [[1.0 if s == i else 0.0 for s in range(len(sources))] for i in range(len(sources))]


def build_bag(paths: Sequence[Path], *, per_source: bool = False,
              weights: Sequence[Sequence[float]] | None = None) -> tuple[BagOfModels, dict]:
    """The bag and its network config (members' configs nested, weights explicit)."""
    members = [load_member(path) for path in paths]
    check_same_kind([net for _, net, _ in members], [str(p) for p in paths])
    sources = list(members[0][1].sources)
    if per_source:
        rows = per_source_weights(paths, sources, [hparams for _, _, hparams in members])
    else:
        rows = check_weights(weights, len(paths), len(sources)) or [[1.0] * len(sources) for _ in paths]
    bag = BagOfModels([net for _, net, _ in members], weights=rows)
    config = {"class_path": f"{BagOfModels.__module__}.{BagOfModels.__qualname__}",
              "init_args": {"models": [config for config, _, _ in members], "weights": rows}}
    return bag, config


def check_weights(rows: Sequence[Sequence[float]] | None, models: int, sources: int) -> list[list[float]] | None:
    """``rows[model][source]`` as floats, checked: one row per model, one weight per source, every
    source with a positive total (one-line error otherwise); ``None`` stays ``None``."""
    if rows is None:
        return None
    if len(rows) != models:
        raise StemsepError(f"--weights: {len(rows)} list(s) given for {models} model(s); give one per --model")
    rows = [[float(w) for w in row] for row in rows]
    for row in rows:
        if len(row) != sources:
            raise StemsepError(f"--weights: {','.join(f'{w:g}' for w in row)} has {len(row)} value(s), "
                               f"the models have {sources} sources")
    if any(sum(r[s] for r in rows) <= 0 for s in range(sources)):
        raise StemsepError("--weights: every source needs a positive total weight")
    return rows


def make_bag(models: Sequence[str | Path], out: str | Path, *, per_source: bool = False,
             weights: Sequence[Sequence[float]] | None = None, force: bool = False, ensemble: str | None = None,
             pick: Sequence[str] | None = None, derive: Sequence[str] = ()) -> nn.Module:
    """``stemsep bag``: write the bag of the ``models`` checkpoints to ``out``; returns the bag. With
    ``ensemble`` (a mode of :mod:`stemsep.inference.ensemble`), models of any families combined by
    it (``weights`` one per model, ``pick``, ``derive``): :func:`~stemsep.inference.ensemble.make_ensemble`."""
    if ensemble is not None:
        if per_source:
            raise StemsepError("--per-source and --ensemble exclude each other")
        return make_ensemble(models, out, ensemble, weights=weights, pick=pick, derived=derive, force=force)
    if pick or derive:
        raise StemsepError("--pick and --derive combine models of an ensemble: add --ensemble MODE")
    paths, out = [Path(m) for m in models], Path(out)
    if per_source and weights is not None:
        raise StemsepError("per_source and weights exclude each other")
    if out.exists() and not force:
        raise StemsepError(f"{out}: already exists (use --force to overwrite)")
    bag, config = build_bag(paths, per_source=per_source, weights=weights)
    save_checkpoint(out, bag, config, {"bag_members": [str(p) for p in paths]})
    return bag
