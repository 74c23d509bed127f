"""Pretrained models by name: fetched, checked, converted and cached once, then used from the cache.

``stemsep separate song.mp3 --model htdemucs_ft -o out/`` works like ``demucs -n htdemucs_ft``: a
reference that is neither a file nor a URL and that the registry (:mod:`stemsep.io.registry`)
knows is :func:`fetch_model`-ed:

1. the model cache is asked first (:func:`~stemsep.io.registry.cached`);
2. otherwise, under a lock (``<cache>/<name>/.lock``, flock: of two processes one fetches, the
   other waits and uses its entry), each file is read through
   :class:`~stemsep.io.remote.RemoteReader` (timeouts, retries, resuming after a dropped
   connection; a progress bar on a terminal) from its URL, or from
   ``$STEMSEP_MODEL_MIRROR/<file name>``, hashed as it arrives, and checked against the registry
   before anything unpickles it;
3. it is converted by the importers (:mod:`~stemsep.io.import_demucs`,
   :mod:`~stemsep.io.import_checkpoint`: weights-only unpickling, pickled code refused; a demucs bag
   becomes our bag with its per-source weights) and written atomically (temporary file + rename);
   the downloads are deleted.

Unverified entries (no published digest) are fetched only with ``trust_unverified``
(``stemsep models download NAME --trust-unverified``, or ``STEMSEP_TRUST_UNVERIFIED=1``); the
first fetch is then pinned: its digest keys the entry, which is used from then on. Offline
(``STEMSEP_OFFLINE=1``, or the network failing) a cached model works and a missing one is a
one-line error naming its URL and ``stemsep models add FILE --name NAME``, which installs files
fetched by hand, checked the same way.

:mod:`stemsep.io.checkpoint` reads names through the hook this module plugs in
(:func:`~stemsep.io.checkpoint.add_name_resolver`; ``stemsep.io`` imports this module): the
importers use that module, so it cannot import this one. Every checkpoint reader — ``separate``,
``Separator.from_pretrained``, ``model.init_from``, a LoRA base, ``test`` (FromCheckpoint), ``bag``,
``export``, ``quantize`` — thereby takes a name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stemsep.errors import BadArgumentError, BadCheckpointError, StemsepError
from stemsep.io.checkpoint import add_name_resolver, import_class, save_checkpoint
from stemsep.io.files import atomic_path, ensure_writable_dir, file_sha256, remove_stale_temporaries
from stemsep.io.import_checkpoint import import_checkpoint
from stemsep.io.import_demucs import build_model, read_demucs_package
from stemsep.io.registry import (
    Entry,
    ModelFile,
    cache_dir,
    cached,
    entry,
    is_model_name,
    mirrored,
    model_info,
    model_rows,
)
from stemsep.io.remote import RemoteReader, Retry

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock; the atomic rename still leaves one good entry
    fcntl = None

BAG_CLASS = "stemsep.inference.bag.BagOfModels"  # a class path (data), as checkpoints name classes
_TRUE = ("1", "true", "yes", "on")
DOWNLOADS = ".download-"  # prefix of the folder a fetch downloads into, inside the model's cache folder


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (flock) for the block: one process fetches a model at a time. Holding it,
    what a killed fetch left there (its download folder, a half-written checkpoint) is removed."""
    ensure_writable_dir(folder)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            for stale in folder.glob(f"{DOWNLOADS}*"):
                shutil.rmtree(stale, ignore_errors=True)
            remove_stale_temporaries(folder, "*")
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _by_hand(item: Entry) -> str:
    names = " ".join(f.name for f in item.files)
    return f"download {' '.join(f.url for f in item.files)} and run: stemsep models add {names} --name {item.name}"


# --------------------------------------------------------------------------------- fetching
def fetch_model(name: str, *, trust_unverified: bool = False, retry: Retry | None = None) -> Path:
    """The converted stemsep checkpoint of the registry model ``name``: from the cache, else fetched,
    checked, converted and cached (see the module docstring). Offline (``STEMSEP_OFFLINE=1``) only the
    cache is used."""
    item = entry(name)
    found = cached(item)
    if found is not None:
        return found
    if _flag("STEMSEP_OFFLINE"):
        raise BadCheckpointError(f"{name}: not in the model cache {cache_dir()} and STEMSEP_OFFLINE is set; "
                                 + _by_hand(item))
    if not item.verified and not (trust_unverified or _flag("STEMSEP_TRUST_UNVERIFIED")):
        raise BadCheckpointError(f"{name}: its publisher gives no sha256 for {item.files[0].url}, so the download "
                                 "cannot be verified; fetch it anyway with `stemsep models download "
                                 f"{name} --trust-unverified` (or STEMSEP_TRUST_UNVERIFIED=1), or {_by_hand(item)}")
    folder = cache_dir() / name
    with _locked(folder):
        found = cached(item)  # another process may have fetched it while we waited
        if found is not None:
            return found
        with tempfile.TemporaryDirectory(prefix=DOWNLOADS, dir=folder) as tmp:
            downloads = []
            for file in item.files:
                try:
                    downloads.append(_download(file, Path(tmp), retry))
                except BadCheckpointError as err:
                    raise BadCheckpointError(f"{err}; to install {name} by hand, {_by_hand(item)}") from None
            return _install(item, downloads)


def _download(file: ModelFile, folder: Path, retry: Retry | None) -> tuple[Path, str, str]:
    """``(local file, its sha256, the URL read)``: read through RemoteReader while hashing; checked."""
    from tqdm import tqdm

    url, target = mirrored(file.url), folder / file.name
    digest = hashlib.sha256()
    with RemoteReader(url, retry, error=BadCheckpointError, missing="model file not found") as reader, \
            open(target, "wb") as out, tqdm(total=reader.total, unit="B", unit_scale=True, desc=file.name,
                                            disable=None, file=sys.stderr, leave=False) as bar:
        while block := reader.read(1 << 20):
            out.write(block)
            digest.update(block)
            bar.update(len(block))
    found = digest.hexdigest()
    if file.identity and not file.matches(found):
        expected = file.sha256 or f"{file.sha256_prefix}... (the prefix in its name)"
        raise BadCheckpointError(f"{url}: sha256 {found} is not the registry's {expected}: a corrupt or changed "
                                 "file, nothing was cached")
    return target, found, url


def _install(item: Entry, downloads: Sequence[tuple[Path, str, str]]) -> Path:
    """Convert checked files into the cache entry of ``item`` (atomic); returns its path."""
    key = item.key([digest for _, digest, _ in downloads])
    target = cache_dir() / item.name / f"{key}.ckpt"
    provenance = {"name": item.name, "key": key,
                  "files": [{"url": url, "sha256": digest} for _, digest, url in downloads]}
    with _naming_urls(downloads):
        if item.family == "demucs":
            _convert_demucs(item, [path for path, _, _ in downloads], target, provenance)
        else:
            (path, _, _), = downloads
            summary = import_checkpoint(path, item.config, target, model_type=item.model_type, force=True)
            if (summary["class_path"], tuple(summary["sources"])) != (item.arch, item.sources):
                target.unlink(missing_ok=True)
                raise BadCheckpointError(f"{item.name}: the config builds a {summary['class_path']} of sources "
                                         f"{summary['sources']}, the registry says a {item.arch} of {list(item.sources)}")
    with atomic_path(target.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(provenance, indent=1))
    return target


@contextlib.contextmanager
def _naming_urls(downloads: Sequence[tuple[Path, str, str]]) -> Iterator[None]:
    """Errors of the importers name the URL fetched, not the temporary file it was read into."""
    try:
        yield
    except StemsepError as err:
        text = str(err)
        for path, _, url in downloads:
            text = text.replace(str(path), url)
        raise type(err)(text) from None


def _check_network(item: Entry, net: Any, class_path: str) -> None:
    """One-line error unless the file holds what the registry says (class, sources, sample rate)."""
    found = (class_path, tuple(net.sources), int(net.samplerate))
    if found != (item.arch, item.sources, item.samplerate):
        raise BadCheckpointError(f"{item.name}: the file holds a {class_path} of sources {list(net.sources)} at "
                                 f"{net.samplerate} Hz, the registry says a {item.arch} of {list(item.sources)} at "
                                 f"{item.samplerate} Hz")


def _convert_demucs(item: Entry, paths: Sequence[Path], target: Path, provenance: dict[str, Any]) -> None:
    """One demucs package -> its network; several (a bag) -> our bag with the entry's weights."""
    members = []
    for path in paths:
        package = read_demucs_package(path)
        if item.segment is not None and isinstance(package.get("kwargs"), dict):
            package["kwargs"]["segment"] = item.segment  # demucs' bag gives each member its segment
        net, config, _ = build_model(package, path)
        _check_network(item, net, config["class_path"])
        members.append((net, config))
    extra = {"imported_from": provenance}
    if len(members) == 1 and item.weights is None:
        save_checkpoint(target, *members[0], extra)
        return
    rows = [list(row) for row in item.weights] if item.weights else None
    bag = import_class(BAG_CLASS, origin=item.name)([net for net, _ in members], weights=rows)
    config = {"class_path": BAG_CLASS, "init_args": {"models": [c for _, c in members], "weights": bag.weights}}
    save_checkpoint(target, bag, config, extra)


def add_model(files: Sequence[str | os.PathLike], name: str) -> Path:
    """``stemsep models add``: install files fetched by hand as the registry model ``name`` (matched to
    its files by file name, else in order; each checked against its published digest, if any)."""
    item = entry(name)
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise StemsepError(f"{path}: file not found")
    if len(paths) != len(item.files):
        raise BadArgumentError(f"{name}: needs {len(item.files)} file(s) ({', '.join(f.name for f in item.files)}), "
                               f"got {len(paths)}")
    by_name = {p.name: p for p in paths}
    ordered = [by_name[f.name] for f in item.files] if set(by_name) == {f.name for f in item.files} else paths
    downloads = []
    for file, path in zip(item.files, ordered, strict=True):
        digest = file_sha256(path)
        if file.identity and not file.matches(digest):
            raise BadCheckpointError(f"{path}: sha256 {digest} is not the registry's "
                                     f"{file.sha256 or file.sha256_prefix} for {file.name}; nothing was cached")
        downloads.append((path, digest, str(path.resolve())))
    with _locked(cache_dir() / name):
        return _install(item, downloads)


def remove_model(name: str) -> list[Path]:
    """``stemsep models remove``: delete the cache entries of ``name``; returns what was removed."""
    item = entry(name)
    folder = cache_dir() / item.name
    removed = sorted(folder.glob("[!.]*.ckpt")) if folder.is_dir() else []
    if folder.is_dir():
        with _locked(folder):  # the folder and its lock stay: a fetch waiting on the lock goes on
            for path in folder.iterdir():
                if path.name != ".lock":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed


def resolve_name(reference: str | os.PathLike) -> Path | None:
    """The cached checkpoint of the model ``reference`` names (fetched if needed), or None for a path/URL."""
    return fetch_model(os.fspath(reference)) if is_model_name(reference) else None


add_name_resolver(resolve_name)


# ------------------------------------------------------------------------ `stemsep models`
ACTIONS = ("list", "info", "download", "add", "remove")


def models(action: str, targets: Sequence[str | os.PathLike] = (), *, name: str | None = None,
           trust_unverified: bool = False, out: str | os.PathLike | None = None) -> list[str]:
    """``stemsep models list | info NAME | download NAME | add FILE... --name NAME | remove NAME`` as a
    library function: checks its arguments, does the action and returns the lines the command prints.
    ``out`` (download, add): also write the converted checkpoint there (atomically)."""
    if action not in ACTIONS:
        raise BadArgumentError(f"models: unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if out is not None and action not in ("download", "add"):
        raise BadArgumentError(f"models {action}: -o is for download and add (a copy of the converted checkpoint)")
    if action == "list":
        return _table(model_rows())
    if action == "add":
        if not name or not targets:
            raise BadArgumentError("models add: give the files and --name NAME (see `stemsep models list`)")
        return [f"{name}: {_copy(add_model(targets, name), out)}"]
    names = [os.fspath(t) for t in targets] or ([name] if name else [])
    if len(names) != 1:
        raise BadArgumentError(f"models {action}: give one model name (see `stemsep models list`), got {len(names)}")
    (name,) = names
    if action == "info":
        return [f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}"
                for key, value in model_info(name).items()]
    if action == "download":
        return [f"{name}: {_copy(fetch_model(name, trust_unverified=trust_unverified), out)}"]
    removed = remove_model(name)
    return [f"{name}: removed {', '.join(map(str, removed))}" if removed else f"{name}: not in the cache"]


def _copy(path: Path, out: str | os.PathLike | None) -> Path:
    """``path``, or its copy at ``out`` (written atomically) when ``out`` is given."""
    if out is None:
        return path
    with atomic_path(out) as tmp:
        shutil.copyfile(path, tmp)
    return Path(out)


def _size(count: int | None) -> str:
    return "?" if count is None else f"{count / 1e6:,.0f} MB"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows of :func:`~stemsep.io.registry.model_rows` as aligned text columns."""
    head = ("name", "family", "sources", "size", "SDR (dB)", "cached")
    cells = [head] + [(r["name"], r["family"], ",".join(r["sources"]), _size(r["bytes"]),
                       "-" if r["sdr"] is None else f"{r['sdr']:.2f}",
                       "yes" if r["cached"] else "no" if r["verified"] else "no (unverified)") for r in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return [*lines, f"cache: {cache_dir()}  (size: the converted checkpoint; SDR: as its authors report it, "
                    "see `stemsep models info NAME`)"]
