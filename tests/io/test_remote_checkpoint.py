"""Checkpoints over HTTP from a real server on 127.0.0.1 (tests/helpers/remote.py): read through
stemsep.io.remote like shards are (resumed after a dropped connection), with the safe-loading rules
and one-line errors of local files; every tool taking a checkpoint path takes the URL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import TinyNet
from helpers.remote import Fault, ShardServer
from stemsep.contract import network_config
from stemsep.errors import BadCheckpointError
from stemsep.io.checkpoint import load_checkpoint, load_network, load_separator, save_checkpoint
from stemsep.io.files import file_sha256
from stemsep.io.import_checkpoint import read_msst_state_dict
from stemsep.io.import_demucs import read_demucs_package
from stemsep.training.lora import base_reference


@pytest.fixture
def served(tmp_path):
    """A tiny checkpoint in a folder served over HTTP: (folder, checkpoint path, server)."""
    torch.manual_seed(0)
    net = TinyNet(hidden=32)
    path = save_checkpoint(tmp_path / "model.ckpt", net, network_config(net))
    with ShardServer(tmp_path) as server:
        yield tmp_path, path, server


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_dropped_connection_is_resumed_into_the_same_network(served):
    folder, path, server = served
    size = path.stat().st_size
    cut = size // 2
    fault = Fault(match="model.ckpt", after_bytes=cut)
    server.faults.append(fault)
    remote = load_separator(f"{server.url}/model.ckpt")
    assert _same_state(remote, load_separator(path)) and not remote.training
    assert fault.hits == 1
    # the second request resumed where the first stopped, and nothing more was asked for
    assert [(rng, outcome) for _, rng, outcome in server.requests("model.ckpt")] == [
        (None, f"dropped after {cut} bytes"), (f"bytes={cut}-", "ok")]


class Payload:  # an object a checkpoint must not smuggle in
    pass


def test_pickled_remote_checkpoint_is_refused_like_a_local_one(served):
    folder, _, server = served
    evil = folder / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, evil)
    with pytest.raises(BadCheckpointError) as local:
        load_separator(evil)
    url = f"{server.url}/evil.ckpt"
    with pytest.raises(BadCheckpointError) as remote:
        load_separator(url)
    assert str(local.value) == f"{evil}: refused, it holds pickled code or objects, not only weights"
    assert str(remote.value) == str(local.value).replace(str(evil), url)


def test_missing_remote_checkpoint_is_one_line_naming_the_url(served):
    _, _, server = served
    url = f"{server.url}/nowhere/missing.ckpt"
    for load in (load_separator, load_checkpoint, load_network):
        with pytest.raises(BadCheckpointError) as info:
            load(url)
        assert str(info.value) == f"{url}: checkpoint not found (HTTP 404)"
    assert len(server.requests("missing.ckpt")) == 3  # one request each: a 404 is not retried


def test_every_checkpoint_reader_takes_the_url(served):
    """import-checkpoint's and import-demucs' readers and a LoRA base read a URL as the local file,
    and name the URL (never ``http:/host``, what ``Path()`` makes of it) in their errors."""
    folder, path, server = served
    url = f"{server.url}/model.ckpt"
    plain = folder / "plain.pt"
    torch.save({"w": torch.arange(6.0)}, plain)
    assert torch.equal(read_msst_state_dict(f"{server.url}/plain.pt")["w"], torch.arange(6.0))
    with pytest.raises(BadCheckpointError, match=rf"^{url}: not a demucs model package"):
        read_demucs_package(url)
    assert base_reference(url) == {"path": url, "resolved": url, "sha256": file_sha256(path)}
    assert base_reference(path)["sha256"] == file_sha256(path)
    with pytest.raises(BadCheckpointError, match=rf"^{server.url}/gone.ckpt: base checkpoint not found \(HTTP 404\)$"):
        base_reference(f"{server.url}/gone.ckpt")


def test_separate_model_url(served, tmp_path, capsys):
    """``stemsep separate --model http://...`` as a user types it, the connection dropped half-way
    through the checkpoint: resumed, and the stems equal those of the local file."""
    from helpers.audio import tone, write_sf
    from stemsep.cli import main
    from stemsep.io.audio import read_audio

    folder, path, server = served
    song = write_sf(tmp_path / "in" / "song.wav", tone(0.5, 44100), 44100, "WAV", "FLOAT")
    cut = path.stat().st_size // 2
    server.faults.append(Fault(match="model.ckpt", after_bytes=cut))
    common = ["separate", str(song), "--shifts", "2", "--bits", "32", "--device", "cpu"]
    assert main([*common, "--model", str(path), "-o", str(tmp_path / "local")]) == 0
    assert main([*common, "--model", f"{server.url}/model.ckpt", "-o", str(tmp_path / "remote")]) == 0
    stems = sorted(p.name for p in (tmp_path / "local" / "song").iterdir())
    assert stems == sorted(f"{s}.wav" for s in TinyNet().sources)
    assert sorted(p.name for p in (tmp_path / "remote" / "song").iterdir()) == stems
    for name in stems:
        a, _ = read_audio(tmp_path / "local" / "song" / name)
        b, _ = read_audio(tmp_path / "remote" / "song" / name)
        assert np.array_equal(a.numpy(), b.numpy()), name
    assert [(rng, outcome) for _, rng, outcome in server.requests("model.ckpt")] == [
        (None, f"dropped after {cut} bytes"), (f"bytes={cut}-", "ok")]
