"""Real servers on 127.0.0.1 for the remote-data tests: a fault-injecting HTTP file server and moto's S3.

:class:`ShardServer` serves a folder (GET with ``Range`` and ``ETag`` like an object store, or
without range support like ``python -m http.server``), and injects :class:`Fault` s into the
requests whose path contains ``match``: drop the connection after ``after_bytes`` body bytes,
answer an HTTP ``status``, stall ``stall`` seconds before the body, each for the first ``times``
matching requests (``None``: all). ``log`` records every request as it arrives, as
(path, range, outcome), the outcome filled in when it is answered.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Fault:
    match: str = ""  # substring of the request path
    after_bytes: int | None = None  # drop the connection after this many body bytes
    status: int | None = None  # answer this HTTP status instead
    stall: float = 0.0  # seconds to wait after the headers, before the body
    times: int | None = 1  # how many matching requests it hits (None: every one)
    then: Callable[[], None] | None = None  # called after the fault hit (e.g. to change the file)
    hits: int = 0

    def applies(self, path: str) -> bool:
        return self.match in path and (self.times is None or self.hits < self.times)


@dataclass
class ShardServer:
    root: Path
    ranges: bool = True  # honour Range requests and send ETags
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str | None, str]] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ShardServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def requests(self, match: str = "") -> list[tuple[str, str | None, str]]:
        with self._lock:
            return [entry for entry in self.log if match in entry[0]]

    def _fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.applies(path):
                    fault.hits += 1
                    return fault
        return None

    def _arrived(self, path: str, rng: str | None) -> int:
        with self._lock:
            self.log.append((path, rng, "pending"))
            return len(self.log) - 1

    def _record(self, index: int, outcome: str) -> None:
        with self._lock:
            path, rng, _ = self.log[index]
            self.log[index] = (path, rng, outcome)

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        file = self.root / path.lstrip("/")
        rng = h.headers.get("Range")
        index = self._arrived(path, rng)
        fault = self._fault(path)
        if fault is not None and fault.status is not None:
            self._record(index, f"status {fault.status}")
            h.send_response(fault.status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            if fault.then:
                fault.then()
            return
        if not file.is_file():
            self._record(index, "404")
            h.send_error(404)
            return
        data = file.read_bytes()
        start = 0
        if self.ranges and rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        if self.ranges:
            h.send_header("ETag", '"' + hashlib.sha1(data).hexdigest()[:16] + '"')
            h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        body = data[start:]
        outcome = "ok"
        if fault is not None and fault.stall:
            self._stop.wait(fault.stall)
            outcome = f"stalled {fault.stall} s"
        try:
            if fault is not None and fault.after_bytes is not None:
                h.wfile.write(body[: fault.after_bytes])
                h.wfile.flush()
                h.close_connection = True
                outcome = f"dropped after {fault.after_bytes} bytes"
                with contextlib.suppress(OSError):
                    h.connection.shutdown(2)
            else:
                h.wfile.write(body)
        except OSError:  # the client gave up (a stalled request timed out)
            outcome += ", client gone"
        self._record(index, outcome)
        if fault is not None and fault.then:
            fault.then()


# -- S3 through moto's server ----------------------------------------------------------------
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def moto_s3(monkeypatch) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (random port) reached through the usual environment
    (credentials, ``AWS_ENDPOINT_URL``), as s3fs/botocore pick it up; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    _clear_s3fs_cache()
    try:
        yield endpoint
    finally:
        _clear_s3fs_cache()
        server.stop()


def _clear_s3fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def upload_folder(folder: Path, url: str) -> None:
    """Put every file of ``folder`` under ``s3://bucket/prefix`` (the bucket is created)."""
    import s3fs

    fs = s3fs.S3FileSystem()
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for file in sorted(folder.iterdir()):
        if file.is_file():
            fs.put_file(str(file), f"{url.rstrip('/')}/{file.name}")
    fs.invalidate_cache()




# -- what each DDP rank saw ------------------------------------------------------------------
def _callback_base():
    import lightning as L

    return L.Callback


class RecordBatches(_callback_base()):
    """Appends, per rank, a hash of each training batch and the song names of each validation
    batch to ``<dirpath>/{train,valid}-rank<R>.txt`` (for the multi-process tests)."""

    def __init__(self, dirpath: str):
        super().__init__()
        self.dirpath = Path(dirpath)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        digest = hashlib.sha1(batch[1].contiguous().numpy().tobytes()).hexdigest()
        self._write(trainer, "train", f"{batch_idx} {digest}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        for name in batch[2]:
            self._write(trainer, "valid", name)

    def _write(self, trainer, kind: str, line: str) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / f"{kind}-rank{trainer.global_rank}.txt", "a") as f:
            f.write(line + "\n")
