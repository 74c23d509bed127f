"""``stemsep bag``: assemble trained models into one bag checkpoint.

    stemsep bag --models drums.ckpt bass.ckpt other.ckpt vocals.ckpt --per-source -o ft.ckpt
    stemsep bag --models a.ckpt b.ckpt --weights 1,1,1,0 0,0,0,1 -o bag.ckpt

The output is a stemsep checkpoint of a :class:`~stemsep.models.bag.BagOfModels` whose
``init_args.models`` are the members' own network configs, so
:func:`~stemsep.checkpoint.load_separator` rebuilds it without pickled code: ``stemsep separate
--model bag.ckpt`` takes it as is, and ``stemsep test`` evaluates it through
:class:`~stemsep.models.from_checkpoint.FromCheckpoint`. ``--per-source``: model ``i`` supplies
source ``i`` alone (the per-source fine-tuned models of the paper, in source order);
``--weights``: one comma-separated list of per-source weights per model; neither: plain average.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .checkpoint import load_network, save_checkpoint
from .errors import StemsepError
from .models.bag import BagOfModels
from .separate import check_same_kind, parse_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", required=True, type=Path, metavar="CKPT",
                        help="stemsep checkpoints of the members (same sources, sample rate and channels)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--per-source", action="store_true",
                      help="model i supplies source i (as many models as sources, in source order)")
    mode.add_argument("--weights", nargs="+", metavar="W,W,...",
                      help="per-source weights of each model (one comma-separated list per model)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.ckpt", help="bag checkpoint")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.ckpt if it exists")


def load_member(path: Path) -> tuple[dict, torch.nn.Module, dict]:
    """``(network config, network with its weights, hyperparameters)`` of one checkpoint."""
    net, ckpt = load_network(path)
    hparams = ckpt.get("hyper_parameters") or {}
    config = hparams["net"]
    return {"class_path": config["class_path"], "init_args": dict(config.get("init_args") or {})}, net, hparams


def per_source_weights(paths: list[Path], sources: list[str], hparams: list[dict]) -> list[list[float]]:
    """One-hot rows: model ``i`` for source ``i``; warns when a member was fine-tuned on another source."""
    if len(paths) != len(sources):
        raise StemsepError(f"--per-source: {len(paths)} model(s) for {len(sources)} sources {sources}; "
                           "give one model per source, in source order")
    for index, (path, params) in enumerate(zip(paths, hparams, strict=True)):
        trained = params.get("source_weights")
        if isinstance(trained, (list, tuple)) and len(trained) == len(sources) and max(trained) > 0:
            best = max(range(len(sources)), key=lambda s: trained[s])
            if best != index and sum(1 for w in trained if w > 0) == 1:
                print(f"stemsep: warning: {path} was fine-tuned on {sources[best]!r} but supplies "
                      f"{sources[index]!r} in this bag", file=sys.stderr)
    return [[1.0 if s == i else 0.0 for s in range(len(sources))] for i in range(len(sources))]


def build_bag(paths: list[Path], *, per_source: bool = False,
              weights: list[str] | None = None) -> tuple[BagOfModels, dict]:
    """The bag and its network config (members' configs nested, weights explicit)."""
    members = [load_member(path) for path in paths]
    check_same_kind(paths, [net for _, net, _ in members])
    sources = list(members[0][1].sources)
    if per_source:
        rows = per_source_weights(paths, sources, [hparams for _, _, hparams in members])
    else:
        rows = parse_weights(weights, len(paths), len(sources)) or [[1.0] * len(sources) for _ in paths]
    bag = BagOfModels([net for _, net, _ in members], weights=rows)
    config = {"class_path": f"{BagOfModels.__module__}.{BagOfModels.__qualname__}",
              "init_args": {"models": [config for config, _, _ in members], "weights": rows}}
    return bag, config


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.force:
        raise StemsepError(f"{out}: already exists (use --force to overwrite)")
    bag, config = build_bag(list(args.models), per_source=args.per_source, weights=args.weights)
    save_checkpoint(out, bag, config, {"bag_members": [str(p) for p in args.models]})
    table = "; ".join(f"{path.name}: " + ",".join(f"{w:g}" for w in row)
                      for path, row in zip(args.models, bag.weights, strict=True))
    print(f"bag of {len(args.models)} model(s) -> {out} (sources {bag.sources}; weights {table})")
    return 0

