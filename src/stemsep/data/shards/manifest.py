"""A split's manifest (written by ``stemsep shard``) and the shard URLs that go with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from stemsep.data.shards.codec import decode_flac, flac_header
from stemsep.data.shards.shard import MANIFEST_FORMAT, MANIFEST_VERSION
from stemsep.data.shards.tarstream import expand_urls, read_json, sibling_url
from stemsep.errors import BadAudioError, BadDataError
from stemsep.io.remote import Retry


@dataclass
class Manifest:
    """Parsed ``<split>.json``: ``shards`` (name -> entry) and ``songs`` in shard order."""

    url: str
    samplerate: int
    channels: int
    sources: list[str]
    shards: dict[str, dict[str, Any]]
    songs: list[dict[str, Any]]
    song_by_name: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)

    @classmethod
    def load(cls, url: str, retry: Retry | None = None) -> Manifest:
        data = read_json(url, retry)
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise BadDataError(f"{url}: not a stemsep shard manifest (written by `stemsep shard`)")
        if data.get("version") != MANIFEST_VERSION:
            raise BadDataError(f"{url}: manifest version {data.get('version')} is not supported "
                               f"(expected {MANIFEST_VERSION})")
        if not data.get("complete"):
            raise BadDataError(f"{url}: manifest is incomplete (an interrupted `stemsep shard`; run it again)")
        try:
            shards = {s["name"]: s for s in data["shards"]}
            songs = list(data["songs"])
            manifest = cls(url, int(data["samplerate"]), int(data["channels"]), list(data["sources"]),
                           shards, songs, {s["name"]: s for s in songs})
        except (KeyError, TypeError, ValueError) as err:
            raise BadDataError(f"{url}: malformed manifest (missing or bad field {err})") from None
        return manifest

    def shard_urls(self, shards: str | list[str] | None = None) -> list[tuple[str, str]]:
        """``(url, shard name)`` pairs: the manifest's shards beside it, or the given URLs.

        Each given URL must name one of the manifest's shards (its file name, or for ``pipe:``
        commands a shard name somewhere in the command), else it is an error naming it.
        """
        if shards is None:
            return [(sibling_url(self.url, name), name) for name in self.shards]
        pairs = []
        for url in expand_urls(shards):
            base = url.rstrip("/").rsplit("/", 1)[-1]
            name = base if base in self.shards else next((n for n in self.shards if n in url), None)
            if name is None:
                raise BadDataError(f"{url}: shard is missing from the manifest {self.url}")
            pairs.append((url, name))
        return pairs


REST = "_rest"  # hidden output: the stored stems no source uses, so the mixture is the full mix
GROUP_REST = "rest"  # in stem_groups / a mapping: every stored stem no other source names


def resolve_sources(manifest: Manifest, sources: list[str] | dict[str, list[str]] | None, *,
                    stem_groups: dict[str, list[str]] | None = None, full_mix: bool = True) -> dict[str, list[str]]:
    """Output source -> shard stems summed into it: :func:`resolve_stems` over the manifest's stems."""
    return resolve_stems(list(manifest.sources), sources, stem_groups=stem_groups, full_mix=full_mix,
                         where=manifest.url)


def resolve_stems(stored: list[str], sources: list[str] | dict[str, list[str]] | None, *,
                  stem_groups: dict[str, list[str]] | None = None, full_mix: bool = True, where: str = "data",
                  holder: str = "the shards") -> dict[str, list[str]]:
    """Output source -> stored stems summed into it (a partition of the stems it uses).

    ``stored``: the stems the data holds (a manifest's, or a dataset folder's); ``where`` (a
    manifest URL, a dataset root) starts every error, ``holder`` names the data in them.

    ``None``: the stored stems as they are (or the ``stem_groups``). A list picks and orders
    sources; each name is a ``stem_groups`` group, a stored stem, or a derived target:
    ``instrumental`` (every stored stem but the vocals) or ``no_<stem>`` (every stored stem but that
    one). A mapping builds new sources, e.g. ``{vocals: [vocals], accompaniment: [drums, bass,
    other]}``. In groups and mappings, ``rest`` stands for every stored stem no other chosen source
    names (a derived target's groups: no other group). A source left without stems is an error.

    ``full_mix`` (default): the stored stems no source uses are kept, summed, as a hidden last output
    :data:`REST`, so the mixture stays the sum of *all* the song's stems (a one-stem vocal model sees
    the whole song); the loaders drop it from the targets. ``full_mix=False``: they are dropped from
    the mixture too (the mixture is the sum of the sources). A stored stem in two sources is an
    error: the mixture is the sum of the sources, each stem must count once.
    """
    stored = list(stored)
    groups = {str(k): [v] if isinstance(v, str) else list(v) for k, v in (stem_groups or {}).items()}
    if sources is None:
        mapping = dict(groups) if groups else {s: [s] for s in stored}
    elif isinstance(sources, dict):
        mapping = {str(k): [v] if isinstance(v, str) else list(v) for k, v in sources.items()}
    else:
        mapping = {str(name): _stems_of(str(name), groups, stored, where, holder) for name in sources}
    mapping = _expand_rest(mapping, stored)  # `rest`: what the other chosen sources leave
    for target, stems in mapping.items():
        for stem in stems:
            if stem not in stored:
                raise BadDataError(f"{where}: source {target!r} needs stem {stem!r}, which {holder} "
                                   f"do not have (they have {', '.join(stored)})")
    if not mapping:
        raise BadDataError(f"{where}: sources: empty selection")
    for target, stems in mapping.items():
        if not stems:
            raise BadDataError(f"{where}: source {target!r} has no stored stems ({holder} have "
                               f"{', '.join(stored)}, all used by the other sources)")
    owner: dict[str, str] = {}
    for target, stems in mapping.items():
        for stem in stems:
            if stem in owner:
                raise BadDataError(f"{where}: sources: stem {stem!r} is in both {owner[stem]!r} and {target!r}; the "
                                   "mixture is the sum of the sources, so each stored stem may be in one source only")
            owner[stem] = target
    unused = [s for s in stored if s not in owner]
    if full_mix and unused:
        mapping[REST] = unused
    return mapping


def output_names(mapping: dict[str, list[str]]) -> list[str]:
    """The sources a mapping gives the network (without the hidden :data:`REST`)."""
    return [name for name in mapping if name != REST]


def _stems_of(name: str, groups: dict[str, list[str]], stored: list[str], where: str, holder: str) -> list[str]:
    """The stored stems a source name means: a group, a stem, ``instrumental`` or ``no_<stem>``."""
    if name in groups:
        return groups[name]
    if name in stored:
        return [name]
    removed = "vocals" if name == "instrumental" else name[3:] if name.startswith("no_") else None
    if removed is not None and (removed in groups or removed in stored):
        drop = set(_expand_rest(groups, stored).get(removed, [removed]))
        return [s for s in stored if s not in drop]
    raise BadDataError(f"{where}: source {name!r} is not a stem of {holder} ({', '.join(stored)}), a stem group, "
                       "nor a derived target (instrumental, no_<stem>)")


def _expand_rest(mapping: dict[str, list[str]], stored: list[str]) -> dict[str, list[str]]:
    """``rest`` in a source's stems -> the stored stems no other source names."""
    named = {s for stems in mapping.values() for s in stems if s != GROUP_REST}
    rest = [s for s in stored if s not in named]
    return {k: [x for s in v for x in (rest if s == GROUP_REST else [s])] for k, v in mapping.items()}


def check_sample(manifest: Manifest, shard: str, key: str, sample: dict[str, bytes],
                 stems: list[str]) -> tuple[str, int]:
    """Song name and length of a tar sample, after checking it against the manifest."""
    where = f"shard {shard}, sample {key}"
    try:
        import json

        meta = json.loads(sample["json"])
        name, frames = meta["name"], int(meta["frames"])
    except (KeyError, ValueError, TypeError):
        raise BadDataError(f"{where}: missing or unreadable metadata json") from None
    if meta.get("samplerate") != manifest.samplerate:
        raise BadAudioError(f"{where} (song {name!r}): sample rate {meta.get('samplerate')} differs "
                            f"from the manifest's {manifest.samplerate}")
    for stem in stems:
        data = sample.get(f"{stem}.flac")
        if data is None:
            raise BadDataError(f"{where} (song {name!r}): stem {stem!r} is missing")
        info = flac_header(data, f"{where} (song {name!r}), stem {stem}")
        if (info.samplerate, info.channels, info.frames) != (manifest.samplerate, manifest.channels, frames):
            raise BadAudioError(f"{where} (song {name!r}), stem {stem}: {info.samplerate} Hz, "
                                f"{info.channels} ch, {info.frames} samples; expected {manifest.samplerate} Hz, "
                                f"{manifest.channels} ch, {frames} samples")
    return name, frames


def decode_rows(sample: dict[str, bytes], mapping: dict[str, list[str]], what: str,
                start: int = 0, frames: int = -1) -> list[torch.Tensor]:
    """Decode ``frames`` samples from ``start`` of the needed stems: one ``(C, T)`` per output.

    Single-stem outputs are views of the decoder's buffer (no copy); all have the same length.
    """
    decoded: dict[str, torch.Tensor] = {}
    out = []
    for stems in mapping.values():
        total = None
        for stem in stems:
            if stem not in decoded:
                decoded[stem], _ = decode_flac(sample[f"{stem}.flac"], f"{what}, stem {stem}", start, frames,
                                               contiguous=False)
            total = decoded[stem] if total is None else total + decoded[stem]
        out.append(total)
    length = min(w.shape[-1] for w in out)
    return [w[..., :length] for w in out]


def decode_sources(sample: dict[str, bytes], mapping: dict[str, list[str]], what: str,
                   start: int = 0, frames: int = -1) -> torch.Tensor:
    """Decode ``frames`` samples from ``start`` of the needed stems into ``(S, C, T)`` outputs."""
    return torch.stack(decode_rows(sample, mapping, what, start, frames))
