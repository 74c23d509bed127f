"""Reproducible separation: the random time shifts of ``--shifts`` come from ``--seed`` (default 0),
drawn afresh for every track, so stems depend only on the input and the options (not on earlier
runs, the global RNG, or the other files of a batch); without shifts the seed changes nothing."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from helpers.audio import tone, write_sf
from helpers.slow_net import SlowNet
from stemsep.cli import main
from stemsep.errors import BadArgumentError
from stemsep.inference import Separator, apply_model, apply_model_many
from stemsep.inference.chunked import Chunking
from stemsep.inference.separate import separate_files
from stemsep.inference.writing import WriteOptions
from stemsep.io.audio import read_audio
from stemsep.io.checkpoint import save_checkpoint
from stemsep.io.provenance import input_identity, provenance, read_provenance

SR = 8000
SOURCES = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny network with a 0.6 s segment (chunked: the shift moves the chunk grid) and two songs."""
    root = tmp_path_factory.mktemp("seed")
    torch.manual_seed(0)
    net = SlowNet(samplerate=SR, delay=0.0, segment=0.6)
    ckpt = save_checkpoint(root / "seg.ckpt", net, {"class_path": "helpers.slow_net.SlowNet",
                                                   "init_args": net.init_args})
    songs = [write_sf(root / "in" / f"{name}.wav", tone(seconds, SR, seed=k), SR, "WAV", "FLOAT")
             for k, (name, seconds) in enumerate([("a", 2.0), ("b", 1.3)])]
    return ckpt, songs


def _cli(setup, out, *options, inputs=None) -> int:
    ckpt, songs = setup
    inputs = songs[:1] if inputs is None else inputs
    return main(["separate", *map(str, inputs), "--model", str(ckpt), "-o", str(out), "--bits", "32",
                 "--clip-mode", "none", *options])


def _stems(folder, track="a") -> dict[str, np.ndarray]:
    return {s: read_audio(folder / track / f"{s}.wav")[0].numpy() for s in SOURCES}


def _equal(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[s], b[s]) for s in SOURCES)


def test_shifts_twice_gives_identical_files(setup, tmp_path, capsys):
    """`--shifts 2` twice (the global RNG moved in between): bit-identical stems; `--seed 1` others."""
    assert _cli(setup, tmp_path / "one", "--shifts", "2") == 0
    random.random(), torch.rand(1)  # the global RNGs move between the runs
    assert _cli(setup, tmp_path / "two", "--shifts", "2") == 0
    assert _cli(setup, tmp_path / "seeded", "--shifts", "2", "--seed", "0") == 0  # 0 is the default
    assert _cli(setup, tmp_path / "other", "--shifts", "2", "--seed", "1") == 0
    one = _stems(tmp_path / "one")
    assert _equal(one, _stems(tmp_path / "two")) and _equal(one, _stems(tmp_path / "seeded"))
    assert not _equal(one, _stems(tmp_path / "other"))
    # the seed is in the provenance with shifts: the same seed skips, another one redoes the track
    capsys.readouterr()
    assert _cli(setup, tmp_path / "one", "--shifts", "2") == 0
    assert "skipped 1 already done" in capsys.readouterr().out
    assert _cli(setup, tmp_path / "one", "--shifts", "2", "--seed", "1") == 0
    assert "skipped" not in capsys.readouterr().out
    assert _equal(_stems(tmp_path / "one"), _stems(tmp_path / "other"))


def test_shifts_zero_ignores_seed(setup, tmp_path, capsys, monkeypatch):
    """Without shifts nothing is drawn and the seed changes no sample and no record: outputs made
    before the seed existed (same options digest as then) still count as done."""
    ckpt, songs = setup
    assert _cli(setup, tmp_path / "zero", "--shifts", "0") == 0
    assert _cli(setup, tmp_path / "five", "--shifts", "0", "--seed", "5") == 0
    assert _equal(_stems(tmp_path / "zero"), _stems(tmp_path / "five"))
    record = read_provenance(tmp_path / "zero" / "a" / "vocals.wav")
    assert record == read_provenance(tmp_path / "five" / "a" / "vocals.wav")
    before = {"models": [str(ckpt.resolve())], "weights": None, "shifts": 0, "overlap": 0.25, "segment": None,
              "backend": "torch", **WriteOptions(bits=32, clip_mode="none").content_key()}  # the key without seed
    assert record == json.loads(provenance(input_identity(songs[0]), before))
    capsys.readouterr()
    assert _cli(setup, tmp_path / "zero", "--shifts", "0", "--seed", "7") == 0
    assert "skipped 1 already done" in capsys.readouterr().out
    # shifts=0 draws nothing at all
    monkeypatch.setattr(random.Random, "randint", lambda *args: pytest.fail("drew a shift"))
    mix = torch.from_numpy(tone(1.0, SR))[None]
    net = SlowNet(samplerate=SR, delay=0.0, segment=0.6)
    assert torch.equal(apply_model(net, mix, shifts=0, seed=3), apply_model(net, mix, shifts=0))


def test_separator_with_shifts_is_reproducible(setup):
    """Separator.separate twice with shifts: identical (the global RNG is neither used nor touched)."""
    ckpt, _ = setup
    sep = Separator.from_checkpoint(ckpt, device="cpu", shifts=2)
    assert sep.seed == 0 and "seed=0" in repr(sep)
    mix = tone(1.7, SR, seed=3)
    state, torch_state = random.getstate(), torch.get_rng_state()
    first = sep.separate(mix, SR, layout="channels_first")
    assert random.getstate() == state and torch.equal(torch.get_rng_state(), torch_state)
    random.seed(99)
    second = sep.separate(mix, SR, layout="channels_first")
    assert all(torch.equal(first[s], second[s]) for s in SOURCES)
    other = Separator.from_checkpoint(ckpt, device="cpu", shifts=2, seed=1).separate(mix, SR, layout="channels_first")
    assert not all(torch.equal(first[s], other[s]) for s in SOURCES)
    again = Separator(sep.net, device="cpu", shifts=2, seed=1).separate(mix, SR, layout="channels_first")
    assert all(torch.equal(other[s], again[s]) for s in SOURCES)


def test_stems_of_a_file_do_not_depend_on_the_batch(setup, tmp_path):
    """Two files separated together, in either order: the same stems per file, and those of the file
    alone (up to float rounding: other chunks share its network calls; another seed is 100x further)."""
    ckpt, songs = setup
    a, b = songs
    for name, inputs in [("ab", [a, b]), ("ba", [b, a]), ("a", [a]), ("b", [b])]:
        separate_files(inputs, tmp_path / name, models=ckpt, shifts=2, batch_size=16, device="cpu", bits=32,
                       clip_mode="none")
    for track in ("a", "b"):
        together = _stems(tmp_path / "ab", track)
        assert _equal(together, _stems(tmp_path / "ba", track)), track
        alone = _stems(tmp_path / track, track)
        assert max(np.abs(together[s] - alone[s]).max() for s in SOURCES) <= 1e-6, track
    # the same at the chunking level: every mix gets its seed's offsets, whatever the other mixes
    torch.manual_seed(0)
    net = SlowNet(samplerate=SR, delay=0.0, segment=0.6)
    x, y = torch.from_numpy(tone(2.0, SR, seed=4)), torch.from_numpy(tone(1.1, SR, seed=5))
    xy = apply_model_many(net, [x, y], shifts=3, batch_size=7, seed=2)
    yx = apply_model_many(net, [y, x], shifts=3, batch_size=7, seed=2)
    assert torch.equal(xy[0], yx[1]) and torch.equal(xy[1], yx[0])
    alone = apply_model_many(net, [x], shifts=3, batch_size=7, seed=2)[0]
    other_seed = apply_model_many(net, [x], shifts=3, batch_size=7, seed=3)[0]
    assert (xy[0] - alone).abs().max() <= 1e-6 < 1e-4 <= (other_seed - alone).abs().max()


def test_seed_is_validated(setup, tmp_path, capsys):
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(BadArgumentError, match="--seed"):
            Chunking(seed=bad)
    assert _cli(setup, tmp_path / "bad", "--shifts", "2", "--seed", "-3") == 2
    err = capsys.readouterr().err
    assert "--seed" in err and err.count("\n") == 1
