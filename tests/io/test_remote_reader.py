"""stemsep.io.remote on its own, against a real HTTP server on 127.0.0.1 (tests/helpers/remote.py):
which strings are URLs, a stream resumed across many drops, a server that is gone, local copies.
Its use by the data module (faults while training and validating) is tested in
tests/data/test_remote_http.py; by the checkpoint readers in tests/io/test_remote_checkpoint.py."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.remote import Fault, ShardServer
from stemsep.errors import BadCheckpointError, BadDataError
from stemsep.io.remote import RemoteReader, Retry, is_url, local_copy, name_of, url_scheme


@pytest.mark.parametrize("text,scheme", [
    ("http://host/a.ckpt", "http"), ("HTTPS://host/a", "https"), ("s3://bucket/key", "s3"),
    ("gs://bucket/key", "gs"), ("simplecache::s3://bucket/key", "simplecache"),
    ("file:///abs/a.ckpt", "file"), ("file://rel.ckpt", "file"),
    ("/abs/a.ckpt", ""), ("rel/a.ckpt", ""), ("C:\\music\\a.ckpt", ""), ("c:/music/a.ckpt", ""),
    ("take:2.ckpt", ""), ("runs/a:b.ckpt", ""), ("", ""),
])
def test_one_rule_tells_urls_from_paths(text, scheme):
    assert url_scheme(text) == scheme
    assert is_url(text) == (scheme not in ("", "file"))


def test_name_of_keeps_urls_as_given_and_paths_as_paths():
    assert name_of("http://127.0.0.1:8/x/a.ckpt") == "http://127.0.0.1:8/x/a.ckpt"
    assert name_of("file:///abs/a.ckpt") == Path("/abs/a.ckpt")
    assert name_of("file://rel.ckpt") == Path("rel.ckpt")
    assert name_of(Path("rel/a.ckpt")) == Path("rel/a.ckpt")


def test_reader_resumes_many_drops_of_one_stream(tmp_path):
    """Retries count failures in a row: a long file may drop many times as long as bytes arrive."""
    data = os.urandom(700_000)
    (tmp_path / "big.bin").write_bytes(data)
    with ShardServer(tmp_path, faults=[Fault(match="big.bin", after_bytes=100_000, times=6)]) as server:
        reader = RemoteReader(f"{server.url}/big.bin", Retry(retries=1, timeout=2, backoff=0), size=len(data))
        assert reader.read() == data and reader.failures == 6 and reader.reopened == 6
        reader.close()
        assert [rng for _, rng, _ in server.requests("big.bin")] == [
            None, *(f"bytes={k * 100_000}-" for k in range(1, 7))]


@dataclass(frozen=True)
class CountingRetry(Retry):
    """A :class:`Retry` that records the waits it gave out (the reader sleeps each one)."""

    waits: list[tuple[int, float]] = field(default_factory=list)

    def delay(self, retry: int) -> float:
        wait = super().delay(retry)
        self.waits.append((retry, wait))
        return wait


def test_server_gone_is_retried_with_backoff_then_named(tmp_path):
    server = ShardServer(tmp_path)
    url = f"{server.url}/test.json"
    server.close()  # connection refused from now on
    retry = CountingRetry(retries=2, timeout=5, backoff=0.01)
    with pytest.raises(BadDataError, match=rf"^{url}: .*Connection refused \(gave up after 3 attempts in a row\)$"):
        RemoteReader(url, retry)
    # backed off before each of the two retries (doubling, with jitter 0.5-1), then stopped
    assert [k for k, _ in retry.waits] == [1, 2]
    assert 0.005 <= retry.waits[0][1] <= 0.01 and 0.01 <= retry.waits[1][1] <= 0.02


def test_local_copy_of_a_url_is_a_temporary_file_named_like_it(tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "model.onnx").write_bytes(data)
    with ShardServer(tmp_path, faults=[Fault(match="model.onnx", after_bytes=123_456)]) as server:
        with local_copy(f"{server.url}/model.onnx?download=1") as file:
            assert file.name == "model.onnx" and file.read_bytes() == data  # the suffix kept for hints
        assert not file.exists() and not file.parent.exists()  # removed on exit
        assert [rng for _, rng, _ in server.requests("model.onnx")] == [None, "bytes=123456-"]
        with pytest.raises(BadCheckpointError, match=rf"^{server.url}/none.ckpt: checkpoint not found \(HTTP 404\)$"):
            with local_copy(f"{server.url}/none.ckpt", error=BadCheckpointError, missing="checkpoint not found"):
                pass
    local = tmp_path / "model.onnx"
    with local_copy(local) as file:
        assert file == local  # a local path as it is (not copied)
    with local_copy(f"file://{local}") as file:
        assert file == local
