"""``stemsep audit``: find songs to leave out of training — silent stems and bleeding stems.

Activity of a signal z: V(z) = 10·log10(AvgPool(z², 1 s)) (dB per 1-second frame).

- Silence: a song is dropped when one of its stems is below ``--silence-db`` (−40 dB) in more
  than ``--silent-fraction`` (50 %) of its frames. This uses the manifest's stored profiles,
  so no audio is decoded.
- Bleeding (with ``--model``): each stem x_i alone is separated by the model into y_ij;
  P_ij = fraction of frames (where x_i is active) with V(y_ij) − V(x_i) > −10 dB. A clean
  stem comes back in its own source (P_ii > 70 %) and hardly anywhere else (P_ij < 30 %);
  otherwise the stem likely bleeds other instruments and the song is dropped.

The keep-list ``{"keep": [...], "drop": {song: reason}, ...}`` is written atomically and read
by ``StemDataModule(keep_list=...)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stemsep.data.activity import activity_db
from stemsep.data.manifest import Manifest, check_sample, decode_sources
from stemsep.data.tarstream import iter_shard
from stemsep.errors import BadDataError
from stemsep.io.files import atomic_path


def silence_reason(record: dict, silence_db: float, silent_fraction: float) -> str | None:
    """Why a song's stored activity profile makes it unusable, or ``None``."""
    for source, profile in record["activity"].items():
        if not profile:
            continue
        silent = sum(v < silence_db for v in profile) / len(profile)
        if silent > silent_fraction:
            return f"{source} silent in {silent:.0%} of frames"
    return None


def bleed_matrix(net: torch.nn.Module, stems: torch.Tensor, samplerate: int, *, threshold_db: float = -10.0,
                 silence_db: float = -40.0, segment: float | None = None) -> torch.Tensor:
    """P (S, S'): P[i, j] = fraction of x_i's active frames where V(y_ij) − V(x_i) > threshold."""
    from stemsep.inference.chunked import apply_model

    estimates = apply_model(net, stems, segment=segment)  # each stem alone as the mix: (S, S', C, T)
    v_in = activity_db(stems, samplerate)  # (S, F)
    v_out = activity_db(estimates, samplerate)  # (S, S', F)
    active = (v_in > silence_db).float()[:, None]  # only frames where the stem plays count
    hits = ((v_out - v_in[:, None]) > threshold_db).float() * active
    return hits.sum(-1) / active.sum(-1).clamp_min(1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="manifest of the split to audit (<split>.json)")
    parser.add_argument("--shard-urls", nargs="+", default=None, help="shard URLs (default: beside the manifest)")
    parser.add_argument("--model", default=None, help="separator checkpoint for the bleeding test")
    parser.add_argument("--out", required=True, help="keep-list JSON to write")
    parser.add_argument("--silence-db", type=float, default=-40.0, help="frames below this are silent")
    parser.add_argument("--silent-fraction", type=float, default=0.5, help="drop when more frames are silent")
    parser.add_argument("--threshold-db", type=float, default=-10.0, help="V(y) - V(x) above this counts")
    parser.add_argument("--own-min", type=float, default=0.7, help="keep when P_ii exceeds this ...")
    parser.add_argument("--other-max", type=float, default=0.3, help="... and every P_ij (i != j) is below this")
    parser.add_argument("--segment", type=float, default=None, help="model chunk length in seconds")


def run(args: argparse.Namespace) -> int:
    manifest = Manifest.load(args.shards)
    drop: dict[str, str] = {}
    scores: dict[str, list[list[float]]] = {}
    for record in manifest.songs:
        reason = silence_reason(record, args.silence_db, args.silent_fraction)
        if reason:
            drop[record["name"]] = reason
    if args.model:
        from stemsep.io.checkpoint import load_separator

        net = load_separator(args.model).eval()
        model_sources = list(getattr(net, "sources", manifest.sources))
        missing = [s for s in manifest.sources if s not in model_sources]
        if missing:
            raise BadDataError(f"{args.model}: model has no source {missing[0]!r} of the shards")
        mapping = {s: [s] for s in manifest.sources}
        order = [model_sources.index(s) for s in manifest.sources]
        for url, name in manifest.shard_urls(args.shard_urls):
            for key, sample in iter_shard(url, name, manifest.shards[name]["sha256"]):
                song, _ = check_sample(manifest, name, key, sample, manifest.sources)
                stems = decode_sources(sample, mapping, f"shard {name}, sample {key} (song {song!r})")
                p = bleed_matrix(net, stems, manifest.samplerate, threshold_db=args.threshold_db,
                                 silence_db=args.silence_db, segment=args.segment)[:, order]
                scores[song] = [[round(float(v), 3) for v in row] for row in p]
                own = p.diagonal()
                others = p.masked_fill(torch.eye(len(order), dtype=torch.bool), 0)
                if song not in drop:
                    if (own <= args.own_min).any():
                        i = int(own.argmin())
                        drop[song] = f"{manifest.sources[i]} comes back in its own source in only {own[i]:.0%} of frames"
                    elif (others >= args.other_max).any():
                        i, j = divmod(int(others.argmax()), len(order))
                        drop[song] = (f"{manifest.sources[i]} leaks into {manifest.sources[j]} in "
                                      f"{others[i, j]:.0%} of frames")
    keep = [r["name"] for r in manifest.songs if r["name"] not in drop]
    _print_table(manifest, drop, scores)
    result = {"manifest": args.shards, "keep": keep, "drop": drop, "bleed": scores,
              "settings": {k: getattr(args, k) for k in ("silence_db", "silent_fraction", "threshold_db",
                                                          "own_min", "other_max", "model")}}
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    print(f"kept {len(keep)} of {len(manifest.songs)} songs -> {args.out}")
    return 0


def _print_table(manifest: Manifest, drop: dict[str, str], scores: dict[str, list[list[float]]]) -> None:
    width = max([len(r["name"]) for r in manifest.songs] + [4])
    print(f"{'song':<{width}}  {'keep':<4}  {'P_ii (' + ','.join(manifest.sources) + ')':<28}  reason")
    for record in manifest.songs:
        name = record["name"]
        diag = ",".join(f"{row[i]:.2f}" for i, row in enumerate(scores[name])) if name in scores else "-"
        print(f"{name:<{width}}  {'no' if name in drop else 'yes':<4}  {diag:<28}  {drop.get(name, '')}")
