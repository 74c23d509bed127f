"""Reading remote files (shards, manifests, checkpoints) so that network faults neither hang nor corrupt.

:func:`is_url` tells a URL from a local path (one rule for every tool). :class:`RemoteReader` is a
binary read stream over ``http(s)://`` (the standard library's urllib: no subprocess, so
timeouts, retries and resuming are in our hands) or any fsspec URL (``s3://``, ``gs://``, ...);
:func:`local_copy` gives a local file for a path or a URL (a URL read through ``RemoteReader``
into a temporary file), for the readers that need a file (checkpoints, imports, ``--ckpt_path``).
For every request:

- **timeout**: a connect, or a read that gets no byte for ``timeout`` seconds, fails the attempt
  (fsspec: passed to botocore as its connect/read timeouts for ``s3://``; other backends keep
  their own settings);
- **retries with backoff**: a failed attempt (connection refused, reset or dropped, a stall,
  HTTP 408/425/429/5xx, a body shorter than its ``Content-Length``) is retried up to ``retries``
  times in a row, waiting ``backoff * 2**k`` seconds (times a random 0.5-1 jitter, at most
  ``max_backoff``) before retry ``k + 1``; the count starts again once bytes arrive;
- **resume**: the stream reopens at the byte where it stopped, with an HTTP ``Range`` request
  (fsspec: a seek, which is a range request too). A server that ignores ``Range`` (answers
  ``200``) is read again from the start, discarding the bytes already delivered. Either way the
  reader above sees one unbroken byte stream: no byte is lost, repeated or cut short;
- **the bytes must not change**: each reopened response must report the same size and the same
  ``ETag``/``Last-Modified`` (fsspec: ETag/generation/modification time from ``info``) as the
  first, and the size must equal the expected ``size`` (a shard manifest's ``bytes``); else the
  read stops with a one-line error naming the URL (the sha256 check over a whole shard, done by
  :func:`stemsep.data.shards.tarstream.iter_shard`, catches what headers cannot).

Errors that retrying cannot fix (HTTP 404 and other 4xx, a changed file) are not retried.
Every error is one line, ``<url>: <cause>``: a :class:`~stemsep.errors.BadDataError`, or the
``error`` class the caller names (checkpoints: :class:`~stemsep.errors.BadCheckpointError`).
Moved here from ``stemsep.data.remote`` (which still imports, as this module).
"""


from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stemsep.errors import BadArgumentError, BadDataError, StemsepError

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_SKIP_CHUNK = 1 << 20
_COPY_CHUNK = 1 << 20
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def url_scheme(path: str | os.PathLike) -> str:
    """The scheme of a URL, lowercased (``http``, ``s3``, ``file``...; of an fsspec chain such as
    ``simplecache::s3://...``, the first), or ``""`` for a local path: a scheme must be followed by
    ``//`` or ``::`` (``file:`` alone too), so ``C:\\music`` and ``take:2.ckpt`` are paths."""
    text = os.fspath(path)
    match = _SCHEME.match(text) if isinstance(text, str) else None
    if match is None or len(match[1]) < 2:  # none, or a Windows drive letter
        return ""
    scheme = match[1].lower()
    rest = text[match.end():]
    return scheme if scheme == "file" or rest.startswith(("//", ":")) else ""


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a remote file (``http(s)://``, ``s3://``, ``gs://``, ...) rather than a
    local one (a path, or a ``file://`` URL): the one test every tool applies. Never pass a URL
    through ``Path()``, which turns ``http://host/x`` into ``http:/host/x``."""
    return url_scheme(path) not in ("", "file")


def name_of(path: str | os.PathLike) -> str | Path:
    """``path`` as errors name it and local readers open it: a URL as given (``Path()`` would turn
    ``http://host/x`` into ``http:/host/x``), a local path or ``file://`` URL as the file's
    :class:`~pathlib.Path` (``file://x.ckpt``: ``x.ckpt``)."""
    text = os.fspath(path)
    scheme = url_scheme(text)
    if scheme != "file":
        return text if scheme else Path(text)
    rest = text[len("file:"):]
    return Path(rest[2:] if rest.startswith("//") else rest)


@dataclass(frozen=True)
class Retry:
    """How remote reads survive faults (see the module docstring).

    Args:
        retries: failed attempts in a row retried before giving up (0: fail at the first fault).
        timeout: seconds a connect or a read may wait for data before the attempt fails.
        backoff: seconds before the first retry, doubled for each further one (with jitter).
        max_backoff: longest wait between two attempts.
    """

    retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0
    max_backoff: float = 30.0

    def __post_init__(self):
        if self.retries < 0 or self.timeout <= 0 or self.backoff < 0 or self.max_backoff < 0:
            raise BadArgumentError(f"remote reads: retries >= 0, timeout > 0 and backoff >= 0 are required, got "
                                   f"retries={self.retries}, timeout={self.timeout}, backoff={self.backoff}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...)."""
        return min(self.max_backoff, self.backoff * 2 ** (retry - 1)) * random.uniform(0.5, 1.0)


class _Transient(Exception):
    """A failure worth another attempt."""


class _Permanent(Exception):
    """A failure no retry can fix."""


class _NotFound(_Permanent):
    """The object does not exist (its text: a detail such as " (HTTP 404)")."""


@dataclass
class _Opened:
    stream: Any  # has readinto (or read) and close
    start: int  # byte offset the stream starts at
    total: int | None  # the whole object's size, if the server says
    identity: dict[str, str]  # validators that change when the object changes (ETag, ...)


def _cause(err: BaseException, timeout: float) -> str:
    if isinstance(err, _Transient | _Permanent):
        return str(err)
    if isinstance(err, TimeoutError):
        return f"no data for {timeout:g} s (timed out)"
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        reason = err.reason
        return _cause(reason, timeout) if isinstance(reason, BaseException) else str(reason)
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# botocore errors of the configuration, not of the network: retrying cannot help
_PERMANENT_NAMES = frozenset({"NoCredentialsError", "PartialCredentialsError", "NoRegionError",
                              "ParamValidationError", "InvalidRegionError"})


def _transient(err: BaseException) -> bool:
    if isinstance(err, _Transient):
        return True
    if isinstance(err, _Permanent | FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    if type(err).__name__ in _PERMANENT_NAMES:
        return False
    # network errors: OSError (timeouts, resets, refused, URLError), http.client's protocol errors,
    # and whatever an fsspec backend raises for a failed request (botocore, aiohttp, ...)
    return isinstance(err, Exception)


# -- sources: open a URL at a byte offset ----------------------------------------------------
def _http_open(url: str, offset: int, retry: Retry) -> _Opened:
    headers = {"Accept-Encoding": "identity", "User-Agent": "stemsep"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=retry.timeout)
    except urllib.error.HTTPError as err:
        err.close()
        text = f"HTTP {err.code} {err.reason}"
        if err.code in RETRY_STATUS:
            raise _Transient(text) from None
        if err.code == 404:
            raise _NotFound(" (HTTP 404)") from None
        raise _Permanent(text) from None
    if response.headers.get("Content-Encoding", "identity") not in ("identity", ""):
        response.close()
        raise _Permanent(f"the server compressed the response ({response.headers['Content-Encoding']})")
    identity = {k: response.headers[k] for k in ("ETag", "Last-Modified") if response.headers.get(k)}
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if match is None:
            response.close()
            raise _Permanent(f"unreadable Content-Range {response.headers.get('Content-Range')!r}")
        return _Opened(response, int(match[1]), None if match[2] == "*" else int(match[2]), identity)
    if response.status == 200:
        length = response.headers.get("Content-Length")
        return _Opened(response, 0, int(length) if length and length.isdigit() else None, identity)
    response.close()
    raise _Transient(f"unexpected HTTP {response.status}")


def _fsspec_options(url: str, retry: Retry) -> dict[str, Any]:
    if url.split("://", 1)[0] in ("s3", "s3a"):
        # botocore's own timeouts; one attempt per request: the retries are ours (s3fs still
        # retries a few throttling errors itself)
        return {"config_kwargs": {"connect_timeout": retry.timeout, "read_timeout": retry.timeout,
                                  "retries": {"total_max_attempts": 1}}}
    return {}


_IDENTITY_KEYS = ("ETag", "etag", "generation", "md5Hash", "LastModified", "mtime", "updated")


def _fsspec_open(url: str, offset: int, retry: Retry) -> _Opened:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **_fsspec_options(url, retry))
    except (ImportError, ValueError) as err:
        raise _Permanent(f"cannot open ({_cause(err, retry.timeout)})") from None
    if offset:
        fs.invalidate_cache(path)  # the object's current size and ETag, not the cached listing
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise _NotFound("") from None
    identity = {k: str(info[k]) for k in _IDENTITY_KEYS if info.get(k) is not None}
    stream = fs.open(path, "rb")
    if offset:
        stream.seek(offset)
    size = info.get("size")
    return _Opened(stream, offset, int(size) if size is not None else None, identity)


def _opener(url: str) -> Callable[[str, int, Retry], _Opened]:
    return _http_open if url_scheme(url) in ("http", "https") else _fsspec_open


# -- the reader ------------------------------------------------------------------------------
class RemoteReader(io.RawIOBase):
    """A binary read stream of ``url`` that retries and resumes (see the module docstring).

    ``size``: the expected size in bytes (a manifest's ``bytes``); a different size reported
    by the server, or an end of data before it, is a fault. ``failures`` counts the failed
    attempts so far (``reopened``: the reopenings), for diagnostics and tests. Errors are
    ``error(f"{url}: {cause}")``; a missing object's cause is ``missing`` (then the HTTP status).
    """

    def __init__(self, url: str, retry: Retry | None = None, size: int | None = None, *,
                 error: type[StemsepError] = BadDataError, missing: str = "not found"):
        super().__init__()
        self.url, self.retry, self.expected = url, retry or Retry(), size
        self.error, self.missing = error, missing
        self.pos, self.total, self.failures, self.reopened = 0, size, 0, 0
        self._open_at = _opener(url)
        self._identity: dict[str, str] | None = None
        self._first_total: int | None = None
        self._stream = None
        self._with_retries(lambda: None)  # open now: a missing file is an error here

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        return self._with_retries(lambda: self._readinto(view))

    def close(self) -> None:
        self._drop()
        super().close()

    # -- internals ------------------------------------------------------------------------
    def _readinto(self, view: memoryview) -> int:
        stream = self._stream
        if hasattr(stream, "readinto"):
            n = stream.readinto(view)
        else:
            data = stream.read(len(view))
            n = len(data)
            view[:n] = data
        n = n or 0
        if n == 0 and self.total is not None and self.pos < self.total:
            raise _Transient(f"connection closed at byte {self.pos} of {self.total}")
        self.pos += n
        if self.total is not None and self.pos > self.total:
            raise _Permanent(f"more data than the {self.total} bytes announced")
        return n

    def _with_retries(self, action: Callable[[], Any]) -> Any:
        failed = 0  # in a row, without a byte of progress
        while True:
            try:
                if self._stream is None:
                    self._open()
                return action()
            except BaseException as err:  # noqa: BLE001 - classified below; KeyboardInterrupt re-raised
                self._drop()
                if not isinstance(err, Exception):
                    raise
                cause = self.missing + str(err) if isinstance(err, _NotFound) else _cause(err, self.retry.timeout)
                if not _transient(err):
                    raise self.error(f"{self.url}: {cause}") from None
                self.failures += 1
                failed += 1
                if failed > self.retry.retries:
                    tries = "1 attempt" if failed == 1 else f"{failed} attempts in a row"
                    raise self.error(f"{self.url}: {cause} (gave up after {tries})") from None
                time.sleep(self.retry.delay(failed))

    def _open(self) -> None:
        opened = self._open_at(self.url, self.pos, self.retry)
        self._stream = opened.stream
        if self._identity is None:
            self._identity, self._first_total = opened.identity, opened.total
            if self.expected is not None and opened.total is not None and opened.total != self.expected:
                raise _Permanent(f"is {opened.total} bytes, the manifest says {self.expected} (shard changed?)")
            if self.total is None:
                self.total = opened.total
        else:
            self.reopened += 1
            changed = [f"{k} {v!r} -> {opened.identity[k]!r}" for k, v in self._identity.items()
                       if k in opened.identity and opened.identity[k] != v]
            if opened.total is not None and self._first_total is not None and opened.total != self._first_total:
                changed.append(f"size {self._first_total} -> {opened.total}")
            if changed:
                raise _Permanent(f"changed while being read ({'; '.join(changed)})")
        if opened.start > self.pos:
            raise _Permanent(f"the server resumed at byte {opened.start}, not {self.pos}")
        skip = self.pos - opened.start  # a server that ignores Range: read again up to where we were
        while skip:
            data = self._stream.read(min(skip, _SKIP_CHUNK))
            if not data:
                raise _Transient(f"connection closed at byte {self.pos - skip} while skipping to {self.pos}")
            skip -= len(data)

    def _drop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001, S110 - a broken connection may fail to close; it is dropped anyway
                pass


# -- a local file for a path or a URL ----------------------------------------------------------
@contextlib.contextmanager
def local_copy(path: str | os.PathLike, retry: Retry | None = None, *, error: type[StemsepError] = BadDataError,
               missing: str = "not found") -> Iterator[Path]:
    """A local file holding ``path``'s bytes, for as long as the ``with`` block runs.

    A local path (or ``file://`` URL) is given back as it is, not checked (its readers name a
    missing file their own way). A URL (:func:`is_url`) is read through :class:`RemoteReader` (its
    timeouts, retries, resuming and size/ETag checks; its errors ``error(f"{url}: ...")``) into a
    temporary folder, under the URL's file name (so suffix-based hints still apply), removed on exit.
    """
    if not is_url(path):
        yield name_of(path)
        return
    url = os.fspath(path)
    name = urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]
    name = name if name not in ("", ".", "..") else "download"
    with tempfile.TemporaryDirectory(prefix="stemsep-remote-") as folder:
        target = Path(folder) / name
        with RemoteReader(url, retry, error=error, missing=missing) as reader, open(target, "wb") as out:
            shutil.copyfileobj(reader, out, _COPY_CHUNK)
        yield target
