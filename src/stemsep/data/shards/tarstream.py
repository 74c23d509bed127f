"""Reading shards and manifests from anywhere: local paths, globs, ``pipe:`` commands, URLs.

- Local paths (and ``file://``) are opened directly; globs and brace patterns
  (``train-{000000..000009}.tar``) are expanded.
- ``pipe:CMD`` runs ``CMD`` and reads its stdout (webdataset's ``gopen``).
- ``http(s)://`` (the standard library) and other schemes (``s3://``, ``gs://``, ``az://``, ...,
  through ``fsspec`` with its backend package installed, e.g. s3fs or gcsfs) are read by
  :class:`~stemsep.io.remote.RemoteReader`: timeouts, retries with backoff, resuming where a
  dropped connection stopped, and a one-line error naming the URL when a read keeps failing.

A shard is read as a stream, once, front to back: its bytes are hashed on the way and compared
with the manifest's sha256 when the tar ends, so corruption anywhere is reported naming the
shard, without reading it twice.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import braceexpand

from stemsep.errors import BadDataError
from stemsep.io.remote import RemoteReader, Retry, url_scheme


def _scheme(url: str) -> str:
    return "pipe" if url.startswith("pipe:") else url_scheme(url)  # "" for a local path


def local_path(url: str) -> str | None:
    """The file path of a local path or ``file://`` URL; ``None`` for other schemes."""
    scheme = _scheme(url)
    if scheme not in ("", "file"):
        return None
    return urlparse(url).path if scheme == "file" else url


def open_url(url: str, retry: Retry | None = None, size: int | None = None) -> IO[bytes]:
    """A binary read stream for ``url`` (see the module docstring), or a one-line error.

    ``retry``: timeouts and retries of remote reads (default :class:`~stemsep.io.remote.Retry`);
    ``size``: the expected size in bytes (remote reads treat any other size as an error).
    """
    scheme, path = _scheme(url), local_path(url)
    try:
        if path is not None:
            return open(path, "rb")  # noqa: SIM115
        if scheme == "pipe":
            from webdataset.gopen import gopen

            return gopen(url, "rb")
        return RemoteReader(url, retry, size)  # type: ignore[return-value]
    except FileNotFoundError:
        raise BadDataError(f"{url}: not found") from None
    except (OSError, ValueError, ImportError) as err:
        raise BadDataError(f"{url}: cannot open ({err})") from None


def read_json(url: str, retry: Retry | None = None) -> Any:
    """Parse the JSON document at ``url``."""
    with open_url(url, retry) as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError as err:
        raise BadDataError(f"{url}: not valid JSON ({err})") from None


def expand_urls(urls: str | list[str]) -> list[str]:
    """Brace-expand every pattern, then glob local ones (sorted). Unmatched globs are errors."""
    out = []
    for pattern in [urls] if isinstance(urls, str) else list(urls):
        for url in braceexpand.braceexpand(pattern):
            if _scheme(url) == "" and any(c in url for c in "*?["):
                matches = sorted(glob.glob(url))
                if not matches:
                    raise BadDataError(f"{url}: no shard matches this pattern")
                out += matches
            else:
                out.append(url)
    return out


def sibling_url(url: str, name: str) -> str:
    """``name`` in the same folder as ``url`` (for local paths and ``scheme://`` URLs)."""
    scheme = _scheme(url)
    if scheme == "pipe":
        raise BadDataError(f"{url}: give shard URLs explicitly when the manifest is read from a pipe")
    path = local_path(url)
    if path is not None:
        return str(Path(path).parent / name)
    return url.rsplit("/", 1)[0] + "/" + name


class _HashingReader:
    """File-like wrapper that hashes everything read through it (when ``hashing``)."""

    def __init__(self, stream: IO[bytes], hashing: bool = True):
        self.stream, self.digest = stream, hashlib.sha256() if hashing else None

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if self.digest is not None:
            self.digest.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


# Local shards whose bytes matched a manifest's sha256 in this process, by (path, size, mtime,
# inode, expected hash): streamed again unchanged, they are not hashed again.
_verified: set[tuple] = set()

READ_CHUNK = 1 << 20  # tar stream reads; the default 10 KiB costs a Python call per 10 KiB


def _local_identity(url: str, sha256: str) -> tuple | None:
    path = local_path(url)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino, sha256


def iter_shard(url: str, name: str, sha256: str | None = None, wanted: Callable[[str], bool] | None = None,
               size: int | None = None, retry: Retry | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {extension: bytes})`` samples of the tar at ``url`` in order.

    Entries of samples ``wanted(key)`` rejects are skipped unread into memory. ``name`` (the
    manifest's shard name) is used in errors. A truncated or corrupt tar, or a sha256
    different from ``sha256`` (checked once the stream ends), is a :class:`BadDataError`. A
    local file is hashed until it has matched once in this process; while its path, size,
    modification time and inode stay the same it is then read without hashing. Remote shards
    (read with ``retry``; ``size``: the manifest's byte count) are hashed on every read; a read
    that keeps failing is a :class:`BadDataError` naming the URL and the cause.
    """
    identity = _local_identity(url, sha256) if sha256 is not None else None
    check = sha256 is not None and (identity is None or identity not in _verified)
    stream = open_url(url, retry, size)
    reader = _HashingReader(stream, hashing=check)
    key, sample = None, {}
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=READ_CHUNK) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                entry_key, _, ext = base.partition(".")
                if entry_key != key:
                    if key is not None and sample:
                        yield key, sample
                    key, sample = entry_key, {}
                if wanted is not None and not wanted(entry_key):
                    continue
                handle = tar.extractfile(member)
                sample[ext] = handle.read() if handle else b""
        if key is not None and sample:
            yield key, sample
        if check:  # the hash covers the whole file, tar padding included
            reader.drain()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise BadDataError(f"shard {name}: truncated or corrupt tar ({err or type(err).__name__}), "
                           f"read from {url}") from None
    finally:
        stream.close()
    if check:
        if reader.digest.hexdigest() != sha256:
            raise BadDataError(f"shard {name}: sha256 mismatch with the manifest (file changed or corrupt), "
                               f"read from {url}")
        if identity is not None:
            _verified.add(identity)
