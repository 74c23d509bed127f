"""Shards over HTTP from a real server on 127.0.0.1, with injected faults: each fault is either
retried into identical data or a one-line error naming the URL, after a bounded number of requests
(counted by the server, not timed). The reader itself (stemsep.io.remote) is tested in
tests/io/test_remote_reader.py; here, the data module's use of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from helpers.data import copy_shards
from helpers.remote import Fault, ShardServer
from stemsep.data.loaders.datamodule import StemDataModule
from stemsep.errors import BadDataError

FAST = dict(retries=3, timeout=0.5, backoff=0.01)
# A stall lasts far longer than the reader's timeout: a reader that waited for the stalled server
# instead of timing out would get the data without the retry the request counts below expect.
STALL = 120.0
TEST_SHARDS = 2  # test-000000.tar, test-000001.tar


def _dm(base: str, **kw) -> StemDataModule:
    options = dict(train_manifest=f"{base}/train.json", valid_manifest=f"{base}/test.json", segment=0.5,
                   batch_size=2, num_workers=0, shuffle=2, song_buffer=2, epoch_batches=2, **FAST)
    return StemDataModule(**{**options, **kw})


def _songs(dm: StemDataModule, workers: int = 0) -> dict[str, torch.Tensor]:
    loader = DataLoader(dm.eval_dataset("valid"), batch_size=None, num_workers=workers)
    return {names[0]: stems for _, stems, names in loader}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def local(shards) -> dict[str, torch.Tensor]:
    return _songs(_dm(str(shards)))


def test_train_and_validate_over_http_equal_local(shards, local):
    with ShardServer(shards) as server:
        remote = _dm(server.url)
        assert remote.sources == _dm(str(shards)).sources and remote.samplerate == 44100
        assert _same(_songs(remote, workers=2), local) and sorted(local) == ["song0004", "song0005"]
        http_batches = list(remote.train_dataloader())
        assert [path for path, _, _ in server.requests(".tar")]  # really read over HTTP
    file_batches = list(_dm(str(shards)).train_dataloader())
    assert len(http_batches) == len(file_batches) == 2
    for (mix_a, stems_a), (mix_b, stems_b) in zip(http_batches, file_batches, strict=True):
        assert torch.equal(stems_a, stems_b) and torch.equal(mix_a, mix_b)


# Each fault hits the first requests of every test shard; the read must end with the same songs.
RECOVERED = {
    "drop mid-shard, resumed by Range": (dict(after_bytes=100_000, times=2), True, "bytes=100000-"),
    "drop mid-shard, server without Range: read again": (dict(after_bytes=100_000, times=2), False, None),
    "503 for the first 2 requests": (dict(status=503, times=2), True, None),
    "stall 120 s, timeout 0.5 s": (dict(stall=STALL, times=1), True, None),
}


@pytest.mark.parametrize("case", list(RECOVERED))
def test_transient_faults_are_retried_into_identical_songs(shards, local, case):
    fault_args, ranges, expected_range = RECOVERED[case]
    fault = Fault(match="/test-", **fault_args)
    with ShardServer(shards, ranges=ranges, faults=[fault]) as server:
        assert _same(_songs(_dm(server.url)), local)
        ranges_sent = [r for _, r, _ in server.requests("/test-")]
    assert fault.hits == fault_args["times"]
    # one more request per fault, no more: every failed attempt was retried once it failed
    assert len(ranges_sent) == TEST_SHARDS + fault.hits, ranges_sent
    if expected_range:
        assert expected_range in ranges_sent


PERSISTENT = {
    "503 forever": (dict(status=503, times=None), "HTTP 503"),
    "stall forever": (dict(stall=STALL, times=None), r"no data for 0\.5 s \(timed out\)"),
    "drop forever, no byte": (dict(after_bytes=0, times=None), "connection closed at byte 0 of|Connection reset"),
    "403": (dict(status=403, times=None), "HTTP 403"),
}


@pytest.mark.parametrize("case", list(PERSISTENT))
def test_persistent_faults_are_one_line_errors_naming_the_url(shards, case):
    fault_args, cause = PERSISTENT[case]
    with ShardServer(shards, faults=[Fault(match="/test-000000", **fault_args)]) as server:
        with pytest.raises(BadDataError) as info:
            _songs(_dm(server.url, retries=2))
        attempts = server.requests("/test-000000")
    message = str(info.value)
    assert message.startswith(f"{server.url}/test-000000.tar: ") and re.search(cause, message), message
    assert "\n" not in message
    if fault_args.get("status") == 403:
        assert "gave up" not in message and len(attempts) == 1  # not worth retrying
    else:  # never a hang: retries + 1 attempts, each failed by the fault, then the error
        assert "gave up after 3 attempts in a row" in message and len(attempts) == 3, attempts


def test_no_retries_means_an_error_not_a_shorter_song(shards):
    name = "test-000000.tar"
    with ShardServer(shards, faults=[Fault(match=name, after_bytes=200_000)]) as server:
        with pytest.raises(BadDataError, match=f"{server.url}/{name}: connection closed at byte 200000 of"):
            _songs(_dm(server.url, retries=0))


def test_missing_shard_and_manifest_name_the_url(shards, tmp_path):
    out = copy_shards(shards, tmp_path / "s")
    (out / "test-000001.tar").unlink()
    with ShardServer(out) as server:
        with pytest.raises(BadDataError, match=f"{server.url}/test-000001.tar: not found"):
            _songs(_dm(server.url))
        with pytest.raises(BadDataError, match=f"{server.url}/nowhere.json: not found"):
            _dm(server.url, valid_manifest=f"{server.url}/nowhere.json").eval_dataset("valid")


def _flip_padding(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2000] ^= 0xFF  # inside the tar's zero padding: the tar still parses, the bytes differ
    path.write_bytes(bytes(data))


def test_changed_shard_is_caught_by_sha256_over_http(shards, tmp_path):
    out = copy_shards(shards, tmp_path / "s")
    _flip_padding(out / "test-000000.tar")
    with ShardServer(out) as server:
        with pytest.raises(BadDataError, match=f"shard test-000000.tar: sha256 mismatch .*read from {server.url}/"):
            _songs(_dm(server.url))
        assert len(_songs(_dm(server.url, verify_sha=False))) == 2  # what verify_sha=False accepts


def test_shard_size_differing_from_the_manifest_is_refused_before_reading(shards, tmp_path):
    out = copy_shards(shards, tmp_path / "s")
    with open(out / "test-000000.tar", "ab") as f:
        f.write(b"\0" * 512)
    with ShardServer(out) as server:
        with pytest.raises(BadDataError, match=r"test-000000.tar: is \d+ bytes, the manifest says \d+"):
            _songs(_dm(server.url, verify_sha=False))
        assert [r for _, r, _ in server.requests("/test-000000")] == [None]  # no retry


@pytest.mark.parametrize("ranges", [True, False])
def test_shard_changed_between_a_drop_and_the_resume(shards, tmp_path, ranges):
    out = copy_shards(shards, tmp_path / "s")
    name = "test-000000.tar"
    fault = Fault(match=name, after_bytes=100_000, then=lambda: _flip_padding(out / name))
    with ShardServer(out, ranges=ranges, faults=[fault]) as server:
        with pytest.raises(BadDataError) as info:
            _songs(_dm(server.url))
    message = str(info.value)
    if ranges:  # the ETag changed: stopped at the resume, before reading on
        assert message.startswith(f"{server.url}/{name}: changed while being read (ETag ")
    else:  # no validators from this server: the sha256 over the stream catches it
        assert message.startswith(f"shard {name}: sha256 mismatch") and f"{server.url}/{name}" in message


def test_training_policy_warn_skips_and_counts_failing_shards_raise_names_one(shards):
    names = [s["name"] for s in json.loads((shards / "train.json").read_text())["shards"]]
    bad = names[:-1]  # every training shard but one answers 503 forever
    faults = [Fault(match=name, status=503, times=None) for name in bad]
    with ShardServer(shards, faults=faults) as server:
        dm = _dm(server.url, policy="warn", retries=1, epoch_batches=4)
        stream = dm.train_dataset()
        with pytest.warns(RuntimeWarning, match=r"skipped bad training data \(1 so far.*train-\d+.tar: HTTP 503"):
            batches = list(DataLoader(stream, batch_size=None, num_workers=0))
        assert len(batches) == 4 and stream.skipped >= 1  # training went on with the good shard
        assert {p for p, _, outcome in server.requests(".tar") if outcome == "ok"} == {f"/{names[-1]}"}
        with pytest.raises(BadDataError, match=rf"^{server.url}/train-\d+.tar: HTTP 503 .*gave up after 2 attempts"):
            list(_dm(server.url, policy="raise", retries=1).train_dataloader())
