"""The registry of released checkpoints: what each pretrained model name means, and the model cache.

``registry.yaml`` beside this module is data, not code: for each name the URL(s) of its files, how
each download is verified (the publisher's full sha256, or demucs' ``-<sha256[:8]>.th`` prefix as
torch.hub checks it, or nothing: an *unverified* entry), the family and config it converts with,
its sources, sample rate, license and the figure its authors report, each fact with its source.
``STEMSEP_REGISTRY=a.yaml:b.yaml`` adds entries (a later file's entry replaces an earlier one of the
same name; config paths relative to their file): the tests' tiny models, a lab's own releases.

The cache (``$STEMSEP_CACHE``, default ``$XDG_CACHE_HOME/stemsep/models``, else
``~/.cache/stemsep/models``) holds ``<name>/<key>.ckpt``, the converted stemsep checkpoint, and
``<key>.json``, what was fetched (URLs and sha256s); ``key`` is a digest of what the files are pinned
by, the config's bytes and the conversion (:meth:`Entry.key`), so a changed registry entry never
reuses an old conversion. Fetching and converting are :mod:`stemsep.io.pretrained`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from stemsep.errors import StemsepError
from stemsep.io.remote import is_url

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
FAMILIES = ("demucs", "msst")
CONVERSION = 1  # part of every cache key: bump when the conversion of the same files changes


@dataclass(frozen=True)
class ModelFile:
    """One file of a registry entry: its URL and the digest the publisher gives (full or prefix), if any."""

    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None

    @property
    def name(self) -> str:
        return urlparse(self.url).path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def identity(self) -> str | None:
        """What the publisher pins this file by (None: nothing, an unverified file)."""
        return self.sha256 or self.sha256_prefix

    def matches(self, digest: str) -> bool:
        """Whether ``digest`` (hex sha256) is this file's (torch.hub's rule for a prefix)."""
        return digest == self.sha256 if self.sha256 else bool(self.sha256_prefix) and \
            digest.startswith(self.sha256_prefix)


@dataclass(frozen=True)
class Entry:
    """A registry entry (see the comments of registry.yaml for each field)."""

    name: str
    family: str
    files: tuple[ModelFile, ...]
    sources: tuple[str, ...]
    samplerate: int
    arch: str
    license: str = ""
    reported: str = ""
    sdr: float | None = None
    description: str = ""
    source: str = ""
    model_type: str | None = None
    config: Path | None = None
    weights: tuple[tuple[float, ...], ...] | None = None
    segment: float | None = None
    parameters: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def verified(self) -> bool:
        return all(f.identity for f in self.files)

    def key(self, digests: Sequence[str] | None = None) -> str | None:
        """The cache key: a digest of what the files are pinned by (or, unverified, of ``digests``:
        what was fetched), the config's bytes and how they are converted; None before a fetch of an
        unverified entry."""
        ids = [f.identity for f in self.files]
        if not all(ids):
            if digests is None:
                return None
            ids = list(digests)
        config = hashlib.sha256(self.config.read_bytes()).hexdigest() if self.config else ""
        text = json.dumps([CONVERSION, self.family, ids, config, self.weights, self.segment, self.model_type])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- the registry
def registry_files() -> list[Path]:
    """The shipped registry, then the files of ``STEMSEP_REGISTRY`` (``os.pathsep``-separated)."""
    extra = [Path(p) for p in os.environ.get("STEMSEP_REGISTRY", "").split(os.pathsep) if p]
    return [REGISTRY_FILE, *extra]


def registry() -> dict[str, Entry]:
    """Every entry by name (a later registry file's entry replaces an earlier one of the same name)."""
    entries: dict[str, Entry] = {}
    for path in registry_files():
        entries.update(read_registry(path))
    return entries


def read_registry(path: Path) -> dict[str, Entry]:
    """The entries of one registry file; a one-line error naming the file and key for a malformed one."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise StemsepError(f"{path}: cannot read the model registry ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise StemsepError(f"{path}: not a YAML model registry ({' '.join(str(err).split())})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise StemsepError(f"{path}: a model registry needs a 'models:' mapping of names to entries")
    return {str(name): _entry(str(name), spec, Path(path)) for name, spec in models.items()}


def _entry(name: str, spec: Any, path: Path) -> Entry:
    where = f"{path}: models.{name}"
    if not isinstance(spec, dict):
        raise StemsepError(f"{where}: an entry is a mapping")
    missing = [k for k in ("family", "files", "sources", "samplerate", "arch") if spec.get(k) in (None, "", [])]
    if missing:
        raise StemsepError(f"{where}: missing {', '.join(missing)}")
    if spec["family"] not in FAMILIES:
        raise StemsepError(f"{where}.family: {spec['family']!r} is not one of {', '.join(FAMILIES)}")
    files = tuple(_file(f, f"{where}.files[{i}]") for i, f in enumerate(spec["files"]))
    config = path.parent / spec["config"] if spec.get("config") else None
    if spec["family"] == "msst" and (config is None or not spec.get("model_type")):
        raise StemsepError(f"{where}: an msst entry needs model_type and config")
    if config is not None and not config.is_file():
        raise StemsepError(f"{where}.config: {config} not found")
    _check_types(spec, where)
    weights = tuple(tuple(float(w) for w in row) for row in spec["weights"]) if spec.get("weights") else None
    if weights is not None and (len(weights) != len(files) or any(len(r) != len(spec["sources"]) for r in weights)):
        raise StemsepError(f"{where}.weights: one row per file, one weight per source")
    known = set(Entry.__dataclass_fields__) | {"config_source"}
    return Entry(name=name, family=spec["family"], files=files, sources=tuple(spec["sources"]),
                 samplerate=int(spec["samplerate"]), arch=str(spec["arch"]), license=str(spec.get("license", "")),
                 reported=str(spec.get("reported", "")), sdr=spec.get("sdr"),
                 description=str(spec.get("description", "")), source=str(spec.get("source", "")),
                 model_type=spec.get("model_type"), config=config, weights=weights, segment=spec.get("segment"),
                 parameters=spec.get("parameters"),
                 extra={k: v for k, v in spec.items() if k not in known} | {"config_source": spec.get("config_source")})


def _check_types(spec: dict, where: str) -> None:
    """One-line errors for values of the wrong type (a user's registry file), naming the key."""
    if not isinstance(spec["sources"], list) or not all(isinstance(x, str) for x in spec["sources"]):
        raise StemsepError(f"{where}.sources: a list of stem names, got {spec['sources']!r}")
    if isinstance(spec["samplerate"], bool) or not isinstance(spec["samplerate"], int) or spec["samplerate"] <= 0:
        raise StemsepError(f"{where}.samplerate: a whole number of Hz, got {spec['samplerate']!r}")
    for key in ("sdr", "parameters", "segment"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise StemsepError(f"{where}.{key}: a number (or nothing), got {value!r}")
    weights = spec.get("weights")
    if weights is not None and (not isinstance(weights, list) or not all(
            isinstance(row, list) and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in row)
            for row in weights)):
        raise StemsepError(f"{where}.weights: rows of numbers, got {weights!r}")


def _file(spec: Any, where: str) -> ModelFile:
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict) or not is_url(str(spec.get("url", ""))):
        raise StemsepError(f"{where}: needs url: an http(s):// (or s3://...) URL")
    file = ModelFile(str(spec["url"]), spec.get("sha256"), spec.get("sha256_prefix"))
    for digest, size in ((file.sha256, 64), (file.sha256_prefix, None)):
        if digest is not None and (not isinstance(digest, str) or not digest or (size and len(digest) != size)
                                   or any(c not in "0123456789abcdef" for c in digest)):
            raise StemsepError(f"{where}: {digest!r} is not a lowercase hex sha256{' prefix' if not size else ''}")
    return file


def entry(name: str) -> Entry:
    """The entry ``name``; a one-line error listing close names when there is none."""
    entries = registry()
    if name not in entries:
        import difflib

        close = difflib.get_close_matches(name, entries, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see `stemsep models list`)"
        raise StemsepError(f"{name}: no such model in the registry{hint}")
    return entries[name]


# ---------------------------------------------------------------------------------- the cache
def cache_dir() -> Path:
    """``$STEMSEP_CACHE``, else ``$XDG_CACHE_HOME/stemsep/models``, else ``~/.cache/stemsep/models``."""
    if os.environ.get("STEMSEP_CACHE"):
        return Path(os.environ["STEMSEP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stemsep" / "models"


def cached(item: Entry) -> Path | None:
    """The converted checkpoint of ``item`` in the cache, or None."""
    folder = cache_dir() / item.name
    key = item.key()
    if key is not None:
        path = folder / f"{key}.ckpt"
        return path if path.is_file() else None
    # unverified: the first fetch is pinned, its entry used while its key is what the registry's
    # conversion of the same files gives (a changed config or conversion is fetched again)
    for record in sorted(folder.glob("[!.]*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        path = record.with_suffix(".ckpt")
        try:
            digests = [f["sha256"] for f in json.loads(record.read_text())["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours
        if path.is_file() and item.key(digests) == record.stem:
            return path
    return None


def mirrored(url: str) -> str:
    """``url``, or ``$STEMSEP_MODEL_MIRROR/<its file name>`` when a mirror is set."""
    mirror = os.environ.get("STEMSEP_MODEL_MIRROR", "").rstrip("/")
    return f"{mirror}/{ModelFile(url).name}" if mirror else url


def model_rows() -> list[dict[str, Any]]:
    """One row per registry model for ``stemsep models list``: name, family, sources, size, SDR, cached."""
    rows = []
    for item in registry().values():
        path = cached(item)
        size = path.stat().st_size if path else (item.parameters * 4 if item.parameters else None)
        rows.append({"name": item.name, "family": item.family, "sources": list(item.sources), "bytes": size,
                     "sdr": item.sdr, "cached": path is not None, "verified": item.verified})
    return rows


def model_info(name: str) -> dict[str, Any]:
    """Everything the registry says of ``name``, with its cache state (path, provenance of the fetch)."""
    item = entry(name)
    path = cached(item)
    meta = path.with_suffix(".json") if path else None
    return {"name": item.name, "description": item.description, "family": item.family, "arch": item.arch,
            "model_type": item.model_type, "sources": list(item.sources), "samplerate": item.samplerate,
            "parameters": item.parameters, "license": item.license, "reported": item.reported, "sdr": item.sdr,
            "files": [{"url": f.url, "sha256": f.sha256, "sha256_prefix": f.sha256_prefix} for f in item.files],
            "weights": [list(r) for r in item.weights] if item.weights else None, "segment": item.segment,
            "config": str(item.config) if item.config else None, "source": item.source,
            "verified": item.verified, "cached": str(path) if path else None,
            "fetched": json.loads(meta.read_text()) if meta and meta.is_file() else None}


# ------------------------------------------------------------------- names in open_checkpoint
def is_model_name(reference: str | os.PathLike) -> bool:
    """Whether ``reference`` names a registry model: not a URL, no folder part, no such file here."""
    text = os.fspath(reference)
    if is_url(text) or "/" in text or os.sep in text or Path(text).is_file():  # a file of that name wins
        return False
    return text in registry()
