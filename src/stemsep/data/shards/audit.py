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
by ``StemDataModule(keep_list=...)``. :func:`audit_shards` is the command as a library function.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stemsep.contract import check_network
from stemsep.data.corpus.activity import activity_db
from stemsep.data.shards.manifest import Manifest, check_sample, decode_sources
from stemsep.data.shards.tarstream import iter_shard
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


@dataclass
class AuditResult:
    """What :func:`audit_shards` found: ``result`` is the keep-list written to ``out``."""

    result: dict[str, Any]  # {"manifest", "keep", "drop": {song: reason}, "bleed": {song: P}, "settings"}
    songs: list[str]  # every song of the manifest, in order
    sources: list[str]
    out: Path

    @property
    def keep(self) -> list[str]:
        return self.result["keep"]

    @property
    def drop(self) -> dict[str, str]:
        return self.result["drop"]

    def table(self) -> str:
        """One line per song: kept or not, the diagonal P_ii of its bleed matrix, the reason."""
        drop, scores = self.drop, self.result["bleed"]
        width = max([len(name) for name in self.songs] + [4])
        lines = [f"{'song':<{width}}  {'keep':<4}  {'P_ii (' + ','.join(self.sources) + ')':<28}  reason"]
        for name in self.songs:
            diag = ",".join(f"{row[i]:.2f}" for i, row in enumerate(scores[name])) if name in scores else "-"
            lines.append(f"{name:<{width}}  {'no' if name in drop else 'yes':<4}  {diag:<28}  {drop.get(name, '')}")
        return "\n".join(lines)


def audit_shards(shards: str | os.PathLike, out: str | os.PathLike, *, shard_urls: str | Sequence[str] | None = None,
                 model: str | os.PathLike | None = None, silence_db: float = -40.0, silent_fraction: float = 0.5,
                 threshold_db: float = -10.0, own_min: float = 0.7, other_max: float = 0.3,
                 segment: float | None = None) -> AuditResult:
    """``stemsep audit``: write the keep-list ``out`` of the split whose manifest is ``shards``.

    Songs with a stem below ``silence_db`` in more than ``silent_fraction`` of its frames are
    dropped; with ``model`` (a separator checkpoint) also songs whose stems bleed
    (P_ii <= ``own_min`` or some P_ij >= ``other_max``, V(y) - V(x) > ``threshold_db`` counting as
    a hit; ``segment``: the model's chunk length in seconds). ``shard_urls`` default: beside the
    manifest.
    """
    manifest = Manifest.load(_text(shards))
    drop: dict[str, str] = {}
    scores: dict[str, list[list[float]]] = {}
    for record in manifest.songs:
        reason = silence_reason(record, silence_db, silent_fraction)
        if reason:
            drop[record["name"]] = reason
    if model:
        from stemsep.io.checkpoint import load_separator

        net = load_separator(model).eval()
        check_network(net, origin=str(model))
        model_sources = list(net.sources)
        missing = [s for s in manifest.sources if s not in model_sources]
        if missing:
            raise BadDataError(f"{model}: model has no source {missing[0]!r} of the shards")
        mapping = {s: [s] for s in manifest.sources}
        order = [model_sources.index(s) for s in manifest.sources]
        for url, name in manifest.shard_urls(shard_urls if shard_urls is None or isinstance(shard_urls, str) else list(shard_urls)):
            for key, sample in iter_shard(url, name, manifest.shards[name]["sha256"]):
                song, _ = check_sample(manifest, name, key, sample, manifest.sources)
                stems = decode_sources(sample, mapping, f"shard {name}, sample {key} (song {song!r})")
                p = bleed_matrix(net, stems, manifest.samplerate, threshold_db=threshold_db,
                                 silence_db=silence_db, segment=segment)[:, order]
                scores[song] = [[round(float(v), 3) for v in row] for row in p]
                own = p.diagonal()
                others = p.masked_fill(torch.eye(len(order), dtype=torch.bool), 0)
                if song not in drop:
                    if (own <= own_min).any():
                        i = int(own.argmin())
                        drop[song] = f"{manifest.sources[i]} comes back in its own source in only {own[i]:.0%} of frames"
                    elif (others >= other_max).any():
                        i, j = divmod(int(others.argmax()), len(order))
                        drop[song] = (f"{manifest.sources[i]} leaks into {manifest.sources[j]} in "
                                      f"{others[i, j]:.0%} of frames")
    names = [r["name"] for r in manifest.songs]
    keep = [name for name in names if name not in drop]
    result = {"manifest": _text(shards), "keep": keep, "drop": drop, "bleed": scores,
              "settings": {"silence_db": silence_db, "silent_fraction": silent_fraction, "threshold_db": threshold_db,
                           "own_min": own_min, "other_max": other_max,
                           "model": _text(model) if model is not None else None}}
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    return AuditResult(result=result, songs=names, sources=list(manifest.sources), out=Path(out))


def _text(path: str | os.PathLike) -> str:
    return path if isinstance(path, str) else os.fspath(path)
